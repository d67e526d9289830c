"""Writing files so that a crash leaves either the old content or the new, never a mix."""

from __future__ import annotations

import errno
import os
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
    import tempfile  # not at the top: readers of the Artifact package never write

    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
