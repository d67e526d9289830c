"""A simulated DoIP entity (ISO 13400-2): a gateway on 127.0.0.1 in front of simulated ECUs.

Run it with ``python -m mender_orchestrator_canbus.simulator.gateway --port PORT
--ecu 0x0201=STATE [--ecu 0x0202=STATE ...]`` (each ``STATE`` an ECU state file, created on
first use like the CAN simulator's), or build ``DoipGateway`` in process. It answers:

* vehicle identification requests (UDP, on the same port number as TCP) with its VIN, logical
  address and EID;
* routing activation (TCP): tester addresses 0x0E00 to 0x0FFF and activation types 0x00
  (default) and 0x01 (WWH-OBD) succeed, anything else is denied with the ISO 13400-2 code;
* diagnostic messages: acknowledged (0x8002) and handed to the ECU with that logical address,
  whose UDS answers (``Ecu.handle``, the same server logic as on CAN) come back as diagnostic
  messages; an unknown target address is refused (0x8003, code 0x03), as is a message before
  routing activation (code 0x02). Each ECU answers in its own thread, so ECUs behind the
  gateway work in parallel, as on a real vehicle network. An ECU that is resetting is silent.
"""
# doipclient has no type hints on its message classes and client: calls to them are untyped
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import argparse
import logging
import queue
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from types import TracebackType

from doipclient.messages import (
    DiagnosticMessage,
    DiagnosticMessageNegativeAcknowledgement,
    DiagnosticMessagePositiveAcknowledgement,
    GenericDoIPNegativeAcknowledge,
    RoutingActivationResponse,
    VehicleIdentificationResponse,
)
from orchestrator_core.driver_api import integer

from mender_orchestrator_canbus.simulator.ecu import Ecu, EcuConfig, Faults
from mender_orchestrator_canbus.simulator.flash import FlashStore

log = logging.getLogger("mender_orchestrator_canbus.simulator.gateway")

_HEADER = struct.Struct("!BBHL")  # protocol version, its inverse, payload type, payload length
_VERSION = 0x02  # ISO 13400-2:2012, what doipclient sends by default
_TESTERS = range(0x0E00, 0x1000)  # external test equipment addresses (ISO 13400-2 table 13)
_ACTIVATION_TYPES = (0x00, 0x01)
_MAX_PAYLOAD = 0x10000 + 4  # a UDS message of up to 64 KiB and the two addresses
Code = RoutingActivationResponse.ResponseCode
Nack = DiagnosticMessageNegativeAcknowledgement.NackCodes


def _frame(payload_type: int, payload: bytes) -> bytes:
    return _HEADER.pack(_VERSION, _VERSION ^ 0xFF, payload_type, len(payload)) + payload


