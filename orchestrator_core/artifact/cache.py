"""The Artifacts cache (SPEC 8, ``ArtifactsCache``).

An entry is filled by the first reader as it reads: the bytes it takes from the source are
also written to a temporary file, which becomes the entry (fsync, rename) only when the
source has been read to its very end and the reader confirms that everything it read was
verified (``CacheStream.confirm_verified``). So a half-read, failed or tampered download
never becomes an entry.

Requesters of an Artifact that is being filled wait for the fill to end, then read the
entry (or, if the fill failed, one of them fills it again from the source). ``MaxSizeBytes``
is kept by evicting the least recently used entries first. When an Artifact cannot be
cached (too large, disk full, a write error), the cache steps aside and the reader goes on
streaming from the source, unless the reader said the copy is required
(``CacheStream.require_cached``: the files-tree path), in which case it fails.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

from orchestrator_core.artifact.layers import CHUNK, as_bytes_view, readinto_from
from orchestrator_core.atomic import fsync_dir
from orchestrator_core.config import CacheConfig
from orchestrator_core.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("mender_orchestrator.artifact")

ENTRY_SUFFIX = ".mender"
PARTIAL_SUFFIX = ".partial"

Opener = Callable[[], tuple[BinaryIO, str]]


def entry_file_name(name: str) -> str:
    """The cache file of an Artifact name: readable when it can be, never a path."""
    quoted = quote(name, safe="")
    if not quoted or quoted.startswith(".") or len(quoted) > 200:
        return "sha256-" + hashlib.sha256(name.encode()).hexdigest() + ENTRY_SUFFIX
    return quoted + ENTRY_SUFFIX


def _known_size(stream: BinaryIO) -> int | None:
    try:
        status = os.fstat(stream.fileno())
        if stat.S_ISREG(status.st_mode):
            return status.st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        pass
    length = getattr(getattr(stream, "raw", None), "content_length", None)
    return length if isinstance(length, int) else None


def _open_entry(entry: Path) -> io.FileIO | None:
    """The cache entry opened for reading, or ``None`` (a miss) when there is none or it is
    not a regular file: a FIFO planted under an Artifact's name would block a plain open
    forever, and a device or directory is no cached copy."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ArtifactsCache: cannot open %s (%s); not using it", entry, exc.strerror)
        return None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        log.warning(
            "ArtifactsCache: %s is a %s, not a regular file; not using it",
            entry,
            _file_kind(mode),
        )
        return None
    return io.FileIO(fd, "rb")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"))
    for test, kind in kinds:
        if test(mode):
            return kind
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


class CacheStream(io.BufferedReader):
    """What ``ArtifactsCache.open`` hands out: the Artifact's bytes, from the entry or the
    source (then filling the entry as they are read)."""

    def __init__(self, raw: io.RawIOBase, fill: _Fill | None, cached_path: Path | None) -> None:
        super().__init__(raw, CHUNK)
        self._fill = fill
        self.cached_path = cached_path  # set when this is a served entry

    def require_cached(self) -> None:
        """From now on, failing to cache the Artifact is an error instead of a warning."""
        if self._fill is not None:
            self._fill.require()

    def confirm_verified(self) -> None:
        """The reader read to the end and verified every byte: keep the entry."""
        if self._fill is not None:
            self._fill.commit()


class _Fill(io.RawIOBase):
    """Reads the source and copies every byte into the entry's temporary file."""

    def __init__(self, cache: ArtifactsCache, name: str, source: BinaryIO) -> None:
        super().__init__()
        self._cache = cache
        self._name = name
        self._source = source
        self._size_hint = _known_size(source)
        self._written = 0
        self._required = False
        self._failure: str | None = None
        self._ended = False
        self._released = False
        entry = cache.path / entry_file_name(name)
        self._entry = entry
        self._temporary: io.BufferedWriter | None = None
        import tempfile  # here: only a deployment with the cache enabled writes an entry

        try:
            fd, path = tempfile.mkstemp(
                prefix=f".{entry.name}.", suffix=PARTIAL_SUFFIX, dir=cache.path
            )
            self._temporary_path = Path(path)
            self._temporary = os.fdopen(fd, "wb")
        except OSError as exc:
            self._give_up(f"cannot create a file in {cache.path} ({exc.strerror or exc})")

    def readable(self) -> bool:
        return True

    def require(self) -> None:
        self._required = True
        if self._failure is not None:
            raise ArtifactError(self._failure)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = as_bytes_view(buffer)
        if self._written == 0 and self._size_hint is not None and self._temporary is not None:
            self._reserve(self._size_hint)
        count = readinto_from(self._source, view)
        if count:
            self._store(view[:count])
        else:
            self._ended = True
        return count

    def _reserve(self, total: int) -> None:
        if not self._cache.make_room(self._name, total):
            self._give_up(
                f"it needs {total} bytes and ArtifactsCache.MaxSizeBytes is "
                f"{self._cache.max_size} (even with every other entry evicted)"
            )

    def _store(self, data: memoryview) -> None:
        if self._temporary is None:
            return
        total = self._written + len(data)
        if self._size_hint is None or total > self._size_hint:
            self._reserve(total)
            if self._temporary is None:
                return
        try:
            self._temporary.write(data)
        except OSError as exc:
            self._give_up(f"writing to {self._cache.path} failed ({exc.strerror or exc})")
            return
        self._written = total

    def commit(self) -> None:
        if not self._ended:
            raise RuntimeError("a cache entry is only stored once its source was read to the end")
        if self._temporary is None:
            return
        try:
            self._temporary.flush()
            os.fsync(self._temporary.fileno())
            self._temporary.close()
            self._temporary = None
            os.replace(self._temporary_path, self._entry)
            fsync_dir(self._cache.path)
        except OSError as exc:
            self._temporary_path.unlink(missing_ok=True)  # closed already: _discard skips it
            self._give_up(f"storing {self._entry} failed ({exc.strerror or exc})")
            return
        log.info("ArtifactsCache: stored %s (%d bytes)", self._name, self._written)
        self._cache.verified.add(self._name)
        self._release()

    def _release(self) -> None:
        # once only: after it, another thread may already be filling the same name anew
        if not self._released:
            self._released = True
            self._cache.release(self._name)

    def _discard(self) -> None:
        if self._temporary is not None:
            try:
                self._temporary.close()
            except OSError:
                pass  # a write that failed for lack of space can fail again at close
            self._temporary = None
            self._temporary_path.unlink(missing_ok=True)
        self._release()

    def _give_up(self, why: str) -> None:
        self._discard()
        self._failure = f"ArtifactsCache: Artifact {self._name} cannot be cached: {why}"
        if self._required:
            raise ArtifactError(self._failure)
        log.warning("%s; reading on from the source without the cache", self._failure)

    def close(self) -> None:
        if not self.closed:
            self._discard()  # unless committed: the reader stopped early, or failed
            self._source.close()
        super().close()


