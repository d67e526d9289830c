"""One verified copy of an Artifact's payload per deployment, linked into every ``files/``.

A Component whose Interface does not stream the payload gets its files in ``files/`` before
``ArtifactInstall``. When many Components take the same Artifact that way, reading, verifying
and writing it once per Component multiplies the I/O by their number; instead the first one
stores it, verified, in ``<deployment dir>.shared/payload-<manifest digest>/``, and each
Component's ``files/`` gets hard links to those files (a copy where the file system refuses a
link). The copy appears under its name only once it is complete, so a ``resume`` may reuse it.

*Decision:* the shared files are read-only (0400): a file an Interface modified in place would
change it for every Component, so an Interface that needs to change a payload file copies it
first (to ``tmp/``); replacing or removing its own ``files/`` entries is fine.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import Protocol

from orchestrator_core import atomic
from orchestrator_core.errors import ArtifactError

READ_ONLY = 0o400
# link(2) errors meaning "no hard link here", not "something is wrong": a copy will do
_NO_LINK = (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP)


class Storable(Protocol):
    """A payload that stores its files, verified, into a directory (``ArtifactPayload``)."""

    def save_to(self, directory: Path) -> list[Path]: ...


class SharedPayloads:
    """The payload copies of one deployment, under ``shared`` (``filetree.shared_copies``)."""

    def __init__(self, shared: Path) -> None:
        self._shared = shared
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def store(self, feed: Storable, digest: str, files: Path) -> None:
        """Fill ``files`` with the payload of the Artifact whose manifest digest is ``digest``;
        ``feed`` is read only by the first Component to need that Artifact's copy."""
        copy = self._copy(feed, digest)
        try:
            _link_all(copy, files)
        except OSError as exc:
            raise ArtifactError(
                f"cannot store the payload files in {files}: {exc.strerror or exc}"
            ) from exc

    def _lock(self, digest: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(digest, threading.Lock())

    def _copy(self, feed: Storable, digest: str) -> Path:
        copy = self._shared / f"payload-{digest}"
        # the Components of a group download at once: one reads, the others wait for it
        with self._lock(digest):
            if copy.is_dir():
                return copy
            atomic.make_private_dir(self._shared)
            import tempfile  # here: a Download that streams never stores a copy (~1 ms)

            partial = Path(tempfile.mkdtemp(prefix=".payload-", dir=self._shared))
            try:
                for path in feed.save_to(partial):  # verified, each file synced
                    os.chmod(path, READ_ONLY)
                # not synced: the links hold the files' inodes whatever becomes of this name,
                # and without it a resumed deployment only reads the Artifact again
                os.rename(partial, copy)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        return copy


def _link_all(copy: Path, files: Path) -> None:
    names = sorted(os.listdir(copy))
    for name in names:
        _link(copy / name, files / name)
    if names:  # the links survive a power cut, as the files themselves do
        atomic.fsync_dir(files)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:  # stored by a Download of this Component that was interrupted
        target.unlink()
        _link(source, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        _copy_file(source, target)


def _copy_file(source: Path, target: Path) -> None:
    """Where hard links are refused (too many links, a file system without them)."""
    with source.open("rb") as data, atomic.replacing(target, READ_ONLY) as out:
        shutil.copyfileobj(data, out)
