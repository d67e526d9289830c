"""The streams tree of SPEC 5: feeding an Interface's ``Download`` through named pipes.

Protocol, as the Interface sees it (the Mender Update Module v3 one): read ``stream-next`` to
get one line ``streams/<name>`` (or ``streams/<name> <size>`` for ``DownloadWithFileSizes``),
read that pipe to its end, read ``stream-next`` again, and so on; an empty read of
``stream-next`` means there are no more streams.

A writer thread serves the tree. It opens each FIFO with a blocking ``open``, which returns
the moment the Interface opens the other end: a retry loop would add its pause to every
stream, and on two cores its wake-ups slowed the Interface's own start. Nothing waits on the
Interface without a bound: once the Interface has exited or been killed (at
``InterfaceTimeoutSeconds``), ``join`` opens the FIFO the writer waits on itself, which ends
that wait, and pipes are written with non-blocking writes and ``poll``. While the writer
waits for a stream, the caller's wait for the Interface process (``StreamServer.tick``)
checks whether the Interface went back to ``stream-next`` instead. So an Interface that never
opens a pipe, reads them out of order, or stops reading halfway cannot keep us past its own
exit or ``InterfaceTimeoutSeconds``.

Bytes go from the payload reader, which verifies checksums as they pass, into the pipe a
bounded chunk at a time; a reader thread per stream keeps a couple of chunks verified ahead of
the pipe, from the moment the stream is announced.

Whether the payload was consumed is decided by the Interface: if it exits without ever
opening ``stream-next``, the feed is left untouched and the engine stores the files tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core import filetree, spawns
from orchestrator_core.context import PayloadFeed, PayloadFile
from orchestrator_core.errors import ArtifactError, InterfaceError, OrchestratorError

CHUNK = 1 << 20  # bytes taken from the payload reader at a time
AHEAD = 2  # chunks read and verified ahead of the pipe (memory: CHUNK * (AHEAD + 2))
PIPE_SIZE = 1 << 20  # asked of the kernel for stream pipes: fewer wake-ups per MiB
_POLL_SECONDS = 0.1  # how often a blocked writer re-checks the Interface and the deadline
# how long an Interface may run before a writer thread waits for it to open stream-next: one
# that exits sooner (most take files/, or nothing) costs no thread
_FIRST_OPEN_GRACE = 0.001
_NEXT_FROM_SOURCE = "the next payload file from the Artifact's source"
_JOIN_GRACE_SECONDS = 1.0  # how long past the deadline a join waits for a thread to stop


Chunk = bytes | memoryview  # a memoryview is valid only until the next chunk is asked for


class Stream(NamedTuple):
    """One stream as announced on ``stream-next``; ``chunks`` yields its verified bytes."""

    name: str
    size: int | None  # None when not known in advance (the whole Artifact)
    announce_size: bool  # DownloadWithFileSizes
    chunks: Callable[[], Iterator[Chunk]]


def payload_streams(feed: PayloadFeed, *, with_sizes: bool) -> Iterator[Stream]:
    """One stream per payload file (``NeedsUnpackedArtifact: Yes``)."""
    for payload_file in feed.files():
        yield Stream(
            payload_file.name, payload_file.size, with_sizes, partial(_file_chunks, payload_file)
        )


def _file_chunks(payload_file: PayloadFile) -> Iterator[Chunk]:
    # A reader that also has readinto (io.RawIOBase, as the Artifact reader is) fills reused
    # buffers: read() would allocate and copy every chunk, which halves throughput. There
    # are enough buffers for the chunks in flight: one filling, AHEAD queued, one writing;
    # each is made when first needed (zeroing a MiB costs a page fault per page), so a small
    # payload does not pay for all of them. They are also enough to lend each chunk to the
    # Artifact reader's hash thread (``readinto_lent``), which needs IN_FLIGHT + 1.
    readinto = getattr(payload_file, "readinto_lent", None) or getattr(
        payload_file, "readinto", None
    )
    if readinto is None:
        while data := payload_file.read(CHUNK):
            yield data
        return
    buffers: list[memoryview] = []
    for turn in itertools.count():
        if turn < AHEAD + 2:
            buffers.append(memoryview(bytearray(CHUNK)))
        buffer = buffers[turn % (AHEAD + 2)]
        count = readinto(buffer)
        if not count:
            return
        yield buffer[:count]


class _ReadAhead:
    """``chunks``, produced up to ``AHEAD`` chunks in advance by a thread started at once.

    Reading and verifying the next chunk (the checksum is most of the work) then overlaps
    writing this one into the pipe, and the first chunks are ready by the time the Interface
    opens the stream. Close it when done: that stops the producer. ``check`` is called while
    waiting for a chunk, to give up (by raising) when waiting is pointless.
    """

    def __init__(self, chunks: Iterator[Chunk], check: Callable[[], None]) -> None:
        self._chunks = chunks
        self._check = check
        self._handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=AHEAD)
        self._stop = threading.Event()
        self._producer = threading.Thread(target=self._produce, name="stream-reader", daemon=True)
        self._producer.start()

    def _hand(self, kind: str, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._handoff.put((kind, item), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._hand("chunk", chunk):
                    return
            self._hand("end", None)
        except BaseException as exc:  # handed to the consumer, who raises it
            self._hand("error", exc)

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            try:
                kind, item = self._handoff.get(timeout=_POLL_SECONDS)
            except queue.Empty:  # a slow source: the Interface or the deadline may be gone
                self._check()
                continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        # a producer stuck in a read of a hung source is left behind (a daemon), not waited for
        self._producer.join(_JOIN_GRACE_SECONDS)


def whole_artifact_stream(feed: PayloadFeed, artifact_name: str) -> Iterator[Stream]:
    """A single stream carrying the complete ``.mender`` file (``NeedsUnpackedArtifact: No``)."""
    name = f"{artifact_name}.mender"
    try:
        filetree.check_entry_name(name)
    except ArtifactError:
        name = "artifact.mender"  # the Artifact name is only a hint for the Interface
    yield Stream(name, None, False, feed.whole_artifact)


class _Gone(Exception):
    """The Interface exited, or the deadline passed: stop quietly, the caller reports it."""


class StreamServer:
    """The streams tree of one ``Download`` call and the thread that serves it.

    Use as a context manager around the Interface's run: entering creates ``stream-next``
    and ``streams/``, leaving removes them. ``start`` is called once the process runs,
    ``join`` once it has exited; the outcome is then in ``started``, ``finished`` and
    ``failure``.
    """

    def __init__(self, work_dir: Path, streams: Iterator[Stream]) -> None:
        self.work_dir = work_dir
        self.stream_next = work_dir / filetree.STREAM_NEXT
        self.streams_dir = work_dir / filetree.STREAMS
        self._streams = streams
        self._writer: threading.Thread | None = None
        self._tried_first_open = False
        self._running: Callable[[], bool] = lambda: False
        self._abort: Callable[[], None] = lambda: None
        self._deadline = 0.0
        self.started = False  # the Interface opened stream-next at least once
        self.finished = False  # every stream was read and the end was announced
        self.failure: OrchestratorError | None = None
        # where the writer is, for messages: what it waits for and how far it got
        self._waiting_for = f"the Interface to open {filetree.STREAM_NEXT}"
        self._reopened_stream_next = False
        self._current: str | None = None  # the stream announced and not yet fully written
        # between the writer and the thread waiting for the Interface (tick, join):
        self._lock = threading.Lock()
        self._stopping = False  # the Interface is gone: whoever opens a FIFO now is us
        self._opening: Path | None = None  # the FIFO the writer waits in ``open`` for
        self._releaser: int | None = None  # our reading end of it, which ends that wait
        self._probe_found_no_reader = False

    def __enter__(self) -> StreamServer:
        if not filetree.take_streams(self.work_dir):  # the engine makes most ahead
            filetree.make_streams(self.work_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()
        # an Interface that never opened stream-next leaves the payload to files/
        filetree.remove_streams(self.work_dir, files_next=not self.started)

    # ------------------------------------------------------------------ driving

    def start(
        self, running: Callable[[], bool], abort: Callable[[], None], deadline: float
    ) -> None:
        """Get ready to serve the streams to the Interface process, which ``running`` watches.

        ``abort`` is called (from the writer thread) when streaming fails for a reason the
        Interface cannot fix, so that it does not wait for bytes that will never come.
        """
        self._running, self._abort, self._deadline = running, abort, deadline

    def tick(self) -> float | None:
        """Call while waiting for the Interface; returns how long to wait before calling
        again, or ``None`` when no more calls are needed.

        The writer thread is started once the Interface opens ``stream-next``, or has run for
        ``_FIRST_OPEN_GRACE`` without exiting. Many Interfaces never read the streams (they
        take ``files/``): a quick one then costs no thread, which matters with hundreds of
        Components downloading at once. Later calls look for an Interface that reads
        ``stream-next`` again where it should read the announced stream.
        """
        if self.failure is not None:
            return None
        if self._writer is None:
            try:
                fd = self._try_open(self.stream_next)
            except OSError as exc:
                self._fail(InterfaceError(f"{filetree.STREAM_NEXT} cannot be opened: {exc}"))
                return None
            if fd is None and not self._tried_first_open:
                self._tried_first_open = True
                return _FIRST_OPEN_GRACE
            self._writer = threading.Thread(
                target=self._serve, args=(fd,), name="stream-writer", daemon=True
            )
            self._writer.start()
            return _POLL_SECONDS
        if not self._writer.is_alive():
            return None
        self._probe_stream_next()
        return _POLL_SECONDS

    def join(self) -> None:
        """Wait for the writer thread, until the Interface deadline (and a grace) at most.

        The writer can be stuck reading a source that hangs (a slow HTTP server): it is then
        left behind as a daemon, and the Download fails instead of waiting with it.
        """
        if self._writer is None:
            return
        self._release_writer()
        remaining = max(0.0, self._deadline - time.monotonic())
        self._writer.join(remaining + _JOIN_GRACE_SECONDS)
        if self._releaser is not None:
            os.close(self._releaser)
            self._releaser = None
        if self._writer.is_alive():
            # the process is reaped next: the writer, if it ever wakes, must not signal it
            self._running, self._abort = (lambda: False), (lambda: None)
            if self.failure is None:
                self.failure = InterfaceError(
                    f"streaming the payload did not end by the deadline: it was "
                    f"{self.position()}"
                )

    def _release_writer(self) -> None:
        """The Interface is gone: a writer waiting for it to open a FIFO must stop waiting.

        Our own reading end completes that ``open``; it stays open until the writer is joined,
        so an ``open`` the writer is only about to make returns at once too.
        """
        with self._lock:
            self._stopping = True
            if self._opening is not None and self._releaser is None:
                with contextlib.suppress(OSError):  # removed, or never made: nothing waits
                    self._releaser = os.open(
                        self._opening, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
                    )

    def _probe_stream_next(self) -> None:
        """While the writer waits for the Interface to open the announced stream, notice the
        Interface reading ``stream-next`` again instead: opening it briefly gives that reader
        an end of file, so it stops waiting, and tells us it was out of order."""
        with self._lock:  # the writer's next step waits for our copy of stream-next to close
            if self._stopping or self._opening in (None, self.stream_next):
                return
            try:
                os.close(os.open(self.stream_next, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    self._probe_found_no_reader = True
                return
            # a reader still there from the announcement is fine; a new one is not
            self._reopened_stream_next |= self._probe_found_no_reader

    def position(self) -> str:
        """Where streaming stood, for an error message."""
        if self._reopened_stream_next and self._current is not None:
            return (
                f"waiting for the Interface to read {self._current}, but it read "
                f"{filetree.STREAM_NEXT} again instead (each stream must be read to its end, "
                f"in order)"
            )
        return f"waiting for {self._waiting_for}"

    def unfinished_reason(self) -> str:
        """Why streaming did not finish, given that the Interface has exited."""
        return f"it exited while the orchestrator was {self.position()}"

    # ------------------------------------------------------------------ the writer thread

    def _serve(self, stream_next: int | None) -> None:
        opened: int | None = stream_next  # closed on the way out if streaming stops early
        try:
            fd = opened = stream_next if stream_next is not None else self._open(self.stream_next)
            self.started = True
            self._waiting_for = _NEXT_FROM_SOURCE
            for stream in self._streams:
                current = f"{filetree.STREAMS}/{filetree.check_entry_name(stream.name)}"
                os.mkfifo(self.work_dir / current, 0o600)
                line = f"{current} {stream.size}" if stream.announce_size else current
                self._write(fd, f"{line}\n".encode(), filetree.STREAM_NEXT)
                os.close(fd)
                opened = None
                self._current = current
                self._waiting_for = f"the Interface to open {current}"
                with contextlib.closing(_ReadAhead(stream.chunks(), self._check)) as chunks:
                    fd = opened = self._open(self.work_dir / current)
                    # stream-next was open (announcing, probing) until now: see spawns
                    stream_next_closed = spawns.mark()
                    self._copy(fd, chunks, stream, current)
                spawns.wait_for_starts_before(stream_next_closed, self._check)
                os.close(fd)
                opened = None
                self._current = None
                self._waiting_for = f"the Interface to open {filetree.STREAM_NEXT} again"
                fd = opened = self._open(self.stream_next)
                self._waiting_for = _NEXT_FROM_SOURCE
            os.close(fd)  # closed with nothing written: no more streams
            opened = None
            self.finished = True
        except _Gone:
            pass
        except OrchestratorError as exc:  # the payload reader's checksum and format errors
            self._fail(exc)
        except Exception as exc:  # the thread's edge: whatever it is, Download must fail
            self._fail(InterfaceError(f"streaming the payload failed: {exc!r}"))
        finally:
            # after _fail has stopped the Interface: it must not take a cut-off stream as whole
            if opened is not None:
                os.close(opened)

    def _fail(self, failure: OrchestratorError) -> None:
        self.failure = failure
        self._abort()

    def _check(self) -> None:
        if not self._running() or time.monotonic() >= self._deadline:
            raise _Gone

    def _open(self, path: Path) -> int:
        """Open a FIFO for writing: returns when the Interface opens it for reading, or
        raises ``_Gone`` when ``join`` ended the wait because the Interface is gone."""
        with self._lock:
            if self._stopping:
                raise _Gone
            self._opening = path
            self._probe_found_no_reader = False
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        with self._lock:
            self._opening = None
            if self._stopping:  # opened by our own releaser, or too late to serve
                os.close(fd)
                raise _Gone
        return fd

    @staticmethod
    def _try_open(path: Path) -> int | None:
        """The FIFO opened for writing, or ``None`` while nobody has it open for reading."""
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return None

    def _copy(self, fd: int, chunks: _ReadAhead, stream: Stream, what: str) -> None:
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above the user's pipe limit: the default size works, only slower
        written = 0
        of_size = "" if stream.size is None else f" of {stream.size}"
        self._waiting_for = f"more of {what} from the Artifact's source (0{of_size} bytes written)"
        for data in chunks:
            self._waiting_for = f"the Interface to read {what} ({written}{of_size} bytes written)"
            self._write(fd, data, what, written)
            written += len(data)
            self._waiting_for = (
                f"more of {what} from the Artifact's source ({written}{of_size} bytes written)"
            )
        if stream.size is not None and written != stream.size:
            raise ArtifactError(
                f"payload file {stream.name} has {written} bytes but its header says {stream.size}"
            )

    def _write(self, fd: int, data: Chunk, what: str, offset: int = 0) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                self._check()
                poller.poll(_POLL_SECONDS * 1000)
                continue
            except BrokenPipeError:
                self._fail(
                    InterfaceError(
                        f"the Interface stopped reading {what} after "
                        f"{offset + len(data) - len(view)} bytes (it closed the pipe)"
                    )
                )
                raise _Gone from None
            view = view[n:]
