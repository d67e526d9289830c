"""Which child processes may still hold a copy of a file descriptor we have closed.

A child forked by one thread gets a copy of every descriptor the process has open at that
moment, and keeps it until it execs (``O_CLOEXEC`` acts only then). When another thread
closes its end of a FIFO in that window, the FIFO still has a writer: an Interface that
opens ``stream-next`` again gets through at once, then reads an end of file when the child
execs, and takes it for "no more streams". Streaming therefore waits, before it lets the
Interface reach its next ``stream-next``, until every start that began while that pipe was
open has finished (``subprocess.Popen`` returns only after the exec).

Only starts made through ``starting()`` are known here: an in-process driver that forks on
its own while a ``Download`` streams to an Interface is not covered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_WAIT_SLICE_SECONDS = 0.05  # how often a wait re-checks whether it should give up

_changed = threading.Condition()
_started = 0  # starts numbered so far
_in_flight: set[int] = set()  # numbers of the starts not finished yet


@contextmanager
def starting() -> Iterator[None]:
    """Wrap the start of a child process (fork to exec)."""
    global _started
    with _changed:
        number = _started
        _started += 1
        _in_flight.add(number)
    try:
        yield
    finally:
        with _changed:
            _in_flight.discard(number)
            _changed.notify_all()


def mark() -> int:
    """A point in time: starts before it may hold copies of what was open until now."""
    with _changed:
        return _started


def wait_for_starts_before(point: int, check: Callable[[], None]) -> None:
    """Wait until every start made before ``point`` has finished; ``check`` may raise to
    give up (it is called every ``_WAIT_SLICE_SECONDS`` while waiting)."""
    with _changed:
        while any(number < point for number in _in_flight):
            _changed.wait(_WAIT_SLICE_SECONDS)
            check()
