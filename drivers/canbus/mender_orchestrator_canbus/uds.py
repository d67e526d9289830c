"""A UDS tester session on one ECU, built from python-can, can-isotp and udsoncan.

``UdsSession`` opens the bus for the length of one hook call and offers the handful of
operations flashing needs. Every request goes through ``_call``, which applies the hook's
deadline and turns udsoncan/can-isotp/python-can exceptions into ``InterfaceError`` messages
naming the service (with its bytes) and the NRC, so a user sees what the ECU refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import can
import udsoncan
from orchestrator_core.driver_api import InterfaceError, InterfaceTimeout
from udsoncan.client import Client
from udsoncan.connections import BaseConnection
from udsoncan.exceptions import (
    InvalidResponseException,
    NegativeResponseException,
    TimeoutException,
    UnexpectedResponseException,
)
from udsoncan.Response import Response
from udsoncan.services.CommunicationControl import CommunicationControl
from udsoncan.services.ControlDTCSetting import ControlDTCSetting
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl
from udsoncan.typing import ClientConfig

from mender_orchestrator_canbus.args import DriverSettings
from mender_orchestrator_canbus.image import Segment
from mender_orchestrator_canbus.late import SkipLateAnswers
from mender_orchestrator_canbus.link import FUNCTIONAL_IDS
from mender_orchestrator_canbus.transport import (
    CanConnection,
    Interrupted,
    LinkFailure,
    Unfinished,
    Waiting,
    describe,
    open_connection,
)

T = TypeVar("T")

ACTIVE_SESSION_DID = 0xF186  # ISO 14229-1 activeDiagnosticSessionDataIdentifier
Code = Response.Code  # negative response codes (ISO 14229-1 annex A)
_BUSY_PAUSE = 0.05  # seconds between repeats of a request the ECU answered NRC 0x21 (busy)
# udsoncan's name for the request timeout, which is set to the time left before the deadline:
# when it fires, the deadline cut the wait short, even if our clock reads a moment before it
# (the transport counts the wait from the request's last frame, sent before udsoncan waits)
_OVERALL_TIMEOUT = "Global request timeout"
# NRCs an ECU keeps to itself for a functional request (ISO 14229-1): the same request sent
# to it physically, for want of a functional id, is not an error when it answers one of these
_NOT_FOR_THIS_ECU = frozenset({0x11, 0x12, 0x31, 0x7E, 0x7F})

_log = logging.getLogger(__name__)

# udsoncan logs a warning or an error for each exception it raises; every one of them reaches
# the user as our own message, with the service and the Component named, so its copies go
_UDSONCAN_NAME = "mender-orchestrator-canbus"
for _name in (f"UdsClient[{_UDSONCAN_NAME}]", f"Connection[{_UDSONCAN_NAME}]"):
    logging.getLogger(_name).addFilter(lambda record: record.levelno < logging.WARNING)


class NoAnswer(InterfaceError):
    """The ECU did not answer in time: the one failure worth retrying."""


class Refused(InterfaceError):
    """The ECU answered with a negative response code (NRC)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class TextCodec(udsoncan.DidCodec):
    """A DID holding text of any length (versions and serial numbers differ per ECU);
    fixed-size records padded with NUL, space or 0xFF are trimmed."""

    def encode(self, *did_value: Any) -> bytes:
        return str(did_value[0]).encode("ascii")

    def decode(self, did_payload: bytes) -> Any:
        return did_payload.rstrip(b"\x00\xff ").decode("ascii", errors="replace")

    def __len__(self) -> int:
        raise udsoncan.DidCodec.ReadAllRemainingData


class RawCodec(udsoncan.DidCodec):
    """A DID holding bytes as they are (a fingerprint record)."""

    def encode(self, *did_value: Any) -> bytes:
        return bytes(did_value[0])

    def decode(self, did_payload: bytes) -> Any:
        return bytes(did_payload)

    def __len__(self) -> int:
        raise udsoncan.DidCodec.ReadAllRemainingData


class ByteCodec(udsoncan.DidCodec):
    """A one-byte DID, read as an int."""

    def encode(self, *did_value: Any) -> bytes:
        return bytes((int(did_value[0]),))

    def decode(self, did_payload: bytes) -> Any:
        return did_payload[0]

    def __len__(self) -> int:
        return 1


