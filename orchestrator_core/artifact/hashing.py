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
import os
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

# below this, handing a chunk to the other thread costs more than hashing it here
ASIDE_MIN = 64 << 10
IN_FLIGHT = 2  # chunks handed to the hash thread and not hashed yet, at most
THREAD_NAME = "artifact-sha256"


class _Chunk:
    """A chunk handed to the hash thread; ``wait`` returns once it is hashed (or re-raises
    what hashing it raised)."""

    __slots__ = ("_data", "_done", "_error", "_update")

    def __init__(
        self, update: Callable[[bytes | memoryview], None], data: bytes | memoryview
    ) -> None:
        self._update = update
        self._data = data
        self._done = threading.Lock()
        self._done.acquire()
        self._error: BaseException | None = None

    def hash(self) -> None:
        try:
            self._update(self._data)
        except BaseException as exc:  # handed to the waiter, who raises it
            self._error = exc
        finally:
            self._done.release()

    def wait(self) -> None:
        self._done.acquire()
        if self._error is not None:
            raise self._error


# A thread and a queue, not concurrent.futures: one worker needs none of its machinery, and
# its import (about 1 ms under -X importtime) would join the fixed cost of every install of a
# compressed Artifact, where this thread is started.
_chunks: SimpleQueue[_Chunk] | None = None
_start_lock = threading.Lock()


def _hash_thread() -> SimpleQueue[_Chunk]:
    """The queue of the one hash thread, started on first use. A daemon: it holds nothing
    that needs finishing, as every digest waits for its own chunks."""
    global _chunks
    with _start_lock:
        if _chunks is None:
            chunks: SimpleQueue[_Chunk] = SimpleQueue()
            threading.Thread(target=_hash_chunks, args=(chunks,), name=THREAD_NAME,
                             daemon=True).start()
            _chunks = chunks
        return _chunks


def _hash_chunks(chunks: SimpleQueue[_Chunk]) -> None:
    while True:
        chunks.get().hash()


def _forget_thread() -> None:
    """In a child made by ``fork``, which has none of its parent's threads: its first chunk
    starts a hash thread of its own instead of waiting on a queue nobody reads."""
    global _chunks, _start_lock
    _chunks = None
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_thread)


def start_thread_while_clean() -> None:
    """Start the hash thread now, before this process first runs ISA-L.

    ISA-L's assembly returns with the upper halves of the vector registers still in use (it
    does not end with ``VZEROUPPER``), and a new thread starts with a copy of its creator's
    registers. On a thread in that state, OpenSSL's SHA-NI code (older SSE encoding) ran a
    third slower here: 0.200 s instead of 0.149 s for 256 MiB, a random gzip payload's
    whole verify. A thread started before that keeps registers of its own, and the hash
    thread never runs ISA-L itself.
    """
    _hash_thread()


class Sha256:
    """``hashlib.sha256``, hashing on the other thread when ``aside`` is true (a section that
    decompresses) or the chunk is lent (the caller's buffer itself, no copy).

    Streaming lends its buffers, so even an uncompressed payload is hashed beside the writes
    to the Interface's pipe: 1 GiB streamed to ``cat`` in 0.77 s, against 0.92 s hashed in
    line; a random gzip payload of 256 MiB took 5% less CPU and time than with copies (16
    runs alternating). A payload read only to be verified (``artifact inspect``) is not lent
    when uncompressed: on the other thread SHA-256 reads each chunk from the reading core's
    cache, and with nothing else to overlap, that costs more than it saves (256 MiB hashed
    as it was read: 0.24 s there, 0.14 s in line; a 1 GiB verify 0.92 to 0.98 s against 0.79,
    the ``openssl dgst`` floor being 0.70).
    """

    def __init__(self, *, aside: bool) -> None:
        self._hash = hashlib.sha256()
        self.aside = aside
        self._in_flight: deque[_Chunk] = deque()

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
        handed = _Chunk(self._hash.update, chunk)
        self._in_flight.append(handed)
        _hash_thread().put(handed)

    def hexdigest(self) -> str:
        self._wait(0)
        return self._hash.hexdigest()

    def _wait(self, left: int) -> None:
        """Until at most ``left`` chunks are still to be hashed."""
        while len(self._in_flight) > left:
            self._in_flight.popleft().wait()