class ArtifactsCache:
    """The cache directory of one orchestrator process, shared by its threads."""

    def __init__(self, settings: CacheConfig) -> None:
        self.enabled = settings.enabled
        self.path = settings.path
        self.max_size = settings.max_size_bytes
        if self.enabled and not self.path.is_dir():
            raise ConfigError(
                f"ArtifactsCache.Path {self.path} does not exist or is not a directory; "
                f"create it, or set ArtifactsCache.Enabled to false"
            )
        self._condition = threading.Condition()
        self._filling: dict[str, int] = {}  # name -> bytes claimed so far
        self._fillers: dict[str, int] = {}  # name -> thread filling it
        # entries read whole and verified by this process (or filled by it): not checked again
        self.verified: set[str] = set()

    def open(self, name: str, opener: Opener) -> tuple[BinaryIO, str]:
        """The Artifact ``name``: the cached copy, or ``opener()``'s stream filling the cache.

        Waits while another thread fills the same entry. Each requester must read from its
        own thread (a thread waiting for its own fill would wait forever: refused).
        """
        if not self.enabled:
            return opener()
        entry = self.path / entry_file_name(name)
        with self._condition:
            if self._fillers.get(name) == threading.get_ident():
                raise RuntimeError(f"this thread is already filling the cache entry of {name}")
            while name in self._filling:
                self._condition.wait()
            raw = _open_entry(entry)
            if raw is None:
                self._filling[name] = 0
                self._fillers[name] = threading.get_ident()
            else:
                try:
                    os.utime(entry)  # used now: evicted last
                except OSError:
                    pass
                log.info("ArtifactsCache: using the cached copy of %s", name)
                return CacheStream(raw, None, entry), f"{entry} (cached copy of {name})"
        try:
            source, description = opener()
        except BaseException:
            self.release(name)
            raise
        fill = _Fill(self, name, source)
        return CacheStream(fill, fill, None), description

    def release(self, name: str) -> None:
        """The fill of ``name`` is over (stored or given up): wake whoever waits for it."""
        with self._condition:
            self._filling.pop(name, None)
            self._fillers.pop(name, None)
            self._condition.notify_all()

    def invalidate(self, name: str) -> None:
        """Drop the entry of ``name`` (e.g. it is not the Artifact the plan was made with)."""
        if self.enabled:
            self.verified.discard(name)
            (self.path / entry_file_name(name)).unlink(missing_ok=True)

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        with os.scandir(self.path) as listing:
            for item in listing:
                entry = item.name.endswith(ENTRY_SUFFIX) and not item.name.startswith(".")
                if entry and not item.is_dir(follow_symlinks=False):
                    try:
                        status = item.stat()
                    except FileNotFoundError:
                        continue
                    found.append((status.st_mtime, status.st_size, Path(item.path)))
        return sorted(found)

    def make_room(self, name: str, total: int) -> bool:
        """Claim ``total`` bytes for the fill of ``name``, evicting the oldest entries as
        needed; False when even an empty cache could not hold it."""
        with self._condition:
            self._filling[name] = total
            if self.max_size == 0:
                return True
            claimed = sum(self._filling.values())
            if claimed > self.max_size:
                return False  # hopeless: evict nothing for it
            entries = self._entries()
            used = sum(size for _, size, _ in entries) + claimed
            for _, size, path in entries:
                if used <= self.max_size:
                    break
                path.unlink(missing_ok=True)
                used -= size
                log.info("ArtifactsCache: evicted %s to make room for %s", path.name, name)
            return used <= self.max_size

    def prune(self, used_names: Iterable[str]) -> list[str]:
        """Delete the entries of Artifacts not in ``used_names``, and leftovers of fills that
        a crash interrupted; the file names removed."""
        if not self.enabled:
            return []
        keep = {entry_file_name(name) for name in used_names}
        removed = []
        with self._condition:
            busy = {entry_file_name(name) for name in self._filling}
            with os.scandir(self.path) as listing:
                for item in listing:
                    stale = item.name.endswith(ENTRY_SUFFIX) and not item.name.startswith(".")
                    stale = stale and item.name not in keep
                    leftover = item.name.startswith(".") and item.name.endswith(PARTIAL_SUFFIX)
                    leftover = leftover and not any(item.name.startswith(f".{b}.") for b in busy)
                    if (stale or leftover) and not item.is_dir(follow_symlinks=False):
                        Path(item.path).unlink(missing_ok=True)
                        removed.append(item.name)
        for name in removed:
            log.info("ArtifactsCache: removed %s, not used by this deployment", name)
        return removed
