"""UDS over DoIP (ISO 13400-2) with the ``doipclient`` library: ``--transport=doip``.

``doipclient.DoIPClient`` opens the TCP connection, activates routing (and answers the
entity's alive checks); it packs and parses every DoIP message. Its own udsoncan connector
(``DoIPClientUDSConnector``) is not used: it reads the socket in the caller's thread and throws
away answers from any ECU but its one, so two Components behind one gateway, flashed in
parallel, would eat each other's answers. Here one ``Gateway`` per DoIP entity (host, port,
tester address) is shared by all Components of the process: a reader thread sorts diagnostic
messages and acknowledgements by the ECU's logical address, and every wait is bounded by the
hook's deadline.
"""
# doipclient has no type hints on its message classes and client: calls to them are untyped
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any

from doipclient.client import DoIPClient
from doipclient.constants import A_DOIP_DIAGNOSTIC_MESSAGE, A_PROCESSING_TIME
from doipclient.messages import (
    DiagnosticMessage,
    DiagnosticMessageNegativeAcknowledgement,
    DiagnosticMessagePositiveAcknowledgement,
    RoutingActivationResponse,
)
from orchestrator_core.driver_api import InterfaceError
from udsoncan.connections import BaseConnection
from udsoncan.exceptions import TimeoutException

from mender_orchestrator_canbus.transport import LinkFailure, TransportSettings, Waiting

_log = logging.getLogger(__name__)
_POLL = 0.05
_READ_FOREVER = 1e9


