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
from typing import Any

from orchestrator_core import parse_cache
from orchestrator_core.errors import ConfigError

MAX_YAML_BYTES = 4 * 1024 * 1024  # far beyond any real Topology or Manifest
EXCERPT_CHARS = 80  # of a value shown in a message
# libyaml's own limit since the one PyYAML 6.0.4 bundles; kept here too, because the libyaml of
# older PyYAML releases (Debian 12's 6.0, Yocto scarthgap's 6.0.1) has none and spends more
# than 30 s on a file of 100000 '['
MAX_NESTING = 1000


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
    """``text`` parsed as one YAML mapping (``source`` and ``what`` name it in messages); a
    text parsed, and found valid, before comes from the parse cache, without loading PyYAML.
    The caller calls ``parse_cache.keep`` with the result once it has validated it."""
    cached = parse_cache.lookup(text)
    if cached is not None:
        return cached
    from orchestrator_core import yaml_loader

    data = yaml_loader.parse(text, source, what)
    parse_cache.remember(text, data)  # stored by the caller's ``parse_cache.keep(data)``
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
