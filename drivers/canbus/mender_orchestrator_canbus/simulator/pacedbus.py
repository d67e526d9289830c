"""A python-can bus that behaves like a real one in time: the ``paced`` interface.

``can.Bus(interface="paced", channel="virtual:NAME", bitrate=500000)`` wraps another
python-can bus (``INTERFACE:CHANNEL``: ``virtual:NAME``, ``remote:127.0.0.1:PORT``) and
delivers each frame only after the time it takes on the wire at ``bitrate`` (and
``data_bitrate`` for CAN FD with bit-rate switching), frame lengths from
``mender_orchestrator_canbus.timing``. Like socketcan it has a bounded transmit queue
(``tx_queue``, 10 frames as Linux's default ``txqueuelen``): a frame sent while it is full is
refused with ``CanOperationError`` carrying errno ENOBUFS, exactly what python-can's socketcan
backend raises.

Nodes of one process on the same channel share a ``Wire``: their frames take turns on it, and
faults are injected there (``Wire.get(channel).inject(...)``): refused sends with an errno
(ENOBUFS, ENETDOWN as a bus-off controller gives) or with an adapter's words ("error passive"),
for one node (by CAN identifier) or all, a number of times or for some seconds. Across
processes (``remote:``) each node paces its own frames only.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import can

from mender_orchestrator_canbus.timing import frame_seconds

DEFAULT_TX_QUEUE = 10  # Linux's default txqueuelen for CAN interfaces


@dataclass
class Fault:
    """Sends refused with ``code`` (an errno, or an adapter's message)."""

    code: int | str
    count: int | None = None  # how many sends are refused; None: until ``until``
    until: float | None = None  # time.monotonic() after which sends pass again
    arbitration_id: int | None = None  # only this node's frames; None: every node's
    # only ISO-TP frames of this type (normal addressing: the high nibble of the first byte;
    # 0 single, 1 first, 2 consecutive, 3 flow control); None: every frame
    frame_type: int | None = None

    def applies(self, msg: can.Message, now: float) -> bool:
        if self.arbitration_id is not None and msg.arbitration_id != self.arbitration_id:
            return False
        if self.frame_type is not None and (not msg.data or msg.data[0] >> 4 != self.frame_type):
            return False
        if self.until is not None:
            return now < self.until
        return self.count is not None and self.count > 0


class Wire:
    """The medium of one paced channel in this process."""

    _wires: ClassVar[dict[str, Wire]] = {}
    _wires_lock = threading.Lock()

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free_at = 0.0  # when the frame on the wire now has gone
        self.faults: list[Fault] = []
        self.refused = 0  # sends refused, by a full queue or a fault
        self.frames = 0  # frames delivered
        # (start, seconds, CAN id) of every frame on the wire, to measure the bus load
        self.occupancy: list[tuple[float, float, int]] = []

    @classmethod
    def get(cls, channel: str) -> Wire:
        with cls._wires_lock:
            return cls._wires.setdefault(channel, cls())

    def inject(
        self,
        code: int | str,
        *,
        count: int | None = None,
        seconds: float | None = None,
        arbitration_id: int | None = None,
        frame_type: int | None = None,
    ) -> None:
        """Refuse the next ``count`` sends, or every send for ``seconds``, with ``code``."""
        until = None if seconds is None else time.monotonic() + seconds
        with self.lock:
            self.faults.append(Fault(code, count, until, arbitration_id, frame_type))

    def refusal(self, msg: can.Message) -> can.CanOperationError | None:
        now = time.monotonic()
        with self.lock:
            for fault in self.faults:
                if fault.applies(msg, now):
                    if fault.count is not None:
                        fault.count -= 1
                    self.refused += 1
                    return _error(fault.code)
        return None

    def reserve(self, seconds: float, ready: float, arbitration_id: int) -> float:
        """Book the wire for a frame ready at ``ready``: the time its transmission ends. A
        late transmit thread does not slow the wire down: the frame is booked when it could
        have started."""
        with self.lock:
            start = max(self.free_at, ready)
            self.free_at = start + seconds
            self.occupancy.append((start, seconds, arbitration_id))
            return self.free_at

    def load(self, arbitration_id: int, window: float) -> tuple[float, float]:
        """The share of the wire ``arbitration_id``'s frames took: the highest over any
        ``window`` seconds starting at one of its frames, and the mean from its first frame
        to its last."""
        with self.lock:
            frames = [(s, d) for s, d, i in self.occupancy if i == arbitration_id]
        if not frames:
            return 0.0, 0.0
        highest, busy, first = 0.0, 0.0, 0
        for start, seconds in frames:  # a window ending at each frame's end
            busy += seconds
            while frames[first][0] < start + seconds - window:
                busy -= frames[first][1]
                first += 1
            highest = max(highest, busy / window)
        span = frames[-1][0] + frames[-1][1] - frames[0][0]
        return highest, sum(d for _, d in frames) / span


def _error(code: int | str) -> can.CanOperationError:
    if isinstance(code, str):
        return can.CanOperationError(f"Failed to transmit: {code}")
    return can.CanOperationError(
        f"Failed to transmit: [Errno {code}] {os.strerror(code)}", error_code=code
    )


class PacedBus(can.BusABC):
    """See the module docstring."""

    def __init__(
        self,
        channel: str,
        bitrate: int = 500_000,
        data_bitrate: int | None = None,
        fd: bool = False,
        tx_queue: int = DEFAULT_TX_QUEUE,
        **kwargs: Any,
    ) -> None:
        interface, _, inner_channel = str(channel).partition(":")
        if not inner_channel:
            raise can.CanInitializationError(
                f"paced bus channel {channel!r}: expected INTERFACE:CHANNEL, e.g. virtual:bus0"
            )
        self._inner = can.Bus(interface=interface, channel=inner_channel, fd=fd)
        self.wire = Wire.get(str(channel))
        self.bitrate = bitrate
        self.data_bitrate = data_bitrate
        self.tx_queue = tx_queue
        self._pending = 0  # frames queued or on the wire: what counts against tx_queue
        self._pending_lock = threading.Lock()
        self._frames: queue.SimpleQueue[tuple[can.Message, float] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._transmit, name="paced-bus", daemon=True)
        self._thread.start()
        self.channel_info = f"paced {bitrate} bit/s on {channel}"
        super().__init__(channel=channel, **kwargs)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        error = self.wire.refusal(msg)
        if error is not None:
            raise error
        with self._pending_lock:
            if self._pending >= self.tx_queue:
                self.wire.refused += 1
                raise _error(errno.ENOBUFS)
            self._pending += 1
        self._frames.put((msg, time.monotonic()))

    def _transmit(self) -> None:
        while (item := self._frames.get()) is not None:
            msg, ready = item
            seconds = frame_seconds(
                len(msg.data), extended=msg.is_extended_id, fd=msg.is_fd,
                brs=msg.bitrate_switch, bitrate=self.bitrate, data_bitrate=self.data_bitrate,
            )  # fmt: skip
            done = self.wire.reserve(seconds, ready, msg.arbitration_id)
            delay = done - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self._inner.send(msg)
            except can.CanError:
                pass  # the inner bus went away (shutdown): the frame is lost, as on a real bus
            self.wire.frames += 1
            with self._pending_lock:
                self._pending -= 1

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        return self._inner.recv(timeout), False

    def shutdown(self) -> None:
        self._frames.put(None)
        self._thread.join(1.0)
        self._inner.shutdown()
        super().shutdown()
