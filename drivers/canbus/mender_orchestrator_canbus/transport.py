"""The tester's transport below udsoncan: ISO-TP on a python-can bus (can-isotp in user space,
or the kernel's CAN_ISOTP sockets), or DoIP (``mender_orchestrator_canbus.doip``).

Nothing here may wait without bound. can-isotp's worker thread dies on the first exception its
transmit function raises, and udsoncan sends without a timeout, so a single ENOBUFS from
socketcan used to leave a hook blocked for ever. Here the transmit function never raises: it
retries a refused frame with backoff for up to N_As (ISO 15765-2's limit for handing a frame
to the bus), then gives the transfer up and records why; every wait of a request is cut at the
hook's deadline and stops when ``ctx.cancelled`` is set.

Components flashed in parallel in one process share one python-can bus per channel (some
adapters can be opened once only): every frame read reaches each Component's ISO-TP layer,
which keeps those for its own addresses.
"""

from __future__ import annotations

import argparse
import errno
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import can
import isotp
from orchestrator_core.driver_api import InterfaceError, integer
from udsoncan.connections import BaseConnection, IsoTPSocketConnection
from udsoncan.exceptions import TimeoutException

from mender_orchestrator_canbus.link import LinkSettings, positive_seconds
from mender_orchestrator_canbus.timing import frame_seconds

_log = logging.getLogger(__name__)
_POLL = 0.05  # seconds between looks at the deadline and ctx.cancelled while waiting
_READ = 0.01  # seconds a bus read blocks before the reader looks for a stop
_BURST = 4  # frames the bus-load cap lets a late sender catch up by
_BACKOFF_MAX = 0.02  # longest pause between two attempts at one refused frame
_MAX_PDU = 0xFFFF

# why a frame may be refused, for the message (python-can's socketcan puts the errno in
# CanOperationError.error_code; other backends only say it in words)
_SEND_ERRORS = {
    errno.ENOBUFS: "the interface's transmit queue stayed full (ENOBUFS)",
    errno.EAGAIN: "the interface's transmit queue stayed full (EAGAIN)",
    errno.ENETDOWN: "the controller is bus-off or the interface is down (ENETDOWN)",
}
_QUEUE_FULL = (errno.ENOBUFS, errno.EAGAIN)


@dataclass(frozen=True)
class TransportSettings:
    """How UDS requests reach the ECU, and the ISO-TP timing rules on CAN."""

    kind: str = "can"  # can | doip
    isotp: str = "auto"  # auto | user | kernel
    n_as: float = 1.0  # ISO 15765-2 defaults (1000 ms each)
    n_bs: float = 1.0
    n_cr: float = 1.0
    fc_wait_max: int = 10
    max_bus_load: int | None = None  # percent of --bitrate
    host: str | None = None
    port: int = 13400
    logical_address: int | None = None
    tester_address: int = 0x0E00
    activation_type: int = 0
    vin: str | None = None


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transport")
    group.add_argument(
        "--transport",
        choices=("can", "doip"),
        default="can",
        help="ISO-TP on a python-can bus, or DoIP (ISO 13400-2) over TCP",
    )
    group.add_argument(
        "--isotp",
        choices=("auto", "user", "kernel"),
        default="auto",
        help="ISO-TP in the kernel (CAN_ISOTP socket, socketcan only) or in "
        "Python (can-isotp); auto: the kernel's where it has it",
    )
    group.add_argument(
        "--n-as",
        type=positive_seconds,
        default=1.0,
        help="seconds a refused CAN frame is retried (N_As, default 1)",
    )
    group.add_argument(
        "--n-bs",
        type=positive_seconds,
        default=1.0,
        help="seconds to wait for a flow-control frame (N_Bs, default 1)",
    )
    group.add_argument(
        "--n-cr",
        type=positive_seconds,
        default=1.0,
        help="seconds to wait for a consecutive frame (N_Cr, default 1)",
    )
    group.add_argument(
        "--fc-wait-max",
        type=integer(0, 255),
        default=10,
        help="flow-control WAIT frames accepted in a row (WFTmax, default 10)",
    )
    group.add_argument(
        "--max-bus-load",
        type=integer(1, 100),
        default=None,
        help="percent of --bitrate this tester may use (default: no cap)",
    )
    group.add_argument("--host", default=None, help="(DoIP) address of the DoIP entity")
    group.add_argument(
        "--port",
        type=integer(1, 65535),
        default=13400,
        help="(DoIP) TCP and UDP port of the DoIP entity (default 13400)",
    )
    group.add_argument(
        "--logical-address",
        type=integer(1, 0xFFFF),
        default=None,
        help="(DoIP) logical address of the ECU",
    )
    group.add_argument(
        "--tester-address",
        type=integer(0, 0xFFFF),
        default=0x0E00,
        help="(DoIP) the tester's logical address (default 0x0E00)",
    )
    group.add_argument(
        "--activation-type",
        type=integer(0, 0xFF),
        default=0,
        help="(DoIP) routing activation type (default 0, default activation)",
    )
    group.add_argument(
        "--vin", default=None, help="(DoIP) refuse a DoIP entity that identifies another vehicle"
    )


