"""The simulated ECU on a python-can bus: ISO-TP (can-isotp) below, ``Ecu`` above.

Frames reach the ISO-TP layer through ``FrameGate``, which can lose one on purpose (the
``drop-frames`` fault). While the ECU is resetting its ISO-TP layer is stopped: it neither
receives nor answers, and what arrived meanwhile is thrown away when it comes back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from types import TracebackType

import can
import isotp

from mender_orchestrator_canbus.link import FUNCTIONAL_IDS, LinkSettings
from mender_orchestrator_canbus.simulator.ecu import Ecu

log = logging.getLogger("mender_orchestrator_canbus.simulator")

_FIRST_FRAME, _CONSECUTIVE_FRAME = 1, 2
_CLEAR_TO_SEND, _WAIT = 0x30, 0x31  # flow-control PCI bytes (flow status 0 and 1)
_POLL = 0.01  # seconds: how quickly the threads notice a stop or a reset


class FrameGate:
    """Reads frames for the ISO-TP layer, losing one on purpose for the ``drop-frames`` fault."""

    def __init__(self, bus: can.BusABC, ecu: Ecu, pci_offset: int) -> None:
        self.bus = bus
        self.ecu = ecu
        self.pci_offset = pci_offset  # extended and mixed addressing put an address byte first
        self._drop_next = False
        # single-frame requests to the functional id, for the ECU's own thread to answer
        self.functional: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.functional_id: int | None = None  # None: the addressing has no functional id

    def receive(self, timeout: float) -> isotp.CanMessage | None:
        msg = self.bus.recv(timeout)
        if msg is None or msg.is_error_frame or msg.is_remote_frame:
            return None
        if msg.arbitration_id == self.functional_id:
            length = msg.data[0] & 0x0F if msg.data and msg.data[0] >> 4 == 0 else 0
            if length:
                self.functional.put(bytes(msg.data[1 : 1 + length]))
            return None
        if len(msg.data) > self.pci_offset:
            kind = msg.data[self.pci_offset] >> 4
            if kind == _FIRST_FRAME:
                self._drop_next = self.ecu.wants_frame_dropped()
            elif kind == _CONSECUTIVE_FRAME and self._drop_next:
                self._drop_next = False
                return None
        return isotp.CanMessage(
            arbitration_id=msg.arbitration_id,
            data=bytes(msg.data),
            extended_id=msg.is_extended_id,
            is_fd=msg.is_fd,
            bitrate_switch=msg.bitrate_switch,
        )

    def discard_pending(self) -> None:
        """Forget frames that arrived while the ECU was off."""
        while self.bus.recv(0) is not None:
            pass


class EcuServer:
    """Runs an ``Ecu`` on a bus in a background thread; use as a context manager.

    ``fc_waits`` flow-control WAIT frames, ``fc_wait_gap`` seconds apart, go before each
    flow control that lets the tester send (an ECU whose buffer is not ready yet).
    """

    def __init__(
        self, link: LinkSettings, ecu: Ecu, fc_waits: int = 0, fc_wait_gap: float = 0.1
    ) -> None:
        self.link = link
        self.ecu = ecu
        self.fc_waits = fc_waits
        self.fc_wait_gap = fc_wait_gap
        self._bus = link.open_bus()
        uses_address_byte = link.addressing.startswith(("extended", "mixed"))
        self._pci_offset = 1 if uses_address_byte else 0
        self._gate = FrameGate(self._bus, ecu, pci_offset=self._pci_offset)
        self._gate.functional_id = ecu.config.functional_id or FUNCTIONAL_IDS.get(link.addressing)
        self._stack = isotp.TransportLayer(
            rxfn=self._gate.receive,
            txfn=self._transmit,
            address=link.isotp_address(),
            params=link.isotp_params(
                timeout=1.0,
                max_frame_size=max(4095, ecu.config.max_block_length),
                logger=f"{log.name}.isotp",
            ),
            error_handler=lambda error: log.debug("ISO-TP: %s", error),
            read_timeout=_POLL,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ecu-simulator", daemon=True)
        self._listening = False
        self.failure: Exception | None = None  # why the ECU stopped answering, if it did

    def _transmit(self, msg: isotp.CanMessage) -> None:
        frame = can.Message(
            arbitration_id=msg.arbitration_id,
            data=msg.data,
            is_extended_id=msg.is_extended_id,
            is_fd=msg.is_fd,
            bitrate_switch=msg.bitrate_switch,
        )
        pci = frame.data[self._pci_offset] if len(frame.data) > self._pci_offset else 0
        if pci == _CLEAR_TO_SEND:
            for _ in range(self.fc_waits):
                wait = frame.data[:]
                wait[self._pci_offset] = _WAIT
                self._send_frame(can.Message(
                    arbitration_id=frame.arbitration_id, data=wait,
                    is_extended_id=frame.is_extended_id, is_fd=frame.is_fd,
                    bitrate_switch=frame.bitrate_switch,
                ))  # fmt: skip
                time.sleep(self.fc_wait_gap)
        self._send_frame(frame)

    def _send_frame(self, frame: can.Message) -> None:
        """Send, retrying a refused frame for up to N_As (1 s) like a real ECU: raising here
        would end can-isotp's thread and the ECU with it. A stop ends the retries at once:
        can-isotp waits only 1 s for its thread before the bus is shut down under it."""
        give_up = time.monotonic() + 1.0
        while True:
            try:
                self._bus.send(frame)
                return
            except can.CanError as exc:
                if time.monotonic() > give_up or self._stop.is_set():
                    log.debug("frame %s lost: %s", frame, exc)
                    return
                time.sleep(0.0005)

    def __enter__(self) -> EcuServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self._bus.shutdown()

    # ------------------------------------------------------------------ the ECU's main loop

    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        if on:
            self._gate.discard_pending()
            self._stack.start()
        else:
            self._stack.stop()
        self._listening = on

    def _serve(self) -> None:
        try:
            self._answer_requests()
        except Exception as exc:  # e.g. its flash files went away: like a broken ECU, go silent
            log.debug("the simulated ECU stopped answering", exc_info=True)
            self.failure = exc
        finally:
            self._listen(False)

    def _answer_requests(self) -> None:
        while not self._stop.is_set():
            if not self.ecu.online():
                self._listen(False)
                time.sleep(0.01)
                continue
            self._listen(True)
            request = self._stack.recv(block=True, timeout=_POLL)
            # functional requests first: on the bus they came before what the stack delivers
            while not self._gate.functional.empty():
                answer = self.ecu.handle(self._gate.functional.get(), self._send, functional=True)
                if answer is not None:
                    self._send(answer)
            if request is None:
                continue
            response = self.ecu.handle(bytes(request), self._send)
            if response is not None:
                self._send(response)
            if self.ecu.reset_requested:
                self.ecu.reset_requested = False
                self.ecu.power_off()

    def _send(self, payload: bytes) -> None:
        try:
            self._stack.send(payload)
        except isotp.IsoTpError as exc:  # the tester went away mid-answer: the ECU carries on
            log.debug("could not send %d bytes: %s", len(payload), exc)
