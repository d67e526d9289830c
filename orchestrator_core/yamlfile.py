"""Strict YAML reading shared by the Topology and the Manifest.

PyYAML's safe loader silently keeps the last of two equal keys; a Topology or Manifest with a
duplicated key is almost always a merge mistake, so it is refused here, with its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator_core.errors import ConfigError

MAX_YAML_BYTES = 4 * 1024 * 1024  # far beyond any real Topology or Manifest


# libyaml's parser, when PyYAML was built with it, reads a Topology of hundreds of Components
# ten times faster; both parsers give the same nodes, marks and nesting limit errors
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
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
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{what} {source}: invalid YAML{where}: {exc.problem or exc.context}"
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
