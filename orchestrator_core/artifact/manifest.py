"""The ``manifest`` (and ``manifest-augment``) of an Artifact: a checksum for every part.

Lines are ``sha256sum`` style, ``<64 hex digits>  <path>``. The paths that may appear are
``version``, ``header.tar[.gz|.xz|.zst]`` (``header-augment.tar...`` in the augment
manifest) and ``data/0000/<file name>``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from orchestrator_core.artifact.layers import COMPRESSION_SUFFIXES, Fail
from orchestrator_core.filetree import entry_name_problem

_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+\*?(\S+)")
DATA_PREFIX = "data/0000/"


class Manifest(NamedTuple):
    what: str  # "manifest" or "manifest-augment", for messages
    entries: dict[str, str]  # path -> lower-case sha256 hex

    @property
    def data_files(self) -> dict[str, str]:
        """Payload file name -> sha256, for ``data/0000/<name>`` entries."""
        return {
            path[len(DATA_PREFIX) :]: digest
            for path, digest in self.entries.items()
            if path.startswith(DATA_PREFIX)
        }


def parse_manifest(data: bytes, what: str, fail: Fail) -> Manifest:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{what} is not UTF-8 text")
    entries: dict[str, str] = {}
    header_name = "header-augment.tar" if what == "manifest-augment" else "header.tar"
    allowed = {"version"} if what == "manifest" else set()
    allowed |= {header_name + suffix for suffix in COMPRESSION_SUFFIXES}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip())
        if match is None:
            fail(f"{what} line {number} is {line[:100]!r}; expected '<sha256 in hex>  <path>'")
        digest, path = match.group(1).lower(), match.group(2)
        if path in entries:
            fail(f"{what} lists {path!r} twice")
        if path.startswith("data/") and not path.startswith(DATA_PREFIX):
            fail(f"{what} lists {path!r}: only one payload (data/0000/) is supported")
        if path.startswith(DATA_PREFIX):
            check_file_name(path[len(DATA_PREFIX) :], f"{what} entry {path!r}", fail)
        elif path not in allowed:
            fail(f"{what} lists {path!r}, which is not a part of a Mender Artifact")
        entries[path] = digest
    return Manifest(what, entries)


def check_file_name(name: str, what: str, fail: Fail) -> None:
    """Payload files and state scripts are plain names: payload files become
    ``files/<name>`` and ``streams/<name>``, so the File API's rule applies to both."""
    problem = entry_name_problem(name)
    if problem is not None:
        fail(f"{what}: {name!r} is not a plain file name (it {problem})")
