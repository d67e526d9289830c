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
from typing import Any, BinaryIO, TypeVar, cast

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
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl
from udsoncan.services.ECUReset import ECUReset
from udsoncan.typing import ClientConfig

from mender_orchestrator_canbus.args import DriverSettings
from mender_orchestrator_canbus.transport import (
    Interrupted,
    LinkFailure,
    Waiting,
    describe,
    open_connection,
)

T = TypeVar("T")

ACTIVE_SESSION_DID = 0xF186  # ISO 14229-1 activeDiagnosticSessionDataIdentifier
Code = Response.Code  # negative response codes (ISO 14229-1 annex A)

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

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> UdsSession:
        settings = self.settings
        waiting = Waiting(self.who, self.deadline, self.cancelled)
        connection = open_connection(settings.link, settings.transport, waiting, _UDSONCAN_NAME)
        try:
            self._client = self._open_client(connection)
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
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> Client:
        assert self._client is not None, "UdsSession used outside its with-block"
        return self._client

    # ------------------------------------------------------------------ one request

    def _call(self, what: str, request: Callable[[], T]) -> T:
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
        except TimeoutException as exc:
            if time.monotonic() >= self.deadline:
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
                time.sleep(min(0.05, self.settings.p2_timeout))

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

    def enter_programming(self, key_for: Callable[[int, bytes], bytes | None]) -> None:
        """Default, extended, then programming session, then SecurityAccess at
        ``--security-level``. Starting from the default session matters after a failed
        attempt: an ECU still in its programming session refuses to go to extended (0x7E)."""
        sessions = DiagnosticSessionControl.Session
        for name, session in (
            ("defaultSession (0x10 0x01)", sessions.defaultSession),
            ("extendedDiagnosticSession (0x10 0x03)", sessions.extendedDiagnosticSession),
            ("programmingSession (0x10 0x02)", sessions.programmingSession),
        ):
            self._change_session(name, session)
        level = self.settings.security_level
        response = self._call(
            f"SecurityAccess requestSeed (0x27 {level:#04x})",
            lambda: self.client.request_seed(level),
        )
        assert response is not None
        seed = bytes(response.service_data.seed)
        if not any(seed):
            return  # an all-zero seed means the level is already unlocked
        key = key_for(level, seed)
        if key is None:
            raise InterfaceError(
                f"{self.who}: no plugin answered canbus_security_key for level {level:#04x}"
            )
        self._call(
            f"SecurityAccess sendKey (0x27 {level + 1:#04x})",
            lambda: self.client.send_key(level + 1, key),
        )

    def _change_session(self, name: str, session: int) -> None:
        self._call(f"DiagnosticSessionControl {name}", lambda: self.client.change_session(session))

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

    def _location(self, size: int) -> udsoncan.MemoryLocation:
        return udsoncan.MemoryLocation(
            self.settings.memory_address,
            size,
            address_format=self.settings.address_format,
            memorysize_format=self.settings.memorysize_format,
        )

    def erase(self, size: int) -> None:
        location = self._location(size)
        record = (
            location.alfid.get_byte()
            + location.get_address_bytes()
            + location.get_memorysize_bytes()
        )
        self.routine(self.settings.erase_routine, "eraseMemory", record, refusal="reported failure")

    def write_text(self, did: int, value: str) -> None:
        self._call(
            f"WriteDataByIdentifier {did:#06x} (0x2E)",
            lambda: self.client.write_data_by_identifier(did, value),
        )

    def download(
        self,
        image: BinaryIO,
        size: int,
        progress: Callable[[int, int | None, str], None] | None = None,
    ) -> None:
        """RequestDownload, TransferData blocks as large as the ECU allows, RequestTransferExit;
        ``progress`` (``ctx.progress``) hears the bytes flashed after each block."""
        response = self._call(
            f"RequestDownload of {size} bytes at {self.settings.memory_address:#x} (0x34)",
            lambda: self.client.request_download(self._location(size)),
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
        for index in range(1, blocks + 1):
            chunk = image.read(block)
            self._transfer(index, blocks, chunk)
            if progress is not None:
                progress(min(index * block, size), size, "bytes flashed")
        self._call("RequestTransferExit (0x37)", lambda: self.client.request_transfer_exit())
        elapsed = max(time.monotonic() - started, 1e-6)
        self.log.info(
            "transferred %d bytes in %d blocks of up to %d bytes (%.1f KiB/s)",
            size,
            blocks,
            block,
            size / elapsed / 1024,
        )

    def upload(self, size: int) -> bytes:
        """RequestUpload of ``size`` bytes at ``--memory-address`` and its TransferData blocks."""
        response = self._call(
            f"RequestUpload of {size} bytes at {self.settings.memory_address:#x} (0x35)",
            lambda: self.client.request_upload(self._location(size)),
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
                self.log.warning("%s: no answer, sending it again", what)
        assert response is not None
        return bytes(response.service_data.parameter_records or b"")

    def reset(self) -> None:
        self._call(
            "ECUReset hardReset (0x11 0x01)",
            lambda: self.client.ecu_reset(ECUReset.ResetType.hardReset),
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