class _Tester:
    """One TCP connection from a tester."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address: int | None = None  # set by a successful routing activation
        self.targets: set[int] = set()  # the ECUs it sent diagnostic messages to
        self._lock = threading.Lock()

    def send(self, payload_type: int, payload: bytes) -> None:
        with self._lock:
            try:
                self.sock.sendall(_frame(payload_type, payload))
            except OSError as exc:  # the tester went away: its answers have nowhere to go
                log.debug("tester connection lost: %s", exc)

    def read(self) -> tuple[int, bytes] | None:
        """The next message; None once the tester closed the connection or sent something
        that is not DoIP. ``TimeoutError`` while it is idle (the caller looks for a stop)."""
        header = self._exactly(_HEADER.size, idle=True)
        if header is None:
            return None
        version, inverse, payload_type, length = _HEADER.unpack(header)
        if version ^ 0xFF != inverse or length > _MAX_PAYLOAD:
            return None  # not DoIP: ISO 13400-2 closes the socket
        payload = self._exactly(length, idle=False)
        return None if payload is None else (payload_type, payload)

    def _exactly(self, size: int, idle: bool) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except TimeoutError:
                if idle and not data:
                    raise
                continue
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data


class DoipGateway:
    """See the module docstring; use as a context manager."""

    def __init__(
        self,
        ecus: dict[int, Ecu],
        *,
        port: int = 0,
        logical_address: int = 0x1000,
        vin: str = "MORCSIMULATEDCAR1",
        eid: bytes = b"\x02\x00\x5e\x00\x00\x01",
    ) -> None:
        self.ecus = ecus
        self.logical_address = logical_address
        self.vin = vin
        self.eid = eid
        self.testers: list[_Tester] = []  # every connection accepted, in order
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", self.port))
        self._udp.settimeout(0.1)
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._inboxes = {address: queue.SimpleQueue[tuple[_Tester, int, bytes] | None]()
                         for address in ecus}  # fmt: skip
        self._threads = [
            threading.Thread(target=self._accept, name="doip-accept", daemon=True),
            threading.Thread(target=self._identify, name="doip-udp", daemon=True),
            *(threading.Thread(target=self._serve_ecu, args=(address,), daemon=True,
                               name=f"doip-ecu-{address:04x}") for address in ecus),
        ]  # fmt: skip

    def __enter__(self) -> DoipGateway:
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
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for inbox in self._inboxes.values():
            inbox.put(None)
        for thread in self._threads:
            thread.join(2)
        self._listener.close()
        self._udp.close()

    def drop_connections(self) -> None:
        """Close every tester's TCP connection, as a gateway that restarts does (the ECUs
        behind it carry on; a new connection must activate routing again)."""
        for tester in self.testers:
            try:
                tester.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already

    # ------------------------------------------------------------------ UDP

    def _identify(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, sender = self._udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(datagram) < _HEADER.size:
                continue
            payload_type = _HEADER.unpack_from(datagram)[2]
            body = datagram[_HEADER.size :]
            wanted = (payload_type == 0x0001
                      or (payload_type == 0x0002 and body == self.eid)
                      or (payload_type == 0x0003 and body == self.vin.encode()))  # fmt: skip
            if wanted:
                answer = VehicleIdentificationResponse(
                    self.vin, self.logical_address, self.eid, self.eid, 0x00, 0x00
                )
                self._udp.sendto(_frame(0x0004, answer.pack()), sender)

    # ------------------------------------------------------------------ TCP

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(0.2)
            threading.Thread(target=self._serve_tester, args=(_Tester(sock),), daemon=True,
                             name="doip-tester").start()  # fmt: skip

    def _serve_tester(self, tester: _Tester) -> None:
        self.testers.append(tester)
        try:
            while not self._stop.is_set():
                try:
                    message = tester.read()
                except TimeoutError:
                    continue
                if message is None or not self._handle(tester, *message):
                    return
        finally:
            tester.sock.close()

    def _handle(self, tester: _Tester, payload_type: int, payload: bytes) -> bool:
        """Answer one message; False closes the connection."""
        if payload_type == 0x0005 and len(payload) >= 7:
            return self._activate(tester, payload)
        if payload_type == 0x8001 and len(payload) >= 5:
            self._diagnostic(tester, payload)
            return True
        if payload_type == 0x0007:  # alive check request
            tester.send(0x0008, struct.pack("!H", tester.address or 0))
            return True
        nack = GenericDoIPNegativeAcknowledge(0x01)
        tester.send(0x0000, nack.pack())  # unknown payload type
        return True

    def _activate(self, tester: _Tester, payload: bytes) -> bool:
        source, activation_type = struct.unpack_from("!HB", payload)
        granted = source in _TESTERS and activation_type in _ACTIVATION_TYPES
        if source not in _TESTERS:
            code = Code.DeniedUnknownSourceAddress
        elif activation_type not in _ACTIVATION_TYPES:
            code = Code.DeniedUnsupportedActivationType
        else:
            code = Code.Success
            tester.address = source
        answer = RoutingActivationResponse(source, self.logical_address, code)
        tester.send(0x0006, answer.pack())
        return granted

    def _diagnostic(self, tester: _Tester, payload: bytes) -> None:
        source, target = struct.unpack_from("!HH", payload)
        data = payload[4:]
        if tester.address is None or source != tester.address:
            code: int | None = Nack.InvalidSourceAddress
        elif target not in self._inboxes:
            code = Nack.UnknownTargetAddress
        else:
            code = None
        if code is not None:
            nack = DiagnosticMessageNegativeAcknowledgement(target, source, code)
            tester.send(0x8003, nack.pack())
            return
        ack = DiagnosticMessagePositiveAcknowledgement(target, source, 0x00)
        tester.send(0x8002, ack.pack())
        tester.targets.add(target)
        self._inboxes[target].put((tester, source, data))

    def _serve_ecu(self, address: int) -> None:
        ecu = self.ecus[address]
        inbox = self._inboxes[address]
        while (item := inbox.get()) is not None:
            tester, source, request = item

            def answer(response: bytes, tester: _Tester = tester, source: int = source) -> None:
                message = DiagnosticMessage(address, source, bytearray(response))
                tester.send(0x8001, message.pack())

            if not ecu.online():
                continue  # resetting (or dead): silent, as behind a real gateway
            response = ecu.handle(request, answer)
            if response is not None:
                answer(response)
            if ecu.reset_requested:
                ecu.reset_requested = False
                ecu.power_off()


def _ecu_spec(text: str) -> tuple[int, Path]:
    address, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected LOGICAL_ADDRESS=STATE_FILE, got {text!r}")
    return integer(1, 0xFFFF)(address), Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mender_orchestrator_canbus.simulator.gateway",
        description="A DoIP entity on 127.0.0.1 in front of simulated ECUs.",
    )
    parser.add_argument("--port", type=integer(0, 65535), default=13400)
    parser.add_argument("--ecu", type=_ecu_spec, action="append", required=True,
                        metavar="ADDRESS=STATE", help="an ECU behind it (repeatable)")  # fmt: skip
    parser.add_argument("--serial-prefix", default="SIM-DOIP-",
                        help="new ECUs' serial numbers: this and the logical address")  # fmt: skip
    parser.add_argument("--vin", default="MORCSIMULATEDCAR1")
    args = parser.parse_args(argv)
    ecus: dict[int, Ecu] = {}
    for address, state in args.ecu:
        if not state.exists():
            FlashStore.create(state, banks=1, bank_size=0x10000,
                              serial=f"{args.serial_prefix}{address:04X}", version="ecu-1.0.0",
                              image=bytes(range(256)) * 64)  # fmt: skip
        config = EcuConfig(erase_time=0.02, check_time=0.01, boot_time=0.05)
        ecus[address] = Ecu(FlashStore(state), config, Faults())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with DoipGateway(ecus, port=args.port, vin=args.vin) as gateway:
        print(f"DoIP gateway ready on 127.0.0.1:{gateway.port} for "
              f"{', '.join(f'{a:#06x}' for a in ecus)}", file=sys.stderr, flush=True)  # fmt: skip
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