def transport_from_namespace(ns: argparse.Namespace, link: LinkSettings) -> TransportSettings:
    """``TransportSettings`` from parsed options; ``ValueError`` names an inconsistent one."""
    if ns.transport == "doip":
        if ns.host is None or ns.logical_address is None:
            raise ValueError("--transport=doip needs --host and --logical-address")
    else:
        given = [o for o in ("host", "logical_address", "vin") if getattr(ns, o) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --transport=doip")
    if ns.max_bus_load is not None and link.bitrate is None:
        raise ValueError("--max-bus-load needs --bitrate (the cap is a share of it)")
    if ns.max_bus_load is not None and ns.isotp == "kernel":
        raise ValueError("--max-bus-load needs --isotp=user or auto (the kernel paces nothing)")
    if ns.vin is not None and len(ns.vin) != 17:
        raise ValueError(f"--vin: expected 17 characters, got {ns.vin!r}")
    return TransportSettings(
        kind=ns.transport, isotp=ns.isotp, n_as=ns.n_as, n_bs=ns.n_bs, n_cr=ns.n_cr,
        fc_wait_max=ns.fc_wait_max, max_bus_load=ns.max_bus_load, host=ns.host, port=ns.port,
        logical_address=ns.logical_address, tester_address=ns.tester_address,
        activation_type=ns.activation_type, vin=ns.vin,
    )  # fmt: skip


class Waiting:
    """The bounds of one hook call: its deadline and its cancellation event."""

    def __init__(self, who: str, deadline: float, cancelled: threading.Event | None) -> None:
        self.who = who
        self.deadline = deadline
        self.cancelled = cancelled if cancelled is not None else threading.Event()

    def check(self) -> float:
        """Seconds left, or ``Interrupted`` once the deadline passed or the call was cancelled
        (the engine sets ``ctx.cancelled`` at the deadline too: the deadline is named first)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Interrupted(expired=True)
        if self.cancelled.is_set():
            raise Interrupted(expired=False)
        return remaining

    def sleep(self, seconds: float) -> None:
        self.cancelled.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))


def describe(link: LinkSettings, transport: TransportSettings) -> str:
    """Where requests go, for messages about an ECU that does not answer."""
    if transport.kind == "doip":
        return (
            f"DoIP entity {transport.host}:{transport.port}, logical address "
            f"{transport.logical_address:#06x}"
        )
    return link.describe()


def open_connection(
    link: LinkSettings, transport: TransportSettings, waiting: Waiting, name: str
) -> BaseConnection:
    """The udsoncan connection for one hook call (not yet opened): the transport factory."""
    if transport.kind == "doip":
        # imported here: doip builds on this module (Waiting, LinkFailure)
        from mender_orchestrator_canbus.doip import DoipConnection

        return DoipConnection(transport, waiting, name)
    if _kernel_isotp(link, transport):
        return KernelIsoTpConnection(link, transport, waiting, name)
    return CanConnection(link, transport, waiting, name)


# ---------------------------------------------------------------------- one shared bus


class SharedBus:
    """One python-can bus used by every Component of this process on its channel.

    There is no reader thread: whichever ISO-TP layer asks for a frame while nobody else is
    reading reads the bus itself and hands what it gets to the others' queues. A Component
    alone on its bus thus reads it directly, without a thread hop more than can-isotp's own.
    """

    _registry: dict[tuple[Any, ...], SharedBus] = {}  # noqa: RUF012 - process-wide by design
    _registry_lock = threading.Lock()

    def __init__(self, key: tuple[Any, ...], bus: can.BusABC, link: LinkSettings) -> None:
        self.key = key
        self.bus = bus
        self.link = link
        self.users = 0
        self.send_lock = threading.Lock()
        self.next_free = 0.0  # the bus-load cap: when this tester may send its next frame
        self._readers: list[queue.SimpleQueue[can.Message]] = []
        self._read_lock = threading.Lock()

    @classmethod
    def acquire(cls, link: LinkSettings) -> SharedBus:
        key = (link.interface, link.channel, link.bitrate, link.fd, link.data_bitrate)
        with cls._registry_lock:
            shared = cls._registry.get(key)
            if shared is None:
                shared = cls(key, link.open_bus(), link)
                cls._registry[key] = shared
            shared.users += 1
            return shared

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            del self._registry[self.key]
        with self._read_lock:  # a read under way ends within _READ
            self.bus.shutdown()

    def attach(self) -> queue.SimpleQueue[can.Message]:
        reader: queue.SimpleQueue[can.Message] = queue.SimpleQueue()
        with self._registry_lock:
            self._readers = [*self._readers, reader]
        return reader

    def detach(self, reader: queue.SimpleQueue[can.Message]) -> None:
        with self._registry_lock:
            self._readers = [r for r in self._readers if r is not reader]

    def receive(self, reader: queue.SimpleQueue[can.Message], timeout: float) -> can.Message | None:
        """The next frame for ``reader``, waiting up to ``timeout`` seconds."""
        try:
            return reader.get_nowait()
        except queue.Empty:
            pass
        if not self._read_lock.acquire(blocking=False):
            try:
                return reader.get(timeout=timeout)  # another layer reads and hands it over
            except queue.Empty:
                return None
        try:
            msg = self.bus.recv(timeout)
        except can.CanError as exc:  # a broken adapter: the requests will time out
            _log.debug("reading %s failed: %s", self.link.describe(), exc)
            return None
        finally:
            self._read_lock.release()
        if msg is None or msg.is_error_frame or msg.is_remote_frame:
            return None
        for other in self._readers:
            if other is not reader:
                other.put(msg)
        return msg


class Transmitter:
    """can-isotp's transmit function: never raises (that would kill can-isotp's thread).

    A refused frame is tried again after a pause that starts at one frame time and doubles, for
    up to N_As; after that the transfer is given up and ``failure`` says why. With
    ``--max-bus-load`` frames are spaced so that this tester uses at most that share of the bus.
    """

    def __init__(self, shared: SharedBus, transport: TransportSettings, waiting: Waiting) -> None:
        self.shared = shared
        self.transport = transport
        self.waiting = waiting
        self.failure: str | None = None
        self.closing = False  # the connection closes: stop retrying (can-isotp waits 1 s)
        # can-isotp marks a request sent before it hands over its last frame: the answer's
        # timer starts once that frame is out (``last_done``), however long it was refused
        self.busy = False
        self.last_done = 0.0
        link = shared.link
        self.bitrate = link.bitrate or 500_000  # only for pauses when the rate is unknown
        self.load = (transport.max_bus_load or 100) / 100

    def __call__(self, frame: isotp.CanMessage) -> None:
        if self.failure is not None:
            return  # the transfer is being abandoned: do not queue its remaining frames
        self.send(can.Message(
            arbitration_id=frame.arbitration_id, data=frame.data,
            is_extended_id=frame.is_extended_id, is_fd=frame.is_fd,
            bitrate_switch=frame.bitrate_switch,
        ))  # fmt: skip

    def send(self, msg: can.Message) -> None:
        seconds = frame_seconds(
            len(msg.data), extended=msg.is_extended_id, fd=msg.is_fd, brs=msg.bitrate_switch,
            bitrate=self.bitrate, data_bitrate=self.shared.link.data_bitrate,
        )  # fmt: skip
        self.busy = True
        try:
            with self.shared.send_lock:
                if self.transport.max_bus_load is not None:
                    self._pace(seconds)
                self._send(msg, seconds)
        finally:
            self.busy = False
            self.last_done = time.monotonic()

    def _pace(self, seconds: float) -> None:
        """A token bucket: frames keep to the cap on average, and a thread that slept longer
        than asked may catch up by a few frames (``_BURST``) instead of losing the time."""
        shared = self.shared
        spacing = seconds / self.load
        now = time.monotonic()
        if shared.next_free > now:
            self.waiting.sleep(shared.next_free - now)
        shared.next_free = max(shared.next_free, now - _BURST * spacing) + spacing

    def _send(self, msg: can.Message, seconds: float) -> None:
        give_up = time.monotonic() + self.transport.n_as
        pause = seconds
        attempts = 0
        while True:
            attempts += 1
            try:
                self.shared.bus.send(msg)
                return
            except (can.CanError, OSError) as exc:
                reason = _reason(exc)
                queue_full = _error_code(exc) in _QUEUE_FULL
            now = time.monotonic()
            if (
                now >= give_up
                or now >= self.waiting.deadline
                or self.waiting.cancelled.is_set()
                or self.closing
            ):
                self.failure = (
                    f"the CAN interface kept refusing a frame for N_As "
                    f"({self.transport.n_as:g} s, {attempts} attempts): {reason}"
                )
                return
            self.waiting.sleep(min(pause, give_up - now))
            # a full queue frees a slot per frame time: waiting longer would leave the bus idle
            pause = seconds if queue_full else min(pause * 2, _BACKOFF_MAX)


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "error_code", None) or getattr(exc, "errno", None)
    return code if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    code = _error_code(exc)
    if code in _SEND_ERRORS:
        return _SEND_ERRORS[code]
    text = str(exc)
    lowered = text.lower().replace("-", "").replace(" ", "")
    if "busoff" in lowered:
        return f"the controller is bus-off ({text})"
    if "passive" in lowered:
        return f"the controller is error-passive ({text})"
    return text or type(exc).__name__


# ---------------------------------------------------------------------- can-isotp in Python


class CanConnection(BaseConnection):
    """udsoncan's connection over can-isotp, every wait bounded (see the module docstring)."""

    def __init__(
        self, link: LinkSettings, transport: TransportSettings, waiting: Waiting, name: str
    ) -> None:
        super().__init__(name)
        self.link = link
        self.transport = transport
        self.waiting = waiting
        self._shared: SharedBus | None = None
        self._reader: queue.SimpleQueue[can.Message] | None = None
        self._stack: isotp.TransportLayer | None = None
        self._tx: Transmitter | None = None
        self._request: isotp.TransportLayer.SendRequest | None = None
        self._isotp_error: str | None = None
        self._no_flow_control = False  # the ECU let N_Bs run out: its silence, not the link's
        self._sent = 0.0  # when the last request was handed over

    def open(self) -> CanConnection:
        try:
            self._shared = SharedBus.acquire(self.link)
        except Exception as exc:  # python-can raises backend-specific errors (OSError, ...)
            raise InterfaceError(
                f"{self.waiting.who}: cannot open the CAN bus ({self.link.describe()}): {exc}"
            ) from exc
        self._reader = self._shared.attach()
        self._tx = Transmitter(self._shared, self.transport, self.waiting)
        params = self.link.isotp_params(timeout=1.0, max_frame_size=_MAX_PDU,
                                        logger=f"{__name__}.isotp")  # fmt: skip
        params.update(
            blocking_send=False,  # specific_send waits for the request itself, in bounded slices
            rx_flowcontrol_timeout=_ms(self.transport.n_bs),
            rx_consecutive_frame_timeout=_ms(self.transport.n_cr),
            wftmax=self.transport.fc_wait_max,
        )
        self._stack = isotp.TransportLayer(
            rxfn=self._receive, txfn=self._tx, address=self.link.isotp_address(), params=params,
            error_handler=self._on_error, read_timeout=_READ,
        )  # fmt: skip
        wake_up = self._stack.post_send_callback

        def sending(request: isotp.TransportLayer.SendRequest) -> None:
            self._request = request  # to wait on its completion in specific_send
            if wake_up is not None:
                wake_up(request)

        self._stack.post_send_callback = sending
        self._stack.start()
        return self

    def close(self) -> None:
        if self._tx is not None:
            self._tx.closing = True
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
        if self._shared is not None:
            assert self._reader is not None
            self._shared.detach(self._reader)
            self._shared.release()
            self._shared = None

    def is_open(self) -> bool:
        return self._stack is not None

    def _receive(self, timeout: float) -> isotp.CanMessage | None:
        assert self._shared is not None and self._reader is not None
        msg = self._shared.receive(self._reader, timeout)
        if msg is None:
            return None
        return isotp.CanMessage(
            arbitration_id=msg.arbitration_id, data=bytes(msg.data), extended_id=msg.is_extended_id,
            is_fd=msg.is_fd, bitrate_switch=msg.bitrate_switch,
        )  # fmt: skip

    def _on_error(self, error: Exception) -> None:
        _log.debug("%s: ISO-TP: %s", self.waiting.who, error)
        self._isotp_error = _isotp_reason(error, self.transport)
        self._no_flow_control = isinstance(error, isotp.errors.FlowControlTimeoutError)

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        """Hand the request to ISO-TP and wait until its last frame is out (the ECU's P2
        starts then), the ISO-TP layer gave up, or the hook's time is over."""
        assert self._stack is not None and self._tx is not None
        self._tx.failure = None
        self._isotp_error = None
        self._no_flow_control = False
        self._request = None
        self._stack.send(payload)
        request = self._request
        assert request is not None
        while not request.complete_event.wait(min(_POLL, self.waiting.check())):
            pass
        self.waiting.check()  # a transfer given up because the call ended says so
        self._sent = time.monotonic()
        if self._tx.failure is None and self._no_flow_control:
            # the ECU did not answer the first frame: retried like any request it left
            # unanswered (a TransferData block is sent again), within the hook's deadline
            raise Unfinished(self._isotp_error or "no flow-control frame from the ECU")
        if self._tx.failure is not None or not request.success:
            reason = self._tx.failure or self._isotp_error or "the ISO-TP layer gave it up"
            raise LinkFailure(f"could not send the request: {reason}")

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        assert self._stack is not None and self._tx is not None
        tx = self._tx
        wait = timeout if timeout is not None else 1e9
        while True:
            left = self.waiting.check()
            if tx.failure is not None:
                raise LinkFailure(f"could not send the request: {tx.failure}")
            limit = max(self._sent, tx.last_done) + wait
            now = time.monotonic()
            if now >= limit and not tx.busy:
                raise TimeoutException(f"no answer within {wait:.3f} s")  # type: ignore[no-untyped-call]
            frame = self._stack.recv(block=True, timeout=max(0.001, min(limit - now, left, _POLL)))
            if frame is not None:
                return bytes(frame)
            if self._isotp_error is not None and "consecutive" in self._isotp_error:
                # not a TimeoutException: udsoncan would report that as P2 running out
                raise Unfinished(f"the answer broke off: {self._isotp_error}")

    def empty_rxqueue(self) -> None:
        if self._stack is not None:
            while self._stack.recv(block=False) is not None:
                pass

    def send_frame(self, msg: can.Message) -> None:
        """One CAN frame outside ISO-TP (the single frame of a functional request), refused
        frames retried as ISO-TP's are; ``LinkFailure`` once N_As is over."""
        assert self._shared is not None
        tx = Transmitter(self._shared, self.transport, self.waiting)
        tx.send(msg)
        self.waiting.check()
        if tx.failure is not None:
            raise LinkFailure(f"could not send the frame: {tx.failure}")


