"""Writing files so that a crash leaves either the old content or the new, never a mix."""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, mode: int = 0o600, durable: bool = True) -> Iterator[IO[bytes]]:
    """A file that replaces ``path`` when the block ends without an error: written under a
    temporary name in the same directory, fsynced, renamed over ``path``, and the directory
    fsynced; on an error the temporary file is removed and ``path`` is untouched.

    ``durable=False`` skips the fsyncs, for files that are re-created after a crash anyway:
    readers still never see a half-written file, but a power cut may leave the old one.
    """
    fd, temporary = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


_temporaries = itertools.count()


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file (0600) beside ``path``, opened for writing, and its name: what
    ``tempfile.mkstemp`` makes, without importing ``tempfile`` and ``random`` (~1 ms of every
    deployment). The name (process, thread, a counter) is this call's alone among running
    processes; one left by a dead process of the same id is skipped (``O_EXCL``)."""
    while True:
        temporary = str(
            path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}-"
            f"{next(_temporaries)}.tmp"
        )
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(temporary, flags, 0o600), temporary
        except FileExistsError:
            continue


def write_bytes(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see ``replacing``)."""
    with replacing(path, mode, durable) as stream:
        stream.write(data)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and make sure it is 0700, even if it existed; parents it creates are
    0700 too (``mkdir(parents=True)`` would make them as the umask says, 0777 under 000)."""
    if not path.parent.is_dir():
        make_private_dir(path.parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():  # a file in the way: say so, not "File exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    os.chmod(path, 0o700)
    return path
