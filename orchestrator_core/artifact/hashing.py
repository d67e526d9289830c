"""sha256 of a payload file on a second thread, while the reader decompresses the next chunk.

Decompressing and hashing each take one core (both release the GIL); one after the other they
add up, side by side the slower one sets the pace, as in Go's reader. The hash is handed a
copy of each chunk (the caller's buffer is reused), or the chunk itself when the caller lends
it (buffers in turn: a 256 MiB random gzip verify 19% faster without the copy). Up to
``IN_FLIGHT`` chunks wait for it, so memory stays bounded; with one, the hash thread idled
between finishing a chunk and being handed the next (a 256 MiB random gzip inspect took
171 ms instead of 160). The digest is final only once every chunk has been hashed:
``hexdigest`` waits for that.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# below this, handing a chunk to the other thread costs more than hashing it here
ASIDE_MIN = 64 << 10
IN_FLIGHT = 2  # chunks handed to the hash thread and not hashed yet, at most

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


def start_thread_while_clean() -> None:
    """Start the hash thread now, before this process first runs ISA-L.

    ISA-L's assembly returns with the upper halves of the vector registers still in use (it
    does not end with ``VZEROUPPER``), and a new thread starts with a copy of its creator's
    registers. On a thread in that state, OpenSSL's SHA-NI code (older SSE encoding) ran a
    third slower here: 0.200 s instead of 0.149 s for 256 MiB, a random gzip payload's
    whole verify. A thread started before that keeps registers of its own, and the hash
    thread never runs ISA-L itself.
    """
    _hash_thread().submit(_nothing).result()


def _nothing() -> None:
    pass


class Sha256:
    """``hashlib.sha256``, hashing on the other thread when ``aside`` is true or the chunk
    is lent: a lent chunk costs no copy, so even reading an uncompressed file then overlaps
    hashing it (a 256 MiB inspect 152 -> 140 ms; streaming, which copies, gained nothing)."""

    def __init__(self, *, aside: bool) -> None:
        self._hash = hashlib.sha256()
        self.aside = aside
        self._in_flight: deque[Future[None]] = deque()

    def update(self, data: memoryview, *, lent: bool = False) -> None:
        """Hash ``data``. ``lent``: the caller leaves ``data`` untouched until its
        ``IN_FLIGHT``-th call after this one (it turns ``IN_FLIGHT + 1`` buffers), so the
        other thread reads it uncopied."""
        if not (self.aside or lent) or len(data) < ASIDE_MIN:
            self._wait(0)
            self._hash.update(data)
            return
        chunk = data if lent else bytes(data)
        self._wait(IN_FLIGHT - 1)  # the one thread hashes the chunks in the order given
        self._in_flight.append(_hash_thread().submit(self._hash.update, chunk))

    def hexdigest(self) -> str:
        self._wait(0)
        return self._hash.hexdigest()

    def _wait(self, left: int) -> None:
        """Until at most ``left`` chunks are still to be hashed."""
        while len(self._in_flight) > left:
            self._in_flight.popleft().result()