class UdsSession:
    """An open tester connection to one ECU; use as a context manager."""

    def __init__(
        self,
        settings: DriverSettings,
        who: str,
        deadline: float,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        cancelled: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.who = who
        self.deadline = deadline
        self.log = log
        self.cancelled = cancelled
        self._where = describe(settings.link, settings.transport)
        self._client: Client | None = None
        self._connection: BaseConnection | None = None
        self._late: SkipLateAnswers | None = None
        self._lock = threading.Lock()  # one request at a time: the keep-alive shares the link
        self._keep_alive: threading.Thread | None = None
        self._closing = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> UdsSession:
        settings = self.settings
        waiting = Waiting(self.who, self.deadline, self.cancelled)
        self._connection = open_connection(
            settings.link, settings.transport, waiting, _UDSONCAN_NAME
        )
        try:
            self._late = SkipLateAnswers(self._connection)
            self._client = self._open_client(self._late)
        except Interrupted as exc:
            raise InterfaceTimeout(exc.describe(self.who, "opening the connection")) from None
        return self

    def _open_client(self, connection: BaseConnection) -> Client:
        config = dict(udsoncan.configs.default_client_config)
        config.update(
            p2_timeout=self.settings.p2_timeout,
            p2_star_timeout=self.settings.p2_star_timeout,
            # our timeouts are the integrator's, not whatever the ECU advertises
            use_server_timing=False,
            logger_name=_UDSONCAN_NAME,
            server_address_format=self.settings.address_format,
            server_memorysize_format=self.settings.memorysize_format,
            data_identifiers={
                self.settings.version_did: TextCodec(),
                self.settings.version_write_did: TextCodec(),
                self.settings.serial_did: TextCodec(),
                self.settings.bank_did: ByteCodec(),
                ACTIVE_SESSION_DID: ByteCodec(),
            },
        )
        client = Client(connection, config=cast(ClientConfig, config))
        client.open()
        return client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._keep_alive is not None:
            self._keep_alive.join()
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> Client:
        assert self._client is not None, "UdsSession used outside its with-block"
        return self._client

    # ------------------------------------------------------------------ one request

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """``request`` under the hook's deadline; a request the ECU answers NRC 0x21
        (busyRepeatRequest) is repeated for up to P2* before that answer counts."""
        busy_until = time.monotonic() + self.settings.p2_star_timeout
        while True:
            try:
                with self._lock:
                    return self._call_once(what, request)
            except Refused as exc:
                if exc.code != Code.BusyRepeatRequest or time.monotonic() >= busy_until:
                    raise
            self.log.debug("%s: the ECU is busy (NRC 0x21); repeating", what)
            self._pause(_BUSY_PAUSE, what)

    def _pause(self, seconds: float, what: str) -> None:
        """Sleep before asking again, but not past the hook's deadline nor once the call is
        cancelled: either ends the state here, saying what it was waiting for."""
        waiting = Waiting(self.who, self.deadline, self.cancelled)
        waiting.sleep(seconds)
        try:
            waiting.check()
        except Interrupted as exc:
            raise InterfaceTimeout(exc.describe(self.who, what)) from None

    def _call_once(self, what: str, request: Callable[[], T]) -> T:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise InterfaceTimeout(f"{self.who}: the Interface timeout expired before {what}")
        self.client.set_config("request_timeout", remaining)
        try:
            return request()
        except NegativeResponseException as exc:
            code = exc.response.code or 0
            raise Refused(
                f"{self.who}: {what} failed: the ECU answered NRC {code:#04x} "
                f"{exc.response.code_name}{_hint(code)}",
                code,
            ) from None
        except (TimeoutException, Unfinished) as exc:
            if time.monotonic() >= self.deadline or _OVERALL_TIMEOUT in str(exc):
                raise InterfaceTimeout(
                    f"{self.who}: the Interface timeout expired during {what}"
                ) from None
            raise NoAnswer(
                f"{self.who}: {what}: no answer from the ECU ({self._where}): {exc}"
            ) from None
        except Interrupted as exc:
            raise InterfaceTimeout(exc.describe(self.who, what)) from None
        except LinkFailure as exc:
            raise InterfaceError(f"{self.who}: {what}: {exc}") from None
        except (InvalidResponseException, UnexpectedResponseException) as exc:
            raise InterfaceError(
                f"{self.who}: {what}: unexpected answer from the ECU: {exc}"
            ) from None

    # ------------------------------------------------------------------ reading

    def read(self, did: int) -> Any:
        self.client.config["data_identifiers"].setdefault(did, TextCodec())
        response = self._call(
            f"ReadDataByIdentifier {did:#06x} (0x22)",
            lambda: self.client.read_data_by_identifier(did),
        )
        assert response is not None
        return response.service_data.values[did]

    def wait_until_answering(self, did: int) -> Any:
        """Read ``did`` once the ECU is back from a reset: retry while it is silent or busy
        (NRC 0x21) for up to ``--reset-wait`` seconds."""
        limit = min(self.deadline, time.monotonic() + self.settings.reset_wait)
        while True:
            try:
                return self.read(did)
            except NoAnswer as exc:
                if time.monotonic() >= limit:
                    raise NoAnswer(
                        f"{exc.message} (waited {self.settings.reset_wait:g} s for the ECU to "
                        f"come back from its reset)"
                    ) from None
            except Refused as exc:
                if exc.code != Code.BusyRepeatRequest or time.monotonic() >= limit:
                    raise
                self._pause(min(0.05, self.settings.p2_timeout), f"ReadDataByIdentifier {did:#06x}")

    def check_default_session(self) -> None:
        """Fail unless the ECU reports the default session (0x01) in DID 0xF186; ECUs that do
        not implement the DID (NRC 0x31) are taken at their word."""
        try:
            session = self.read(ACTIVE_SESSION_DID)
        except Refused as exc:
            if exc.code == Code.RequestOutOfRange:
                self.log.debug("DID 0xF186 not supported; session not checked")
                return
            raise
        if session != DiagnosticSessionControl.Session.defaultSession:
            raise InterfaceError(
                f"{self.who}: after its reset the ECU reports diagnostic session {session:#04x} "
                f"(DID 0xF186), not the default session 0x01"
            )

    # ------------------------------------------------------------------ programming

    def change_session(self, name: str, session: int) -> None:
        """DiagnosticSessionControl; the P2* the ECU advertises is honoured when it is longer
        than ``--p2-star-timeout`` (an ECU knows how long its erase takes)."""
        response = self._call(
            f"DiagnosticSessionControl {name} (0x10 {session:#04x})",
            lambda: self.client.change_session(session),
        )
        advertised = response.service_data.p2_star_server_max if response is not None else None
        if advertised:
            self.client.set_config(
                "p2_star_timeout", max(self.settings.p2_star_timeout, float(advertised))
            )

    # ------------------------------------------------------------------ functional requests

    def _functional_frame(self, payload: bytes) -> can.Message | None:
        """``payload`` as a single frame to the functional id, where the addressing has one."""
        link = self.settings.link
        default_id = FUNCTIONAL_IDS.get(link.addressing)
        if (
            not isinstance(self._connection, CanConnection)
            or default_id is None
            or len(payload) > 7
        ):
            return None
        data = bytes((len(payload),)) + payload
        if link.padding is not None:
            data = data.ljust(8, bytes((link.padding,)))
        return can.Message(
            arbitration_id=self.settings.profile.functional_id or default_id,
            data=data,
            is_extended_id=link.addressing == "normal-29",
            is_fd=link.fd,
        )

    def functional(self, what: str, payload: bytes) -> None:
        """A request to every ECU with the positive response suppressed (bit 0x80 of the
        sub-function): CommunicationControl, ControlDTCSetting, TesterPresent. Sent on the
        functional id where the addressing has one, else to this ECU, which may refuse it."""
        frame = self._functional_frame(payload)
        if frame is None:
            self._physical_suppressed(what, payload)
            return
        connection = self._connection
        assert isinstance(connection, CanConnection)
        try:
            # never between a request and its answer, nor from two threads at once: some
            # python-can interfaces (remote) are not safe for concurrent sends
            with self._lock:
                connection.send_frame(frame)
        except LinkFailure as exc:
            raise InterfaceError(f"{self.who}: {what} (functional): {exc}") from None
        except Interrupted as exc:
            raise InterfaceTimeout(exc.describe(self.who, f"{what} (functional)")) from None

    def _physical_suppressed(self, what: str, payload: bytes) -> None:
        sid, sub = payload[0], payload[1] & 0x7F
        requests: dict[int, Callable[[], Any]] = {
            CommunicationControl._sid: lambda: self.client.communication_control(sub, payload[2]),
            ControlDTCSetting._sid: lambda: self.client.control_dtc_setting(sub),
            0x3E: lambda: self.client.tester_present(),
        }

        def send() -> Any:
            with self.client.suppress_positive_response:
                return requests[sid]()

        try:
            self._call(what, send)
        except Refused as exc:
            # what an ECU would not even answer to a functional request: it lacks the service
            if exc.code not in _NOT_FOR_THIS_ECU:
                raise
            self.log.debug("%s", exc.message)

    def keep_alive(self) -> None:
        """TesterPresent (0x3E 0x80) every ``tester_present_interval`` seconds until the
        session closes, so the ECU stays in its programming session through long waits."""
        interval = self.settings.profile.tester_present_interval
        if interval <= 0 or self._keep_alive is not None:
            return

        def run() -> None:
            while not self._closing.wait(interval):
                try:
                    self.functional("TesterPresent (0x3E 0x80)", b"\x3e\x80")
                except InterfaceError as exc:  # the next real request reports the link
                    self.log.debug("%s", exc.message)

        self._keep_alive = threading.Thread(target=run, name="tester-present", daemon=True)
        self._keep_alive.start()

    # ------------------------------------------------------------------ programming

    def unlock(self, key_for: Callable[[int, bytes], bytes | None]) -> None:
        """SecurityAccess at each level of the profile, in order; NRC 0x37 (the ECU's delay
        after power-on or after wrong keys) is waited out for up to ``security_delay``."""
        for level in self.settings.profile.security_levels:
            seed = self._request_seed(level)
            if not any(seed):
                continue  # an all-zero seed means the level is already unlocked
            key = key_for(level, seed)
            if key is None:
                raise InterfaceError(
                    f"{self.who}: no plugin answered canbus_security_key for level {level:#04x}"
                )
            self._send_key(level, key)

    def _send_key(self, level: int, key: bytes) -> None:
        self._call(
            f"SecurityAccess sendKey (0x27 {level + 1:#04x})",
            lambda: self.client.send_key(level + 1, key),
        )

    def _request_seed(self, level: int) -> bytes:
        what = f"SecurityAccess requestSeed (0x27 {level:#04x})"
        delay_until = time.monotonic() + self.settings.profile.security_delay
        while True:
            try:
                response = self._call(what, lambda: self.client.request_seed(level))
                assert response is not None
                return bytes(response.service_data.seed)
            except Refused as exc:
                if exc.code != Code.RequiredTimeDelayNotExpired or time.monotonic() >= delay_until:
                    raise
            self.log.info("%s: the ECU asks to wait (NRC 0x37); asking again", what)
            self._pause(
                min(0.5, max(0.01, delay_until - time.monotonic())),
                f"{what}: waiting out NRC 0x37 requiredTimeDelayNotExpired",
            )

    def routine(self, routine_id: int, name: str, data: bytes, *, refusal: str) -> None:
        """Start a routine that must succeed: its status record's first byte is 0x00 (or the
        record is empty); anything else fails with ``refusal`` saying what was refused."""
        response = self._call(
            f"RoutineControl {name} (0x31 0x01 RID {routine_id:#06x})",
            lambda: self.client.start_routine(routine_id, data),
        )
        assert response is not None
        status = bytes(response.service_data.routine_status_record or b"")
        if status[:1] not in (b"", b"\x00"):
            raise InterfaceError(
                f"{self.who}: RoutineControl {name} (RID {routine_id:#06x}) {refusal}: "
                f"status record {status.hex()}"
            )

    def _location(self, address: int, size: int) -> udsoncan.MemoryLocation:
        return udsoncan.MemoryLocation(
            address,
            size,
            address_format=self.settings.address_format,
            memorysize_format=self.settings.memorysize_format,
        )

    def erase(self, address: int, size: int) -> None:
        location = self._location(address, size)
        record = (
            location.alfid.get_byte()
            + location.get_address_bytes()
            + location.get_memorysize_bytes()
        )
        self.routine(
            self.settings.profile.erase_routine,
            "eraseMemory",
            record,
            refusal=f"reported failure erasing {size} bytes at {address:#x}",
        )

    def write(self, did: int, value: str | bytes) -> None:
        codec = RawCodec() if isinstance(value, bytes) else TextCodec()
        self.client.config["data_identifiers"][did] = codec
        self._call(
            f"WriteDataByIdentifier {did:#06x} (0x2E)",
            lambda: self.client.write_data_by_identifier(did, value),
        )

    def download(
        self,
        segment: Segment,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """RequestDownload with the profile's dataFormatIdentifier (the payload goes as it
        is: compressed or encrypted images are the ECU's to unpack), TransferData blocks as
        large as the ECU allows, RequestTransferExit; ``progress`` hears the bytes of this
        segment sent after each block."""
        size = len(segment.data)
        dfi = self.settings.profile.data_format
        response = self._call(
            f"RequestDownload of {size} bytes at {segment.address:#x} (0x34)",
            lambda: self.client.request_download(
                self._location(segment.address, size),
                udsoncan.DataFormatIdentifier(compression=dfi >> 4, encryption=dfi & 0x0F),
            ),
        )
        assert response is not None
        # maxNumberOfBlockLength counts the service id and the block sequence counter too
        block = int(response.service_data.max_length) - 2
        if block < 1:
            raise InterfaceError(
                f"{self.who}: RequestDownload: the ECU announced a maximum block length of "
                f"{block + 2} bytes, too small to carry data"
            )
        blocks = -(-size // block)
        started = time.monotonic()
        view = memoryview(segment.data)
        for index in range(1, blocks + 1):
            self._transfer(index, blocks, bytes(view[(index - 1) * block : index * block]))
            if progress is not None:
                progress(min(index * block, size))
        self._call("RequestTransferExit (0x37)", lambda: self.client.request_transfer_exit())
        elapsed = max(time.monotonic() - started, 1e-6)
        self.log.info(
            "transferred %d bytes in %d blocks of up to %d bytes (%.1f KiB/s)",
            size,
            blocks,
            block,
            size / elapsed / 1024,
        )

    def upload(self, address: int, size: int) -> bytes:
        """RequestUpload of ``size`` bytes at ``address`` and its TransferData blocks."""
        response = self._call(
            f"RequestUpload of {size} bytes at {address:#x} (0x35)",
            lambda: self.client.request_upload(self._location(address, size)),
        )
        assert response is not None
        parts: list[bytes] = []
        received = 0
        index = 0
        while received < size:
            index += 1
            part = self._transfer(index, None, None)
            if not part:
                raise InterfaceError(
                    f"{self.who}: TransferData (0x36) upload block {index} came back empty "
                    f"after {received} of {size} bytes"
                )
            parts.append(part)
            received += len(part)
        self._call("RequestTransferExit (0x37)", lambda: self.client.request_transfer_exit())
        return b"".join(parts)[:size]

    def _transfer(self, index: int, blocks: int | None, chunk: bytes | None) -> bytes:
        """One TransferData exchange; a block that gets no answer is sent again with the same
        counter (the ECU acknowledges a repeated block without writing it twice)."""
        counter = index & 0xFF
        of = f" of {blocks}" if blocks is not None else ""
        what = f"TransferData (0x36) block {index}{of}, counter {counter:#04x}"
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._call(what, lambda: self.client.transfer_data(counter, chunk))
                break
            except NoAnswer as exc:
                if attempt == attempts:
                    raise NoAnswer(f"{exc.message} (sent {attempts} times)") from None
                assert self._late is not None
                self._late.repeated.add(counter)  # its first answer may yet come: skip it
                self.log.warning("%s: no answer, sending it again", what)
        assert response is not None
        return bytes(response.service_data.parameter_records or b"")

    def reset(self) -> None:
        """ECUReset of the profile's type. An ECU may reset before its answer is out: no
        answer is fine here, the next state waits for it to come back."""
        kind = self.settings.profile.reset_type
        try:
            self._call(
                f"ECUReset (0x11 {kind:#04x})",
                lambda: self.client.ecu_reset(kind),
            )
        except NoAnswer as exc:
            self.log.info("%s (the ECU may have reset before answering)", exc.message)

    def clear_dtcs(self) -> None:
        self._call(
            "ClearDiagnosticInformation (0x14 0xFFFFFF)", lambda: self.client.clear_dtc(0xFFFFFF)
        )


_HINTS = {
    Code.SecurityAccessDenied: (
        " (security access is locked: the session was left or the unlock failed)"
    ),
    Code.InvalidKey: (
        " (the key from the canbus_security_key hook was rejected; without a vendor plugin the "
        "driver uses the simulator's published algorithm, which a real ECU will refuse)"
    ),
    Code.ExceedNumberOfAttempts: " (too many wrong keys; the ECU now delays further attempts)",
    Code.ServiceNotSupportedInActiveSession: (
        " (the ECU is not in the session this service needs: did it reset?)"
    ),
}


def _hint(code: int) -> str:
    return _HINTS.get(code, "")
