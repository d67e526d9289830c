"""Late answers to TransferData blocks sent twice, skipped below udsoncan.

A block that got no answer within P2 is sent again with the same counter. When its first
answer comes after all, the ECU answers the repeat too, and that second answer can arrive
after the next request went out: udsoncan would take it for the answer to that request and
fail ("Block sequence number ... does not match", or an answer to another service).
``SkipLateAnswers`` sits between udsoncan and the transport and drops, for any request but
the block itself, a positive TransferData answer that echoes the counter of a block sent twice.
"""

from __future__ import annotations

import logging
import time

from udsoncan.connections import BaseConnection

_log = logging.getLogger(__name__)

_TRANSFER_DATA, _TRANSFER_DATA_ANSWER = 0x36, 0x76


class SkipLateAnswers(BaseConnection):
    """The transport connection ``inner``, without late answers to repeated blocks."""

    def __init__(self, inner: BaseConnection) -> None:
        super().__init__()
        self.name, self.logger = inner.name, inner.logger
        self.inner = inner
        self.repeated: set[int] = set()  # counters of TransferData blocks sent twice
        self._request = b""

    def open(self) -> SkipLateAnswers:
        self.inner.open()
        return self

    def close(self) -> None:
        self.inner.close()

    def is_open(self) -> bool:
        return self.inner.is_open()

    def empty_rxqueue(self) -> None:
        self.inner.empty_rxqueue()

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        self._request = payload
        self.inner.specific_send(payload, timeout)

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        # a skipped answer does not lengthen the wait udsoncan asked for
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            frame = self.inner.specific_wait_frame(left)
            if frame is None or not self._late(frame):
                return frame
            _log.debug("skipped a late answer to TransferData counter %#04x", frame[1])

    def _late(self, frame: bytes) -> bool:
        if len(frame) < 2 or frame[0] != _TRANSFER_DATA_ANSWER or frame[1] not in self.repeated:
            return False
        return self._request[:2] != bytes((_TRANSFER_DATA, frame[1]))