class LinkFailure(Exception):
    """The request could not be put on the bus (or the TCP connection): not an ECU's silence,
    so it is not retried like one. The message says why; the caller names the request."""


class Unfinished(Exception):
    """The ECU left an ISO-TP exchange half done (no flow control within N_Bs, no consecutive
    frame within N_Cr): reported, and retried, as a request it did not answer."""


class Interrupted(Exception):
    """A wait ended by the hook's deadline (``expired``) or by ``ctx.cancelled``."""

    def __init__(self, expired: bool) -> None:
        super().__init__("deadline" if expired else "cancelled")
        self.expired = expired

    def describe(self, who: str, what: str) -> str:
        if self.expired:
            return f"{who}: the Interface timeout expired during {what}"
        return f"{who}: stopped during {what}: the call was cancelled"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _isotp_reason(error: Exception, transport: TransportSettings) -> str:
    errors = isotp.errors
    if isinstance(error, errors.MaximumWaitFrameReachedError | errors.UnsupportedWaitFrameError):
        return (
            f"the ECU sent more flow-control WAIT frames than --fc-wait-max="
            f"{transport.fc_wait_max} allows"
        )
    if isinstance(error, isotp.errors.FlowControlTimeoutError):
        return f"no flow-control frame from the ECU within N_Bs ({transport.n_bs:g} s, --n-bs)"
    if isinstance(error, isotp.errors.ConsecutiveFrameTimeoutError):
        return f"no consecutive frame from the ECU within N_Cr ({transport.n_cr:g} s, --n-cr)"
    return str(error)


