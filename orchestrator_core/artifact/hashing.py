"""sha256 of a payload file on a second thread, while the reader decompresses the next chunk.

Decompressing and hashing each take one core (both release the GIL); one after the other they
add up, side by side the slower one sets the pace, as in Go's reader. The hash is handed a
copy of each chunk (the caller's buffer is reused), or the chunk itself when the caller lends
it (two buffers in turn: a 256 MiB random gzip verify 19% faster without the copy); at most
one chunk waits for it, so memory stays bounded. The digest is final only once every chunk
has been hashed: ``hexdigest`` waits for that.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# below this, handing a chunk to the other thread costs more than hashing it here
ASIDE_MIN = 64 << 10

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_thread() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # imported here: an uncompressed payload is hashed in line, and the import is
            # ~1.5 ms of the fixed cost of every install
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifact-sha256")
        return _pool


class Sha256:
    """``hashlib.sha256``, hashing on the other thread when ``aside`` is true."""

    def __init__(self, *, aside: bool) -> None:
        self._hash = hashlib.sha256()
        self._aside = aside
        self._last: Future[None] | None = None

    def update(self, data: memoryview, *, lent: bool = False) -> None:
        """Hash ``data``. ``lent``: the caller leaves ``data`` untouched until its next call
        after this one (it alternates two buffers), so the other thread reads it uncopied."""
        if not self._aside or len(data) < ASIDE_MIN:
            self._wait()
            self._hash.update(data)
            return
        chunk = data if lent else bytes(data)
        self._wait()  # chunks are hashed in order: one at a time
        self._last = _hash_thread().submit(self._hash.update, chunk)

    def hexdigest(self) -> str:
        self._wait()
        return self._hash.hexdigest()

    def _wait(self) -> None:
        if self._last is not None:
            self._last.result()
            self._last = None