class Gateway:
    """One TCP connection to a DoIP entity, shared by the Components behind it."""

    _registry: dict[tuple[str, int, int, int], Gateway] = {}  # noqa: RUF012 - process-wide
    _registry_lock = threading.Lock()

    def __init__(self, key: tuple[str, int, int, int], client: Any) -> None:
        self.key = key
        self.client = client
        self.users = 0
        self.closed: str | None = None  # why the connection ended, once it has
        self._send_lock = threading.Lock()
        self._answers: dict[int, queue.SimpleQueue[bytes]] = {}
        self._acks: dict[int, queue.SimpleQueue[Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="doip-reader", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, transport: TransportSettings, waiting: Waiting) -> Gateway:
        assert transport.host is not None
        key = (transport.host, transport.port, transport.tester_address,
               transport.activation_type)  # fmt: skip
        with cls._registry_lock:
            gateway = cls._registry.get(key)
            if gateway is None:
                gateway = cls(key, _connect(transport, waiting))
                cls._registry[key] = gateway
            gateway.users += 1
            return gateway

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            del self._registry[self.key]
        self._stop.set()
        try:
            # wakes the reader out of its recv(); DoIPClient.close() alone would not
            self.client._tcp_sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(1.0)
        self.client.close()

    def attach(
        self, address: int, who: str
    ) -> tuple[queue.SimpleQueue[bytes], queue.SimpleQueue[Any]]:
        with self._registry_lock:
            if address in self._answers:
                raise InterfaceError(
                    f"{who}: another Component already talks to logical address {address:#06x} "
                    f"through the DoIP entity {self.key[0]}:{self.key[1]}"
                )
            self._answers[address] = queue.SimpleQueue()
            self._acks[address] = queue.SimpleQueue()
            return self._answers[address], self._acks[address]

    def detach(self, address: int) -> None:
        with self._registry_lock:
            self._answers.pop(address, None)
            self._acks.pop(address, None)

    def _read(self) -> None:
        tester = self.key[2]
        while not self._stop.is_set():
            try:
                # read_doip drops bytes that arrive after its timeout: it gets a timeout it never
                # reaches, and release() ends it by shutting the socket down
                message = self.client.read_doip(timeout=_READ_FOREVER)
            except TimeoutError:
                if self.client._tcp_close_detected:
                    self.closed = "the DoIP entity closed the connection"
                    return
                continue
            except OSError as exc:
                self.closed = f"the DoIP connection failed: {exc}"
                return
            target = getattr(message, "target_address", None)
            if target != tester:
                continue
            source = message.source_address
            if isinstance(message, DiagnosticMessage):
                answers = self._answers.get(source)
                if answers is not None:
                    answers.put(bytes(message.user_data))
            elif isinstance(message, DiagnosticMessagePositiveAcknowledgement |
                            DiagnosticMessageNegativeAcknowledgement):  # fmt: skip
                acks = self._acks.get(source)
                if acks is not None:
                    acks.put(message)

    def send(self, address: int, payload: bytes, waiting: Waiting) -> None:
        """Send one diagnostic message and wait for the entity's acknowledgement."""
        acks = self._acks[address]
        while not acks.empty():
            acks.get()
        with self._send_lock:
            if self.closed is not None:
                raise LinkFailure(f"could not send the request: {self.closed}")
            try:
                message = DiagnosticMessage(self.key[2], address, bytearray(payload))
                self.client.send_doip_message(message)
            except OSError as exc:
                raise LinkFailure(f"could not send the request over DoIP: {exc}") from None
        limit = time.monotonic() + A_DOIP_DIAGNOSTIC_MESSAGE
        while True:
            left = min(limit - time.monotonic(), waiting.check())
            if left <= 0 or self.closed is not None:
                raise LinkFailure(
                    f"the DoIP entity {self.key[0]}:{self.key[1]} did not "
                    f"acknowledge the diagnostic message for {address:#06x}"
                    + (f" ({self.closed})" if self.closed else "")
                )
            try:
                ack = acks.get(timeout=min(left, _POLL))
            except queue.Empty:
                continue
            if isinstance(ack, DiagnosticMessageNegativeAcknowledgement):
                raise LinkFailure(
                    f"the DoIP entity refused the diagnostic message for "
                    f"{address:#06x}: NACK {ack.nack_code:#04x} {_nack_name(ack.nack_code)}"
                )
            return


def _nack_name(code: int) -> str:
    try:
        return str(DiagnosticMessageNegativeAcknowledgement.NackCodes(code).name)
    except ValueError:
        return "(reserved)"


def _connect(transport: TransportSettings, waiting: Waiting) -> Any:
    """A DoIPClient with routing activated (and, with --vin, the vehicle checked)."""
    host, port = transport.host, transport.port
    where = f"the DoIP entity {host}:{port}"
    # DoIPClient connects without a timeout: an unreachable host must not outlast the hook
    try:
        socket.create_connection((host, port), timeout=min(A_PROCESSING_TIME,
                                 waiting.check())).close()  # fmt: skip
    except OSError as exc:
        raise InterfaceError(f"{waiting.who}: cannot reach {where}: {exc}") from None
    try:
        client = DoIPClient(
            host, transport.logical_address, tcp_port=port, udp_port=port,
            activation_type=transport.activation_type,
            client_logical_address=transport.tester_address,
        )  # fmt: skip
    except ConnectionRefusedError as exc:
        raise InterfaceError(
            f"{waiting.who}: {where} refused routing activation (type "
            f"{transport.activation_type:#04x}, tester address {transport.tester_address:#06x}): "
            f"{_activation_code(exc)}"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise InterfaceError(
            f"{waiting.who}: routing activation with {where} failed: {exc}"
        ) from None
    if transport.vin is not None:
        _check_vehicle(client, transport, waiting, where)
    return client


def _activation_code(exc: BaseException) -> str:
    text = str(exc)
    for code in RoutingActivationResponse.ResponseCode:
        if text.endswith(str(code)) or text.endswith(str(int(code))):
            return f"response code {int(code):#04x} {code.name}"
    return text


def _check_vehicle(client: Any, transport: TransportSettings, waiting: Waiting, where: str) -> None:
    try:
        identity = client.request_vehicle_identification()
    except (OSError, TimeoutError) as exc:
        client.close()
        raise InterfaceError(
            f"{waiting.who}: {where} did not answer the vehicle identification request: {exc}"
        ) from None
    vin = str(identity.vin).rstrip("\x00")
    _log.debug("%s: %s identifies VIN %s, logical address %#06x", waiting.who, where, vin,
               identity.logical_address)  # fmt: skip
    if vin != transport.vin:
        client.close()
        raise InterfaceError(
            f"{waiting.who}: {where} belongs to the vehicle {vin!r}, not --vin={transport.vin}"
        )


class DoipConnection(BaseConnection):
    """udsoncan's connection to one ECU behind a shared ``Gateway``."""

    def __init__(self, transport: TransportSettings, waiting: Waiting, name: str) -> None:
        super().__init__(name)
        assert transport.logical_address is not None
        self.transport = transport
        self.address = transport.logical_address
        self.waiting = waiting
        self._gateway: Gateway | None = None
        self._answers: queue.SimpleQueue[bytes] | None = None

    def open(self) -> DoipConnection:
        gateway = Gateway.acquire(self.transport, self.waiting)
        try:
            self._answers, _ = gateway.attach(self.address, self.waiting.who)
        except BaseException:
            gateway.release()
            raise
        self._gateway = gateway
        return self

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.detach(self.address)
            self._gateway.release()
            self._gateway = None

    def is_open(self) -> bool:
        return self._gateway is not None

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        assert self._gateway is not None
        self._gateway.send(self.address, payload, self.waiting)

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        assert self._gateway is not None and self._answers is not None
        limit = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            left = min(limit - time.monotonic(), self.waiting.check())
            if left <= 0:
                raise TimeoutException(f"no answer within {timeout:.3f} s")
            try:
                return self._answers.get(timeout=min(left, _POLL))
            except queue.Empty:
                if self._gateway.closed is not None:
                    raise LinkFailure(f"waiting for an answer: {self._gateway.closed}") from None

    def empty_rxqueue(self) -> None:
        if self._answers is not None:
            while not self._answers.empty():
                self._answers.get()
