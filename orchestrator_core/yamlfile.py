"""Strict YAML reading shared by the Topology and the Manifest.

PyYAML's safe loader silently keeps the last of two equal keys; a Topology or Manifest with a
duplicated key is almost always a merge mistake, so it is refused here, with its line. Anchors
and aliases are refused too: a few hundred bytes of nested aliases stand for gigabytes of
values, and neither file needs them. A key must be a plain scalar (a list or mapping cannot
name a Component type or a field).
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, cast

import yaml

from orchestrator_core.errors import ConfigError

MAX_YAML_BYTES = 4 * 1024 * 1024  # far beyond any real Topology or Manifest
EXCERPT_CHARS = 80  # of a value shown in a message
# libyaml's own limit since the one PyYAML 6.0.4 bundles; kept here too, because the libyaml of
# older PyYAML releases (Debian 12's 6.0, Yocto scarthgap's 6.0.1) has none and spends more
# than 30 s on a file of 100000 '['
MAX_NESTING = 1000


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


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """Parse ``path`` as one YAML mapping; ``what`` names the file's role in messages."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory; expected a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{what} {path} is larger than {MAX_YAML_BYTES} bytes; refusing to parse it"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    return parse_mapping(text, str(path), what)


def parse_mapping(text: str, source: str, what: str) -> dict[str, Any]:
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


def type_name(value: Any) -> str:
    """How messages describe a YAML value's type."""
    names = {
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing (null)",
    }
    return names.get(type(value), type(value).__name__)


def _excerpt_repr() -> reprlib.Repr:
    shortened = reprlib.Repr()
    shortened.maxlevel = 3
    shortened.maxstring = shortened.maxother = shortened.maxlong = EXCERPT_CHARS
    return shortened


_EXCERPT = _excerpt_repr()


def excerpt(value: Any) -> str:
    """``repr(value)`` cut to a short excerpt: messages never print a whole unbounded value."""
    try:
        text = _EXCERPT.repr(value)
    except ValueError:  # an int too long for Python to convert to text
        return "a number too long to show"
    return excerpt_text(text)


def excerpt_text(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, marked with '...' where it was cut."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
