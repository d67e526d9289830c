"""The simulated ECU's UDS (ISO 14229-1) server logic, independent of the transport.

``Ecu.handle`` takes one request and returns the response bytes (positive, or a ``7F SID NRC``
negative response), sending ``7F SID 78`` (response pending) first for slow routines. The
session, security and transfer rules are those a typical OEM bootloader enforces:

* sessions: default 0x01, programming 0x02 (only from extended), extended 0x03 (not from
  programming); leaving a session relocks security and abandons a transfer; a non-default
  session falls back to default after S3 seconds without a request;
* SecurityAccess level 0x01/0x02 with a 4-byte random seed; a wrong key is NRC 0x35, the
  third in a row NRC 0x36 and a lockout during which requestSeed answers NRC 0x37;
* programming services need the programming session and an unlocked ECU; RequestDownload
  needs the range erased first; TransferData checks the block sequence counter (1, 2, ...
  0xFF, 0x00, ...) and acknowledges a repeated block without writing it again;
* single bank: the one bank is erased and reprogrammed in place; dual bank: downloads go to
  the bank not running, checkProgrammingDependencies makes it the boot bank, and the
  selectBank routine chooses the boot bank explicitly;
* an image may come in segments: each is erased, downloaded and checked (CRC-32, or a
  "signature", the SHA-256 of the segments, once after the last); an erase makes the bank
  invalid (the ECU then stays in its bootloader), a passing check valid again;
* ControlDTCSetting (0x85) and CommunicationControl (0x28), physical or functional, in a
  non-default session; ClearDiagnosticInformation (0x14); identity DIDs (VIN, part, version).
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from udsoncan.Request import Request
from udsoncan.Response import Response
from udsoncan.services.DiagnosticSessionControl import DiagnosticSessionControl

from mender_orchestrator_canbus.security import SIMULATOR_SECRET, simulator_key
from mender_orchestrator_canbus.simulator.flash import FlashStore

Code = Response.Code  # negative response codes (ISO 14229-1 annex A)
Session = DiagnosticSessionControl.Session

DEFAULT = Session.defaultSession
PROGRAMMING = Session.programmingSession
EXTENDED = Session.extendedDiagnosticSession
ACTIVE_SESSION_DID = 0xF186

FAULT_NAMES = (
    "drop-frames",
    "corrupt-block",
    "wrong-key",
    "refuse-erase",
    "fail-after",
    "reset-mid-transfer",
    "never-answer",
    "no-upload",
    "read-only-version",
    "busy",
    "seed-delay",
    "silent-reset",
    "late-answer",
)

_COUNTED_FAULTS = {  # fault name -> the ``Faults`` field holding its block count
    "drop-frames": "drop_frames",
    "corrupt-block": "corrupt_block",
    "fail-after": "fail_after",
    "reset-mid-transfer": "reset_after",
    "busy": "busy",
}
_FLAG_FAULTS = (
    "wrong-key",
    "refuse-erase",
    "no-upload",
    "read-only-version",
    "seed-delay",
    "silent-reset",
)
# the NRCs an ECU does not send to a functional request (ISO 14229-1 7.5)
_QUIET_FUNCTIONAL = frozenset({0x11, 0x12, 0x31, 0x7E, 0x7F})

# how many leading request bytes name a request in ``Ecu.trace`` (service, sub-function, id)
_LABEL_LENGTH = {0x10: 2, 0x11: 2, 0x22: 3, 0x27: 2, 0x28: 2, 0x2E: 3, 0x31: 4, 0x3E: 2, 0x85: 2}


class Nrc(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"NRC {code:#04x}")
        self.code = code


@dataclass
class EcuConfig:
    version_did: int = 0xF189
    serial_did: int = 0xF18C
    bank_did: int = 0xFD00
    erase_routine: int = 0xFF00
    check_routine: int = 0xFF01
    bank_routine: int = 0xF001
    memory_address: int = 0  # where every bank appears in the tester's address space
    bank_addresses: tuple[int, ...] = ()  # dual bank: where bank 0 and bank 1 appear instead
    security_levels: tuple[int, ...] = (0x01,)  # all must be unlocked to program
    # RequestDownload dataFormatIdentifiers accepted; the data is stored as it comes (a real
    # ECU would decompress or decrypt it: the simulator only shows it passed through intact)
    data_formats: tuple[int, ...] = (0x00,)
    require_dtc_off: bool = False  # refuse to erase unless ControlDTCSetting is off
    precondition_routine: int = 0x0203
    confirm_routine: int = 0xF002  # (dual bank) confirms the running bank
    fingerprint_did: int = 0xF15A
    functional_id: int | None = None  # None: the ISO 15765-4 id of the link's addressing
    identity: tuple[tuple[int, str], ...] = (
        (0xF190, "WMOSIMULATED00042"),  # VIN
        (0xF191, "BRK-4711"),  # ECU hardware part number
        (0xF193, "H3"),  # ECU hardware version
    )
    max_block_length: int = 4095  # maxNumberOfBlockLength announced (service id + counter + data)
    erase_time: float = 0.05
    check_time: float = 0.02
    boot_time: float = 0.1
    s3_timeout: float = 5.0
    lockout_time: float = 10.0
    p2_ms: int = 50
    p2_star_ms: int = 5000


@dataclass
class Faults:
    """Injected faults. Those that break a transfer fire once, so a rollback can succeed;
    ``wrong-key``, ``refuse-erase`` and ``never-answer`` describe the ECU and last."""

    drop_frames: int = 0  # TransferData requests that each lose one CAN frame
    corrupt_block: int | None = None  # flip a bit of this download block (1-based) in flash
    wrong_key: bool = False  # the ECU expects a different key than the published algorithm
    refuse_erase: bool = False  # eraseMemory answers NRC 0x22 conditionsNotCorrect
    fail_after: int | None = None  # after N blocks, TransferData answers NRC 0x72
    reset_after: int | None = None  # after N blocks, the ECU resets without answering
    never_answer: str | None = None  # "always", or "after-reset": silent once reset
    no_upload: bool = False  # RequestUpload is NRC 0x11 serviceNotSupported
    read_only_version: bool = False  # the version DID cannot be written (NRC 0x31)
    busy: int = 0  # this many requests are first answered NRC 0x21 busyRepeatRequest
    seed_delay: bool = False  # after each boot, requestSeed answers NRC 0x37 for lockout_time
    silent_reset: bool = False  # ECUReset resets at once, without a positive response
    # the answers to these TransferData blocks come only after the tester's repeats of them
    # have been answered, just before the answer to its next request (a queue in a gateway)
    late_answers: set[int] = field(default_factory=set)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        """From ``NAME`` / ``NAME=VALUE`` strings; ``ValueError`` names a bad one."""
        faults = cls()
        for spec in specs:
            name, _, value = spec.partition("=")
            if name in _COUNTED_FAULTS:
                if not value.isdigit() or (name == "corrupt-block" and int(value) < 1):
                    raise ValueError(
                        f"fault {name} needs a block count, e.g. {name}=3 (got {spec!r})"
                    )
                setattr(faults, _COUNTED_FAULTS[name], int(value))
            elif name in _FLAG_FAULTS and not value:
                setattr(faults, name.replace("-", "_"), True)
            elif name == "late-answer" and value.isdigit() and int(value) >= 1:
                faults.late_answers.add(int(value))
            elif name == "never-answer" and value in ("", "always", "after-reset"):
                faults.never_answer = value or "always"
            else:
                raise ValueError(
                    f"unknown fault {spec!r}; known: {', '.join(FAULT_NAMES)} "
                    f"(never-answer takes =always or =after-reset, late-answer a block number)"
                )
        return faults


@dataclass
class Transfer:
    upload: bool
    bank: int
    offset: int
    size: int
    done: int = 0
    expected: int = 1  # the next block sequence counter
    last: int | None = None  # the counter of the last block handled, which may be repeated
    last_data: bytes = b""  # upload: what that block carried, sent again on a repeat
    blocks: int = 0


@dataclass
class Runtime:
    """Everything a power cycle forgets."""

    session: int = DEFAULT
    unlocked: set[int] = field(default_factory=set)  # SecurityAccess levels unlocked
    seed: tuple[int, bytes] | None = None  # (level, seed) waiting for its key
    dtc_off: bool = False
    communication_off: bool = False
    transfer: Transfer | None = None
    erased: list[tuple[int, int, int]] = field(default_factory=list)  # (bank, start, end)
    downloaded: tuple[int, int, int] | None = None  # (bank, offset, size) of the last download
    checked: list[tuple[int, int, int]] = field(default_factory=list)  # downloads checked
    downloads: list[tuple[int, int, int]] = field(default_factory=list)  # all, in order
    fingerprint: str | None = None  # the version written for the image being programmed
    last_request: float = field(default_factory=time.monotonic)


Send = Callable[[bytes], None]


class Ecu:
    def __init__(self, flash: FlashStore, config: EcuConfig, faults: Faults) -> None:
        self.flash = flash
        self.config = config
        self.faults = faults
        self.stats: Counter[str] = Counter()
        self.trace: list[str] = []  # a label per request handled, e.g. "1003", "22f189", "36"
        self.failed_keys = 0  # survives resets, or a reset would be a free retry
        self.lockout_until = 0.0
        self.offline_until: float | None = None
        self.dead = faults.never_answer == "always"
        self.reset_requested = False  # the server powers the ECU off once the answer is out
        self.written: dict[int, bytes] = {}  # DIDs written (fingerprint), as a test reads them
        self._busy_answered = False
        self._held: list[bytes] = []  # the answers the ``late-answer`` fault holds back
        self._handlers: dict[int, Callable[[Request, Send], bytes | None]] = {
            0x10: self._session_control,
            0x11: self._ecu_reset,
            0x14: self._clear_dtcs,
            0x28: self._communication_control,
            0x85: self._dtc_setting,
            0x22: self._read_data,
            0x2E: self._write_data,
            0x27: self._security_access,
            0x31: self._routine_control,
            0x34: self._request_download,
            0x35: self._request_upload,
            0x36: self._transfer_data,
            0x37: self._transfer_exit,
            0x3E: self._tester_present,
        }
        self._boot()

    # ------------------------------------------------------------------ power

    def _boot(self) -> None:
        self.flash.reload()
        layout = self.flash.layout
        self.rt = Runtime()
        self.active_bank = layout.boot_bank
        if not layout.banks[self.active_bank].valid:
            # an A/B bootloader falls back to the other bank if that one is intact
            fallback = [i for i, bank in enumerate(layout.banks) if bank.valid]
            if fallback:
                self.active_bank = fallback[0]
        bank = layout.banks[self.active_bank]
        self.running_version = bank.version if bank.valid else None
        if self.faults.seed_delay:
            self.lockout_until = time.monotonic() + self.config.lockout_time

    def power_off(self) -> None:
        """Reset: silent for ``boot_time``, then boot from what is in flash."""
        self.stats["resets"] += 1
        self._held = []
        self.offline_until = time.monotonic() + self.config.boot_time
        if self.faults.never_answer == "after-reset":
            self.dead = True

    def online(self) -> bool:
        """Whether the ECU listens now; boots it once a reset's boot time has passed."""
        if self.offline_until is not None and time.monotonic() >= self.offline_until:
            self.offline_until = None
            self._boot()
        return self.offline_until is None and not self.dead

    def wants_frame_dropped(self) -> bool:
        """Asked for each multi-frame request: lose a frame of it (the ``drop-frames`` fault)?"""
        transfer = self.rt.transfer
        if self.faults.drop_frames > 0 and transfer is not None and not transfer.upload:
            self.faults.drop_frames -= 1
            self.stats["frames_dropped"] += 1
            return True
        return False

    # ------------------------------------------------------------------ requests

    def handle(self, payload: bytes, send: Send, functional: bool = False) -> bytes | None:
        """The response to one request, or ``None`` when the ECU stays silent. A functional
        request (to every ECU) is traced as ``f:`` and label."""
        now = time.monotonic()
        if self.rt.session != DEFAULT and now - self.rt.last_request > self.config.s3_timeout:
            self._enter_session(DEFAULT)
        self.rt.last_request = now
        sid = payload[0]
        if self._held and not functional and not self._holds_back(payload):
            for answer in self._held:  # late: the tester has moved on to another request
                send(answer)
            self._held = []
        self.trace.append(("f:" if functional else "") + payload[: _LABEL_LENGTH.get(sid, 1)].hex())
        if self.faults.busy and not functional and not self._busy_answered:
            self.faults.busy -= 1
            self._busy_answered = True  # the repeat goes through
            self.stats["nrc_21"] += 1
            return bytes((0x7F, sid, Code.BusyRepeatRequest))
        self._busy_answered = False
        handler = self._handlers.get(sid)
        if handler is None:
            return None if functional else bytes((0x7F, sid, Code.ServiceNotSupported))
        request = Request.from_payload(payload)
        try:
            data = handler(request, send)
        except Nrc as nrc:
            self.stats[f"nrc_{nrc.code:02x}"] += 1
            if functional and nrc.code in _QUIET_FUNCTIONAL:
                return None
            return bytes((0x7F, sid, nrc.code))
        if data is None or request.suppress_positive_response:
            return None
        return bytes((sid + 0x40,)) + data

    def _holds_back(self, payload: bytes) -> bool:
        """Whether the held answers wait longer: ``payload`` repeats a held block, or is the
        next block, late too."""
        if payload[:1] != b"\x36" or len(payload) < 2:
            return False
        transfer = self.rt.transfer
        return any(answer[1] == payload[1] for answer in self._held) or (
            transfer is not None and transfer.blocks + 1 in self.faults.late_answers
        )

    @staticmethod
    def _body(request: Request) -> bytes:
        return request.data or b""

    def _require_session(self, *sessions: int) -> None:
        if self.rt.session not in sessions:
            raise Nrc(Code.ServiceNotSupportedInActiveSession)

    def _require_unlocked(self) -> None:
        if not set(self.config.security_levels) <= self.rt.unlocked:
            raise Nrc(Code.SecurityAccessDenied)

    def _enter_session(self, session: int) -> None:
        if session != self.rt.session:
            self.rt.unlocked = set()
            self.rt.seed = None
            self.rt.transfer = None
        if session == DEFAULT:  # the default session turns DTC setting and communication on
            self.rt.dtc_off = self.rt.communication_off = False
        if session == PROGRAMMING and self.rt.session != PROGRAMMING:
            # a programming session starts a new image: nothing erased or checked yet
            self.rt.erased, self.rt.checked, self.rt.downloads = [], [], []
            self.rt.downloaded = self.rt.fingerprint = None
        self.rt.session = session

    def _session_control(self, request: Request, send: Send) -> bytes:
        session = request.subfunction
        if session is None or self._body(request):
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if session not in (DEFAULT, PROGRAMMING, EXTENDED):
            raise Nrc(Code.SubFunctionNotSupported)
        if (session, self.rt.session) in ((PROGRAMMING, DEFAULT), (EXTENDED, PROGRAMMING)):
            raise Nrc(Code.SubFunctionNotSupportedInActiveSession)
        self._enter_session(session)
        timing = self.config.p2_ms.to_bytes(2, "big") + (self.config.p2_star_ms // 10).to_bytes(
            2, "big"
        )
        return bytes((session,)) + timing

    def _ecu_reset(self, request: Request, send: Send) -> bytes | None:
        kind = request.subfunction
        if kind is None or self._body(request):
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if kind not in (0x01, 0x02, 0x03):
            raise Nrc(Code.SubFunctionNotSupported)
        if self.faults.silent_reset:
            self.power_off()
            return None
        self.reset_requested = True
        return bytes((kind,))

    def _clear_dtcs(self, request: Request, send: Send) -> bytes:
        if len(self._body(request)) != 3:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        self.stats["dtcs_cleared"] += 1
        return b""

    def _communication_control(self, request: Request, send: Send) -> bytes:
        self._require_session(PROGRAMMING, EXTENDED)
        if request.subfunction not in (0x00, 0x01, 0x02, 0x03):
            raise Nrc(Code.SubFunctionNotSupported)
        if len(self._body(request)) != 1:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        self.rt.communication_off = request.subfunction != 0x00
        return bytes((request.subfunction,))

    def _dtc_setting(self, request: Request, send: Send) -> bytes:
        self._require_session(PROGRAMMING, EXTENDED)
        if request.subfunction not in (0x01, 0x02):
            raise Nrc(Code.SubFunctionNotSupported)
        self.rt.dtc_off = request.subfunction == 0x02
        return bytes((request.subfunction,))

    def _tester_present(self, request: Request, send: Send) -> bytes:
        if request.subfunction is None or self._body(request):
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if request.subfunction != 0:
            raise Nrc(Code.SubFunctionNotSupported)
        return b"\x00"

    # ------------------------------------------------------------------ data identifiers

    def _read_data(self, request: Request, send: Send) -> bytes:
        body = self._body(request)
        if not body or len(body) % 2:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        answer = b""
        for index in range(0, len(body), 2):
            did = int.from_bytes(body[index : index + 2], "big")
            answer += body[index : index + 2] + self._did_value(did)
        return answer

    def _did_value(self, did: int) -> bytes:
        layout = self.flash.layout
        if did == self.config.serial_did:
            return layout.serial.encode()
        if did == self.config.version_did:
            # the application it booted, as long as that is still intact in flash
            if self.running_version is None or not layout.banks[self.active_bank].valid:
                raise Nrc(Code.ConditionsNotCorrect)
            return self.running_version.encode()
        if did == ACTIVE_SESSION_DID:
            return bytes((self.rt.session,))
        if did == self.config.bank_did and len(layout.banks) == 2:
            return bytes((self.active_bank,))
        identity = dict(self.config.identity)
        if did in identity:
            return identity[did].encode()
        raise Nrc(Code.RequestOutOfRange)

    def _write_data(self, request: Request, send: Send) -> bytes:
        body = self._body(request)
        if len(body) < 3:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        did = int.from_bytes(body[:2], "big")
        writable = {self.config.fingerprint_did}
        if not self.faults.read_only_version:
            writable.add(self.config.version_did)
        if did not in writable or self.rt.session != PROGRAMMING:
            raise Nrc(Code.RequestOutOfRange)
        self._require_unlocked()
        value = body[2:]
        self.written[did] = value
        if did != self.config.version_did:
            return body[:2]
        if len(value) > 64 or not value.isascii() or not value.decode().isprintable():
            raise Nrc(Code.RequestOutOfRange)
        self.rt.fingerprint = value.decode()
        return body[:2]

    # ------------------------------------------------------------------ security access

    def _security_access(self, request: Request, send: Send) -> bytes:
        self._require_session(PROGRAMMING, EXTENDED)
        sub = request.subfunction
        if sub is None:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        level = sub if sub % 2 else sub - 1
        if level not in self.config.security_levels:
            raise Nrc(Code.SubFunctionNotSupported)
        body = self._body(request)
        if sub == level:
            if body:
                raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
            if time.monotonic() < self.lockout_until:
                raise Nrc(Code.RequiredTimeDelayNotExpired)
            if level in self.rt.unlocked:
                return bytes((sub,)) + b"\x00\x00\x00\x00"
            seed = b"\x00"
            while not any(seed):
                seed = os.urandom(4)
            self.rt.seed = (level, seed)
            return bytes((sub,)) + seed
        pending, self.rt.seed = self.rt.seed, None
        if pending is None or pending[0] != level:
            raise Nrc(Code.RequestSequenceError)
        seed = pending[1]
        if len(body) != len(seed):
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        secret = b"WRNG" if self.faults.wrong_key else SIMULATOR_SECRET
        if body != simulator_key(seed, secret, level=level):
            self.failed_keys += 1
            if self.failed_keys >= 3:
                self.failed_keys = 0
                self.lockout_until = time.monotonic() + self.config.lockout_time
                raise Nrc(Code.ExceedNumberOfAttempts)
            raise Nrc(Code.InvalidKey)
        self.failed_keys = 0
        self.rt.unlocked.add(level)
        return bytes((sub,))

    # ------------------------------------------------------------------ routines

    def _routine_control(self, request: Request, send: Send) -> bytes:
        self._require_session(PROGRAMMING, EXTENDED)
        body = self._body(request)
        if request.subfunction is None or len(body) < 2:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if request.subfunction != 0x01:  # only startRoutine: these routines run to completion
            raise Nrc(Code.SubFunctionNotSupported)
        routine_id = int.from_bytes(body[:2], "big")
        # routines of the extended session: they change no flash
        unlocked_routines: dict[int, Callable[[bytes, Send], bytes]] = {
            self.config.precondition_routine: self._preconditions,
        }
        routines: dict[int, Callable[[bytes, Send], bytes]] = {
            self.config.erase_routine: self._erase,
            self.config.check_routine: self._check_dependencies,
        }
        if len(self.flash.layout.banks) == 2:
            routines[self.config.bank_routine] = self._select_bank
            unlocked_routines[self.config.confirm_routine] = self._confirm
        if routine_id in unlocked_routines:
            return b"\x01" + body[:2] + unlocked_routines[routine_id](body[2:], send)
        routine = routines.get(routine_id)
        if routine is None:
            raise Nrc(Code.RequestOutOfRange)
        if self.rt.session != PROGRAMMING:
            raise Nrc(Code.ConditionsNotCorrect)
        self._require_unlocked()
        return b"\x01" + body[:2] + routine(body[2:], send)

    def _preconditions(self, record: bytes, send: Send) -> bytes:
        """checkProgrammingPreconditions: this simulated vehicle always allows programming."""
        self.stats["preconditions_checked"] += 1
        return b"\x00"

    def _confirm(self, record: bytes, send: Send) -> bytes:
        """(dual bank) confirm the running bank: the new image started and stays."""
        if self.active_bank != self.flash.layout.boot_bank:
            raise Nrc(Code.ConditionsNotCorrect)
        self.stats["confirmed"] += 1
        return b"\x00"

    def _busy(self, send: Send, sid: int, seconds: float) -> None:
        """Work for ``seconds``, telling the tester with response-pending (0x78) answers."""
        end = time.monotonic() + seconds
        while True:
            send(bytes((0x7F, sid, Code.RequestCorrectlyReceived_ResponsePending)))
            self.stats["responses_pending"] += 1
            time.sleep(max(0.0, min(end - time.monotonic(), self.config.p2_star_ms / 2000)))
            if time.monotonic() >= end:
                return

    def _target_bank(self) -> int:
        """Where a download goes: the only bank, or the one not running."""
        return 0 if len(self.flash.layout.banks) == 1 else 1 - self.active_bank

    def _memory_range(self, record: bytes, upload: bool = False) -> tuple[int, int, int]:
        """(bank, offset in the bank, size) from addressAndLengthFormatIdentifier, address,
        size. With per-bank addresses the address picks the bank, which must not be the
        running one unless reading it."""
        if not record:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        address_length, size_length = record[0] & 0x0F, record[0] >> 4
        if not (1 <= address_length <= 5 and 1 <= size_length <= 4):
            raise Nrc(Code.RequestOutOfRange)
        if len(record) != 1 + address_length + size_length:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        address = int.from_bytes(record[1 : 1 + address_length], "big")
        size = int.from_bytes(record[1 + address_length :], "big")
        bank = self.active_bank if upload else self._target_bank()
        base = self.config.memory_address
        bank_size = self.flash.layout.bank_size
        if self.config.bank_addresses:
            for index, start in enumerate(self.config.bank_addresses):
                if start <= address < start + bank_size:
                    bank, base = index, start
            if bank == self.active_bank and not upload:
                raise Nrc(Code.RequestOutOfRange)  # the running bank cannot be programmed
        offset = address - base
        if size == 0 or offset < 0 or offset + size > bank_size:
            raise Nrc(Code.RequestOutOfRange)
        return bank, offset, size

    def _erase(self, record: bytes, send: Send) -> bytes:
        bank, offset, size = self._memory_range(record)
        if self.faults.refuse_erase or self.rt.transfer is not None:
            raise Nrc(Code.ConditionsNotCorrect)
        if self.config.require_dtc_off and not self.rt.dtc_off:
            raise Nrc(Code.ConditionsNotCorrect)
        self._busy(send, 0x31, self.config.erase_time)
        self.flash.erase(bank, offset, size)
        layout = self.flash.layout
        layout.banks[bank].valid = False
        layout.banks[bank].version = None
        if layout.boot_bank == bank and len(layout.banks) == 2:
            layout.boot_bank = self.active_bank
        self.flash.save()
        self.rt.erased.append((bank, offset, offset + size))
        self.rt.downloaded = None
        self.stats["erases"] += 1
        return b"\x00"

    def _check_dependencies(self, record: bytes, send: Send) -> bytes:
        """Option record: the CRC-32 of the last download (4 bytes), or a "signature": the
        SHA-256 of every download since the erase, in order (32 bytes). Status 0x00 valid,
        0x01 mismatch. A passing check makes the bank valid (each erase invalidates it), labelled
        with the version written (or, without one, a name from the image's CRC)."""
        if len(record) not in (4, 32):
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if not self.rt.downloads:
            raise Nrc(Code.RequestSequenceError)
        self._busy(send, 0x31, self.config.check_time)
        if len(record) == 4:
            if self.rt.downloaded is None:
                raise Nrc(Code.RequestSequenceError)
            bank, offset, size = self.rt.downloaded
            if zlib.crc32(self.flash.read(bank, offset, size)) != int.from_bytes(record, "big"):
                return b"\x01"
            self.rt.checked.append(self.rt.downloaded)
            self.rt.downloaded = None
        else:
            digest = hashlib.sha256()
            for bank, offset, size in self.rt.downloads:
                digest.update(self.flash.read(bank, offset, size))
            if digest.digest() != record:
                return b"\x01"
            self.rt.checked, self.rt.downloaded = list(self.rt.downloads), None
        self._make_valid(self.rt.checked[-1][0])
        return b"\x00"

    def _make_valid(self, bank: int) -> None:
        layout = self.flash.layout
        version = self.rt.fingerprint
        if version is None:
            crc = 0
            for _bank, offset, size in self.rt.checked:
                crc = zlib.crc32(self.flash.read(bank, offset, size), crc)
            version = f"sw-{crc:08x}"
        layout.banks[bank].valid = True
        layout.banks[bank].version = version
        layout.boot_bank = bank
        self.flash.save()

    def _select_bank(self, record: bytes, send: Send) -> bytes:
        if len(record) != 1:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        bank = record[0]
        if bank >= len(self.flash.layout.banks):
            raise Nrc(Code.RequestOutOfRange)
        if not self.flash.layout.banks[bank].valid:
            raise Nrc(Code.ConditionsNotCorrect)
        self.flash.layout.boot_bank = bank
        self.flash.save()
        return b"\x00"

    # ------------------------------------------------------------------ transfers

    def _start_transfer(self, request: Request, upload: bool) -> bytes:
        self._require_session(PROGRAMMING)
        self._require_unlocked()
        body = self._body(request)
        if len(body) < 3:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if body[0] not in self.config.data_formats and not upload:
            raise Nrc(Code.RequestOutOfRange)
        if body[0] != 0x00 and upload:
            raise Nrc(Code.RequestOutOfRange)
        self.stats[f"data_format_{body[0]:02x}"] += 1
        bank, offset, size = self._memory_range(body[1:], upload)
        if self.rt.transfer is not None:
            raise Nrc(Code.ConditionsNotCorrect)
        if not upload and not any(
            e_bank == bank and e_start <= offset and offset + size <= e_end
            for e_bank, e_start, e_end in self.rt.erased
        ):
            raise Nrc(Code.UploadDownloadNotAccepted)
        self.rt.transfer = Transfer(upload, bank, offset, size)
        return b"\x20" + self.config.max_block_length.to_bytes(2, "big")

    def _request_download(self, request: Request, send: Send) -> bytes:
        return self._start_transfer(request, upload=False)

    def _request_upload(self, request: Request, send: Send) -> bytes:
        if self.faults.no_upload:
            raise Nrc(Code.ServiceNotSupported)
        return self._start_transfer(request, upload=True)

    def _transfer_data(self, request: Request, send: Send) -> bytes | None:
        self._require_session(PROGRAMMING)
        body = self._body(request)
        transfer = self.rt.transfer
        if not body:
            raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
        if transfer is None:
            raise Nrc(Code.RequestSequenceError)
        counter, data = body[0], body[1:]
        room = self.config.max_block_length - 2
        if counter == transfer.last:  # the tester did not get our answer and repeats
            self.stats["repeated_blocks"] += 1
            return bytes((counter,)) + transfer.last_data
        if counter != transfer.expected:
            raise Nrc(Code.WrongBlockSequenceCounter)
        if transfer.upload:
            if data:
                raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
            if transfer.done >= transfer.size:
                raise Nrc(Code.RequestSequenceError)
            count = min(room, transfer.size - transfer.done)
            reply = self.flash.read(transfer.bank, transfer.offset + transfer.done, count)
        else:
            if not data or len(data) > room:
                raise Nrc(Code.IncorrectMessageLengthOrInvalidFormat)
            if transfer.done + len(data) > transfer.size:
                raise Nrc(Code.TransferDataSuspended)
            if not self._write_block(transfer, data):
                return None
            count, reply = len(data), b""
        transfer.done += count
        transfer.blocks += 1
        transfer.last, transfer.last_data = counter, reply
        transfer.expected = (counter + 1) & 0xFF
        if transfer.blocks in self.faults.late_answers:
            self.faults.late_answers.discard(transfer.blocks)
            self._held.append(bytes((0x76, counter)) + reply)
            self.stats["late_answers"] += 1
            return None
        return bytes((counter,)) + reply

    def _write_block(self, transfer: Transfer, data: bytes) -> bool:
        """Program one block, unless a fault strikes; ``False``: the ECU went silent."""
        index = transfer.blocks + 1
        faults = self.faults
        if faults.reset_after is not None and index > faults.reset_after:
            faults.reset_after = None
            self.power_off()
            return False
        if faults.fail_after is not None and index > faults.fail_after:
            faults.fail_after = None
            self.rt.transfer = None
            raise Nrc(Code.GeneralProgrammingFailure)
        if faults.corrupt_block == index:
            faults.corrupt_block = None
            data = bytes((data[0] ^ 0x01,)) + data[1:]
            self.stats["corrupted_blocks"] += 1
        self.flash.program(transfer.bank, transfer.offset + transfer.done, data)
        self.stats["blocks_written"] += 1
        return True

    def _transfer_exit(self, request: Request, send: Send) -> bytes:
        self._require_session(PROGRAMMING)
        transfer = self.rt.transfer
        if transfer is None or transfer.done != transfer.size:
            raise Nrc(Code.RequestSequenceError)
        self.rt.transfer = None
        if not transfer.upload:
            self.flash.sync(transfer.bank)
            self.rt.downloaded = (transfer.bank, transfer.offset, transfer.size)
            self.rt.downloads.append(self.rt.downloaded)
        return b""
