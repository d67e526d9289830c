"""The ``canbus`` driver: the Interface protocol's hooks for one ECU flashed over UDS.

Registered as the entry point ``canbus`` in ``mender_orchestrator.drivers``; the class is the
factory (``CanbusDriver(component)``), which parses ``interface_args`` up front.

Each hook opens its own ``UdsSession`` and closes it before returning. What one state learns
and a later one needs (the version to expect, the bank and image to roll back to) is kept in
``<File API dir>/canbus/``, because the orchestrator may exit between states (system reboot,
``--stop-before``) and a new process carries on.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceContext,
    InterfaceError,
    PreviousArtifact,
    RebootNeed,
    hookimpl,
    write_atomically,
)
from udsoncan.Response import Response

from mender_orchestrator_canbus import hookspecs
from mender_orchestrator_canbus.args import PARSER, DriverSettings, parse_interface_args
from mender_orchestrator_canbus.image import ImageError, Segment, load_image
from mender_orchestrator_canbus.security import simulator_key
from mender_orchestrator_canbus.uds import NoAnswer, Refused, UdsSession

# under tmp/: the only part of the File API directory an Interface may write (SPEC 5)
STATE_DIR = Path("tmp", "canbus")
RECORD = "install.json"
PREVIOUS_IMAGE = "previous.bin"
Code = Response.Code
# what Provides reports for an ECU left in its bootloader by an interrupted flash (it answers
# the version DID with NRC 0x22): any Artifact installs over it
BOOTLOADER = "(bootloader)"
ERASED = 0xFF  # the value of erased flash: trailing erased bytes need not be saved
# NRCs an ECU gives after checking a request and before acting on it: an erase refused with
# one of these left the flash as it was (0x72 generalProgrammingFailure, say, did not)
REFUSED_BEFORE_STARTING = frozenset(
    {
        Code.SubFunctionNotSupported,
        Code.IncorrectMessageLengthOrInvalidFormat,
        Code.ConditionsNotCorrect,
        Code.RequestSequenceError,
        Code.RequestOutOfRange,
        Code.SecurityAccessDenied,
        Code.SubFunctionNotSupportedInActiveSession,
        Code.ServiceNotSupportedInActiveSession,
    }
)


# an ECU that cannot read its flash back answers RequestUpload with one of these
UPLOAD_UNSUPPORTED = frozenset(
    {Code.ServiceNotSupported, Code.ServiceNotSupportedInActiveSession, Code.RequestOutOfRange}
)


@dataclass
class InstallRecord:
    """What ``artifact_install`` found and did, for the states that follow it."""

    previous_version: str | None  # None: the ECU was in its bootloader
    target_version: str
    previous_bank: int | None = None
    flash_touched: bool = False  # the erase was requested: the flash may differ from before
    image_saved: bool = False  # single bank: previous.bin holds the bank as it was
    version_written: bool = False  # the version DID was written: after the reset it must match
    rollback_version: str | None = None  # what the rollback flashed, for its verification
    programmed: list[list[int]] = field(default_factory=list)  # [address, size] per segment


@dataclass(frozen=True)
class Image:
    """What one Artifact programs: its segments and, with check_record signature, the
    signature the check routine is given once the last segment is in."""

    segments: tuple[Segment, ...]
    signature: bytes | None


class CanbusDriver(DriverBase):
    """One ECU reached over UDS on ISO-TP on a python-can bus."""

    extra_hookspecs: ModuleType = hookspecs
    driver_api = ">=1.1,<2"  # 1.1: ctx.previous_artifact
    interface_args_parser = PARSER
    # a single-bank ECU is rolled back by flashing what ran before (no RequestUpload needed)
    keeps_previous_artifact = True

    def __init__(self, component: Component) -> None:
        super().__init__(component)
        self.settings: DriverSettings = parse_interface_args(component)

    # ------------------------------------------------------------------ helpers

    def _session(self, ctx: InterfaceContext) -> UdsSession:
        return UdsSession(self.settings, ctx.name, ctx.deadline, ctx.log, ctx.cancelled)

    @staticmethod
    def _state_dir(ctx: InterfaceContext, create: bool = False) -> Path:
        if ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: this state needs the File API directory")
        directory = ctx.work_dir / STATE_DIR
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return directory

    def _load_record(self, ctx: InterfaceContext) -> InstallRecord | None:
        path = self._state_dir(ctx) / RECORD
        if not path.exists():
            return None
        try:
            return InstallRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise InterfaceError(f"{ctx.name}: {path} is unreadable: {exc}") from None

    def _save_record(self, ctx: InterfaceContext, record: InstallRecord) -> None:
        path = self._state_dir(ctx, create=True) / RECORD
        write_atomically(path, json.dumps(asdict(record), indent=2).encode())

    def _key_for(self, ctx: InterfaceContext, level: int, seed: bytes) -> bytes | None:
        if ctx.hook is None:
            raise RuntimeError("canbus hooks must be called through ComponentDriver (ctx.hook)")
        key: bytes | None = ctx.hook.canbus_security_key(ctx=ctx, level=level, seed=seed)
        return key

    @staticmethod
    def _target_version(ctx: InterfaceContext) -> str:
        if ctx.artifact is None:
            raise InterfaceError(f"{ctx.name}: no Artifact is being installed")
        return ctx.artifact.version_for(ctx.component.interface)

    def _image(self, ctx: InterfaceContext, files: Sequence[Path], what: str) -> Image:
        """The segments of payload ``files`` (checked against the ECU's memory), and the
        signature file's bytes when the profile checks a signature."""
        profile = self.settings.profile
        files = sorted(path for path in files if path.is_file())
        signature = None
        if profile.check_record == "signature":
            found = [path for path in files if path.name == profile.signature_file]
            if not found:
                raise InterfaceError(
                    f"{ctx.name}: {what} carries no signature file {profile.signature_file!r} "
                    f"(profile signature_file); its files: {[p.name for p in files]}"
                )
            signature = found[0].read_bytes()
            files = [path for path in files if path != found[0]]
        if not files:
            raise InterfaceError(f"{ctx.name}: {what} carries no payload file (the ECU image)")
        try:
            segments = load_image(
                files,
                base_address=self.settings.memory_address,
                load_addresses=profile.load_addresses,
            )
        except ImageError as exc:
            raise InterfaceError(f"{ctx.name}: {what}: {exc}") from None
        low = self.settings.memory_address
        high = low + self.settings.memory_size
        for segment in segments:
            if segment.address < low or segment.end > high:
                raise InterfaceError(
                    f"{ctx.name}: {what}: a segment of {segment.describe()} lies outside the "
                    f"application memory {low:#x}..{high:#x} (--memory-address, --memory-size)"
                )
        return Image(tuple(segments), signature)

    def _bank_shift(self, previous_bank: int | None) -> int:
        """How far the image moves to land in the bank not running: images are linked for
        bank 0, and with per-bank addresses bank 1 lies elsewhere."""
        addresses = self.settings.profile.bank_addresses
        if previous_bank is None or not addresses:
            return 0
        return addresses[1 - previous_bank] - addresses[0]

    def _read_version(self, uds: UdsSession) -> str | None:
        """The running version, or None when the ECU is in its bootloader (NRC 0x22)."""
        try:
            return str(uds.read(self.settings.version_did))
        except Refused as exc:
            if exc.code != Code.ConditionsNotCorrect:
                raise
            return None

    def _check_identity(self, ctx: InterfaceContext, uds: UdsSession) -> None:
        """The identity DIDs the profile names (VIN, hardware part and version) against the
        Artifact's depends: an image built for another ECU is refused before any change."""
        if not self.settings.profile.identity_dids or ctx.artifact is None:
            return
        depends = ctx.artifact.type_info.get("artifact_depends") or {}
        for did, key in sorted(self.settings.profile.identity_dids.items()):
            wanted = depends.get(key)
            if wanted is None:
                continue  # the Artifact does not restrict this one
            allowed = (
                [str(value) for value in wanted] if isinstance(wanted, list) else [str(wanted)]
            )
            value = str(uds.read(did))
            if value not in allowed:
                raise InterfaceError(
                    f"{ctx.name}: the ECU reports {value!r} in DID {did:#06x}, but the Artifact "
                    f"{ctx.artifact.name} depends on {key} = {' or '.join(allowed)}"
                )

    def _enter_programming(self, ctx: InterfaceContext, uds: UdsSession) -> None:
        """Pre-programming in the extended session (preconditions, DTC setting and
        communication off, TesterPresent kept alive), then the programming session and
        SecurityAccess at every level. Starting from the default session matters after a
        failed attempt: an ECU still in its programming session refuses extended (0x7E)."""
        profile = self.settings.profile
        uds.change_session("defaultSession", 0x01)
        if profile.extended_session:
            uds.change_session("extendedDiagnosticSession", 0x03)
        if profile.precondition_routine is not None:
            uds.routine(
                profile.precondition_routine,
                "checkProgrammingPreconditions",
                b"",
                refusal="reported that the ECU cannot be programmed now",
            )
        if profile.control_dtc_setting:
            uds.functional("ControlDTCSetting off (0x85 0x82)", b"\x85\x82")
        if profile.communication_control:
            uds.functional("CommunicationControl disableRxAndTx (0x28 0x83 0x01)", b"\x28\x83\x01")
        uds.keep_alive()
        uds.change_session("programmingSession", 0x02)
        uds.unlock(lambda level, seed: self._key_for(ctx, level, seed))

    def _label(self, uds: UdsSession, version: str | None) -> bool:
        """Fingerprint and version DIDs, before the erase: an ECU that refuses either still
        holds its application. True when the version was written."""
        profile = self.settings.profile
        if profile.fingerprint_did is not None:
            uds.write(profile.fingerprint_did, profile.fingerprint)
        if profile.version_write == "none" or version is None:
            return False
        uds.write(profile.version_write_did, version)
        return True

    def _program(
        self,
        ctx: InterfaceContext,
        uds: UdsSession,
        image: Image,
        shift: int,
        untouched: Callable[[], None] | None = None,
    ) -> None:
        """Per segment: erase, download, check (CRC-32); with a signature, one check after
        the last segment. ``untouched`` hears that the ECU refused the first erase before
        starting it (the flash is as it was)."""
        profile = self.settings.profile
        total = sum(len(segment.data) for segment in image.segments)
        done = 0
        for segment in image.segments:
            target = Segment(segment.address + shift, segment.data)
            ctx.log.info("programming %s", target.describe())
            try:
                uds.erase(target.address, len(target.data))
            except Refused as exc:
                if done == 0 and exc.code in REFUSED_BEFORE_STARTING and untouched is not None:
                    untouched()
                raise
            uds.download(target, self._progress(ctx, done, total))
            done += len(target.data)
            if profile.check_record == "crc32":
                crc = zlib.crc32(target.data)
                uds.routine(
                    profile.check_routine,
                    "checkProgrammingDependencies",
                    crc.to_bytes(4, "big"),
                    refusal=f"rejected the image (CRC-32 {crc:08x}, {target.describe()})",
                )
        if image.signature is not None:
            uds.routine(
                profile.check_routine,
                "checkProgrammingDependencies",
                image.signature,
                refusal=f"rejected the image's signature ({profile.signature_file})",
            )

    @staticmethod
    def _progress(ctx: InterfaceContext, before: int, total: int) -> Callable[[int], None]:
        """``ctx.progress`` over all segments, from the bytes sent of the current one."""

        def report(sent: int) -> None:
            ctx.progress(before + sent, total, "bytes flashed")

        return report

    def _keep_a_copy(self, ctx: InterfaceContext, uds: UdsSession, record: InstallRecord) -> None:
        """Single bank: read the bank back (RequestUpload) when the rollback cannot reinstall
        a kept Artifact; an ECU without RequestUpload is still updated, without that copy."""
        settings = self.settings
        if settings.rollback == "reinstall" and ctx.previous_artifact is not None:
            return
        try:
            saved = uds.upload(settings.memory_address, settings.memory_size)
        except Refused as exc:
            if settings.rollback == "upload" or exc.code not in UPLOAD_UNSUPPORTED:
                raise
            ctx.log.warning(
                "the ECU cannot read its flash back (RequestUpload: NRC %#04x) and no previous "
                "Artifact is kept yet: this update cannot be rolled back",
                exc.code,
            )
            return
        write_atomically(self._state_dir(ctx) / PREVIOUS_IMAGE, saved.rstrip(bytes([ERASED])))
        record.image_saved = True
        ctx.log.info("saved the current image (%d bytes) for rollback", len(saved))

    def _record_path(self) -> Path | None:
        return self.settings.version_record if self.settings.version_source == "record" else None

    def _recorded_version(self, serial: str) -> str | None:
        path = self._record_path()
        if path is None or not path.exists():
            return None
        try:
            value = json.loads(path.read_text()).get(serial)
        except (OSError, ValueError, AttributeError) as exc:
            raise InterfaceError(f"{path}: unreadable version record: {exc}") from None
        return value if isinstance(value, str) else None

    def _record_version(self, ctx: InterfaceContext, uds: UdsSession, version: str) -> None:
        path = self._record_path()
        if path is None:
            return
        serial = ctx.component_id or str(uds.read(self.settings.serial_did))
        versions: dict[str, str] = {}
        if path.exists():
            try:
                versions = dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise InterfaceError(f"{path}: unreadable version record: {exc}") from None
        versions[serial] = version
        write_atomically(path, json.dumps(versions, indent=2, sort_keys=True).encode())

    def _after_reset(
        self, ctx: InterfaceContext, uds: UdsSession, expected: str | None, what: str
    ) -> None:
        """The ECU is back and runs its application (not its bootloader); it reports the
        version written, if one was; then post-programming: communication and DTC setting
        back on, default session, DTCs cleared."""
        settings = self.settings
        profile = settings.profile
        try:
            version = str(uds.wait_until_answering(settings.version_did))
        except Refused as exc:
            if exc.code != Code.ConditionsNotCorrect:
                raise
            version = None
        if version is None:
            raise InterfaceError(
                f"{ctx.name}: after {what} the ECU stays in its bootloader (DID "
                f"{settings.version_did:#06x}: NRC 0x22): its application does not start"
            )
        if expected is not None and version != expected:
            raise InterfaceError(
                f"{ctx.name}: after {what} the ECU reports version {version!r} "
                f"(DID {settings.version_did:#06x}), expected {expected!r}"
            )
        if profile.communication_control or profile.control_dtc_setting:
            uds.change_session("extendedDiagnosticSession", 0x03)
            if profile.communication_control:
                uds.functional(
                    "CommunicationControl enableRxAndTx (0x28 0x80 0x01)", b"\x28\x80\x01"
                )
            if profile.control_dtc_setting:
                uds.functional("ControlDTCSetting on (0x85 0x81)", b"\x85\x81")
            uds.change_session("defaultSession", 0x01)
        if profile.clear_dtcs:
            uds.clear_dtcs()
        uds.check_default_session()

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        with self._session(ctx) as uds:
            serial = str(uds.read(self.settings.serial_did))
        if not serial:
            raise InterfaceError(
                f"{ctx.name}: the ECU's serial number DID {self.settings.serial_did:#06x} is empty"
            )
        return serial

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        with self._session(ctx) as uds:
            version = self._read_version(uds)
            if version is not None and self._record_path() is not None:
                # an ECU in its bootloader is that, whatever was recorded
                serial = ctx.component_id or str(uds.read(self.settings.serial_did))
                version = self._recorded_version(serial) or version
        return {f"rootfs-image.{ctx.component.interface}.version": version or BOOTLOADER}

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.YES

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return True

    @hookimpl(trylast=True)
    def canbus_security_key(self, ctx: InterfaceContext, level: int, seed: bytes) -> bytes:
        """The simulator's published algorithm, for when no vendor plugin answers."""
        return simulator_key(seed, level=level)

    # ------------------------------------------------------------------ update states

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        settings = self.settings
        target = self._target_version(ctx)
        image = self._image(
            ctx, list(ctx.files_dir.iterdir()) if ctx.files_dir.is_dir() else [], "the Artifact"
        )
        with self._session(ctx) as uds:
            self._check_identity(ctx, uds)
            previous = self._read_version(uds)
            if previous is None:
                ctx.log.warning(
                    "the ECU is in its bootloader (an interrupted flash?): flashing %s recovers it",
                    target,
                )
            record = InstallRecord(
                previous_version=previous,
                target_version=target,
                previous_bank=int(uds.read(settings.bank_did)) if settings.banks == 2 else None,
            )
            self._save_record(ctx, record)
            self._enter_programming(ctx, uds)
            if settings.banks == 1 and previous is not None:
                # (a bank the bootloader would not start is not worth a copy)
                self._keep_a_copy(ctx, uds, record)
            record.version_written = self._label(uds, target)
            record.flash_touched = True
            shift = self._bank_shift(record.previous_bank)
            record.programmed = [[s.address + shift, len(s.data)] for s in image.segments]
            self._save_record(ctx, record)

            def untouched() -> None:
                record.flash_touched = False
                self._save_record(ctx, record)

            self._program(ctx, uds, image, shift, untouched)
        ctx.log.info("%s flashed; the ECU runs it after its reset", target)

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        with self._session(ctx) as uds:
            uds.reset()

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        record = self._load_record(ctx)
        target = record.target_version if record else self._target_version(ctx)
        expected = target if record is None or record.version_written else None
        with self._session(ctx) as uds:
            self._after_reset(ctx, uds, expected, "the update's reset")
            self._record_version(ctx, uds, target)

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        routine = self.settings.profile.confirm_routine
        if self.settings.banks != 2 or routine is None:
            return
        with self._session(ctx) as uds:
            uds.change_session("extendedDiagnosticSession", 0x03)
            uds.routine(routine, "confirmBank", b"", refusal="did not confirm the new bank")
            uds.change_session("defaultSession", 0x01)

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is not None:
            shutil.rmtree(ctx.work_dir / STATE_DIR, ignore_errors=True)

    # ------------------------------------------------------------------ error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        record = self._load_record(ctx)
        if record is None or not record.flash_touched:
            ctx.log.info("the ECU's flash was not touched; nothing to roll back")
            return
        previous = ctx.previous_artifact if self.settings.rollback == "reinstall" else None
        if record.previous_bank is None and previous is None and not record.image_saved:
            raise InterfaceError(
                f"{ctx.name}: the flash was touched but there is nothing to roll back to: no "
                f"previous Artifact is kept yet and the ECU's image could not be read back"
            )
        with self._session(ctx) as uds:
            try:
                self._enter_programming(ctx, uds)
            except NoAnswer:
                # the engine may roll back right after ArtifactReboot, while the ECU restarts
                uds.wait_until_answering(self.settings.version_did)
                self._enter_programming(ctx, uds)
            if record.previous_bank is not None:
                self._switch_back(ctx, uds, record.previous_bank)
                record.rollback_version = record.previous_version
            elif previous is not None:
                record.rollback_version = self._reinstall(ctx, uds, previous, record)
            else:
                ctx.log.info("re-flashing the previous image (%s)", record.previous_version)
                path = self._state_dir(ctx) / PREVIOUS_IMAGE
                data = path.read_bytes() or bytes([ERASED])
                image = Image((Segment(self.settings.memory_address, data),), None)
                record.version_written = self._label(uds, record.previous_version)
                self._erase_leftovers(uds, record, image)
                self._program(ctx, uds, image, 0)
                record.rollback_version = record.previous_version
            self._save_record(ctx, record)

    def _switch_back(self, ctx: InterfaceContext, uds: UdsSession, bank: int) -> None:
        ctx.log.info("switching the ECU back to bank %d", bank)
        uds.routine(
            self.settings.profile.bank_routine,
            "selectBank",
            bytes([bank]),
            refusal=f"refused bank {bank}",
        )

    def _reinstall(
        self,
        ctx: InterfaceContext,
        uds: UdsSession,
        previous: PreviousArtifact,
        record: InstallRecord,
    ) -> str:
        version = previous.info.version_for(ctx.component.interface)
        ctx.log.info("re-flashing the previous Artifact %s (%s)", previous.info.name, version)
        image = self._image(ctx, previous.files, f"the previous Artifact {previous.info.name}")
        record.version_written = self._label(uds, version)
        self._erase_leftovers(uds, record, image)
        self._program(ctx, uds, image, 0)
        return version

    @staticmethod
    def _erase_leftovers(uds: UdsSession, record: InstallRecord, image: Image) -> None:
        """Erase what the failed install programmed outside the image put back, so that no
        part of the new image stays in flash next to the old one."""
        for address, size in record.programmed:
            if not any(s.address <= address and address + size <= s.end for s in image.segments):
                uds.erase(address, size)

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        with self._session(ctx) as uds:
            uds.reset()

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        record = self._load_record(ctx)
        with self._session(ctx) as uds:
            if record is None or not record.flash_touched:
                # the install never changed the flash: the ECU only has to answer
                uds.wait_until_answering(self.settings.version_did)
                uds.check_default_session()
                return
            version = record.rollback_version
            written = record.version_written or record.previous_bank is not None
            self._after_reset(ctx, uds, version if written else None, "the rollback's reset")
            if record.previous_bank is not None:
                bank = int(uds.read(self.settings.bank_did))
                if bank != record.previous_bank:
                    raise InterfaceError(
                        f"{ctx.name}: after the rollback the ECU runs bank {bank}, "
                        f"expected bank {record.previous_bank}"
                    )
            if version is not None:
                self._record_version(ctx, uds, version)
