"""PyYAML, set up for the Topology and the Manifest: duplicate keys, anchors, aliases and
non-scalar keys refused (why: ``orchestrator_core.yamlfile``).

Imported only when a file must really be parsed: importing PyYAML is ~8 ms (3 of them one
regular expression ``yaml.reader`` compiles), and a file read before is answered by
``orchestrator_core.parse_cache`` without it.
"""

from __future__ import annotations

from typing import Any, cast

import yaml

from orchestrator_core.errors import ConfigError
from orchestrator_core.yamlfile import MAX_NESTING, excerpt, excerpt_text

# libyaml's parser, when PyYAML was built with it, reads a Topology of hundreds of Components
# ten times faster; both parsers give the same nodes, marks and nesting limit errors
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not a {kind}", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {excerpt(key)}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    try:
        return int(loader.construct_yaml_int(node))
    except ValueError:
        # Python refuses to convert a number of more than 4300 digits
        raise yaml.constructor.ConstructorError(
            None, None, f"a number of {len(node.value)} characters is too long", node.start_mark
        ) from None


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _refuse_anchors(text: str) -> None:
    """Raise at the first anchor (``&name``) or alias (``*name``), or below the deepest level
    allowed, before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "exceeded maximum nesting depth",
                    cast("yaml.Mark", event.start_mark),
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            used = "aliases (*" if isinstance(event, yaml.AliasEvent) else "anchors (&"
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{used}{excerpt_text(event.anchor)}) are not allowed",
                cast("yaml.Mark", event.start_mark),
            )


def parse(text: str, source: str, what: str) -> dict[str, Any]:
    try:
        _refuse_anchors(text)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{what} {source}: invalid YAML{where}: {excerpt_text(exc.problem or exc.context, 200)}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{what} {source}: YAML nested too deeply; a {what} is a few levels deep"
        ) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"{what} {source}: expected a YAML mapping at the top level, found {found}"
        )
    return data