# ---------------------------------------------------------------------- the kernel's ISO-TP


def _kernel_isotp(link: LinkSettings, transport: TransportSettings) -> bool:
    if transport.isotp == "user":
        return False
    if transport.isotp == "kernel":
        return True
    # the bus-load cap is applied frame by frame, which only the Python ISO-TP layer allows
    if transport.max_bus_load is not None:
        return False
    return link.interface == "socketcan" and kernel_has_isotp()


def kernel_has_isotp() -> bool:
    """Whether this kernel offers CAN_ISOTP sockets (Linux 5.10 and later, or the module)."""
    protocol = getattr(socket, "CAN_ISOTP", None)
    if protocol is None:
        return False
    try:
        socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, protocol).close()
    except OSError:
        return False
    return True


class KernelIsoTpConnection(BaseConnection):
    """udsoncan's ``IsoTPSocketConnection`` on the kernel's CAN_ISOTP socket (socketcan only;
    not exercised by the tests here: this machine has no CAN_ISOTP). The kernel sends the
    frames and handles flow control itself, so its transmit queue cannot stall a Python thread;
    a send that blocks past the socket timeout fails the request."""

    def __init__(
        self, link: LinkSettings, transport: TransportSettings, waiting: Waiting, name: str
    ) -> None:
        super().__init__(name)
        self.link = link
        self.transport = transport
        self.waiting = waiting
        self.name = name
        self._inner: Any = None

    def open(self) -> KernelIsoTpConnection:
        link = self.link
        try:
            sock = isotp.socket(timeout=_POLL)
            sock.set_fc_opts(bs=0, stmin=0, wftmax=self.transport.fc_wait_max)
            if link.padding is not None:
                sock.set_opts(txpad=link.padding, rxpad=link.padding)
            if link.fd:
                sock.set_ll_opts(
                    mtu=isotp.socket.LinkLayerProtocol.CAN_FD,
                    tx_dl=64,
                    tx_flags=1 if link.data_bitrate else 0,
                )
            inner = IsoTPSocketConnection(
                link.channel, link.isotp_address(), self.name, tpsock=sock
            )
            inner.open()
        except OSError as exc:
            raise InterfaceError(
                f"{self.waiting.who}: cannot open a kernel ISO-TP socket on {link.channel} "
                f"(--isotp=kernel; --isotp=user uses can-isotp instead): {exc}"
            ) from exc
        self._inner = inner
        return self

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def is_open(self) -> bool:
        return self._inner is not None

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        self.waiting.check()
        try:
            self._inner.specific_send(payload)
        except OSError as exc:
            raise LinkFailure(f"could not send the request: {_reason(exc)}") from None

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        limit = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            left = min(limit - time.monotonic(), self.waiting.check())
            if left <= 0:
                raise TimeoutException(f"no answer within {timeout:.3f} s")  # type: ignore[no-untyped-call]
            try:
                frame: bytes | None = self._inner.specific_wait_frame(min(left, _POLL))
            except TimeoutException:
                continue
            return frame

    def empty_rxqueue(self) -> None:
        self._inner.empty_rxqueue()
