"""Parsed YAML kept from one run to the next, so that most runs never load PyYAML.

Every command reads the Topology, and the Mender inventory script runs ``show-inventory`` on
every poll: importing PyYAML and parsing is ~8 ms of each run, for the same few bytes each time.
A successful parse is stored in ``<datastore>/parsed-yaml.json`` next to the exact text it came
from, and a later run given the same text takes the stored result instead.

Why the stored result is the one a parse would give:
- the entry is found by comparing the whole text (no hash that could collide);
- parsing is a function of the text alone, and of the code that parses: PyYAML and
  ``orchestrator_core.yaml_loader``. The file records the size and modification time of both
  (and ``FORMAT``); when either differs (an upgrade, an edit), every entry is ignored;
- only results that JSON holds exactly are stored: mappings with string keys, lists, strings,
  ints, finite floats, booleans and nulls. Anything else (a date, a set, binary, an int key)
  is parsed anew every time;
- failures are never stored: a file with an error is parsed, and reported, every time, with
  the same message as without the cache; nor is a parse stored before the file it came from
  has passed its own validation (``keep``): a file refused leaves the datastore as it was.

The file is private (0600 in the private datastore), replaced atomically (temporary name,
rename), and only ever a help: a missing, unreadable, damaged or foreign file counts as a miss,
so it is not fsynced (a power cut may leave the previous file, or none: the next run parses).
A datastore that cannot be written (a read-only file system, a user other than its owner) is
simply not written. The file holds at most ``MAX_ENTRIES`` texts, the newest first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

FILE_NAME = "parsed-yaml.json"
FORMAT = 1
MAX_ENTRIES = 8  # the Topology, its components file, and the last few Manifests
MAX_TEXT_CHARS = 1 << 20  # a bigger file is parsed every time rather than copied here

_directory: Path | None = None
_may_create = False
# parses not stored yet, by the id of the result handed to the caller: that result, its text
# and a copy of it (the result is held, so its id cannot pass to another object meanwhile)
_pending: dict[int, tuple[dict[str, Any], str, Any]] = {}
_parser_key: list[Any] | None = None


def use(directory: Path | None, *, may_create: bool = False) -> None:
    """Keep the cache in ``directory`` (the datastore), or nowhere (``None``: the default,
    for a program embedding the loaders). ``may_create``: whether the file may be made when
    it is not there yet (the command line allows it once a deployment has made the journal:
    a query on a fresh device creates nothing but the lock); else an existing one is only
    replaced."""
    global _directory, _may_create
    _directory = directory
    _may_create = may_create
    _pending.clear()


def _parser_identity() -> list[int] | None:
    """Size and modification time of the code that parses, or ``None`` when PyYAML is not
    found (the parse then fails as it would without the cache)."""
    import importlib.util

    spec = importlib.util.find_spec("yaml")
    if spec is None or spec.origin is None:
        return None
    identity: list[int] = []
    for path in (spec.origin, str(Path(__file__).with_name("yaml_loader.py"))):
        try:
            status = os.stat(path)
        except OSError:
            return None
        identity += [status.st_size, status.st_mtime_ns]
    return identity


def _key() -> list[Any] | None:
    """What an entry must have been stored under to be used; looked up once per process."""
    global _parser_key
    if _parser_key is None:
        identity = _parser_identity()
        if identity is None:
            return None
        _parser_key = [FORMAT, *identity]
    return _parser_key


def _entries(key: list[Any]) -> list[list[Any]]:
    """The stored ``[text, result]`` pairs made by the same parser, newest first."""
    if _directory is None:
        return []
    try:
        stored = json.loads((_directory / FILE_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(stored, dict) or stored.get("key") != key:
        return []
    entries = stored.get("entries")
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)]


def lookup(text: str) -> dict[str, Any] | None:
    """The stored result of parsing ``text``, a new copy the caller may change; ``None`` when
    there is none."""
    if _directory is None or len(text) > MAX_TEXT_CHARS:
        return None
    key = _key()
    if key is None:
        return None
    for stored_text, result in _entries(key):
        if stored_text == text and isinstance(result, dict):
            return result
    return None


def exactly_json(value: Any) -> bool:
    """Whether ``value`` comes back from a JSON round trip equal and of the same types."""
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(exactly_json(item) for item in value)
    if kind is dict:
        return all(type(k) is str and exactly_json(v) for k, v in value.items())
    return False


def remember(text: str, result: dict[str, Any]) -> None:
    """Note ``result`` as the parse of ``text``, to be stored by ``keep`` once the caller
    found it valid (a file refused leaves the datastore as it was)."""
    if _directory is None or len(text) > MAX_TEXT_CHARS:
        return
    try:
        if exactly_json(result):
            # a copy, taken now: the caller may change ``result``
            _pending[id(result)] = (result, text, json.loads(json.dumps(result)))
    except (ValueError, RecursionError):  # nested deeper than Python's stack
        pass


def keep(*results: dict[str, Any]) -> None:
    """Store the parses ``remember`` noted for ``results`` (the objects it was given);
    best effort."""
    found = [
        (text, copy)
        for held, text, copy in (_pending.pop(id(r), (None, "", None)) for r in results)
        if held is not None
    ]
    if not found or _directory is None:
        return
    key = _key()
    if key is None or not (_may_create or (_directory / FILE_NAME).exists()):
        return
    texts = {text for text, _ in found}
    entries: list[Any] = [[text, result] for text, result in found]
    entries += [e for e in _entries(key) if e[0] not in texts][: MAX_ENTRIES - len(entries)]
    try:
        data = json.dumps({"key": key, "entries": entries}, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return
    _replace(_directory / FILE_NAME, data)


def _replace(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` under a temporary name (this process's: no other
    living process has its id) then a rename, so readers see the old file or the new one.
    Made here, not with ``atomic.replacing``: ``tempfile`` would be ~1 ms of a poll."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with memoryview(data) as left:
                while left:
                    left = left[os.write(fd, left) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:  # the next run parses again
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
