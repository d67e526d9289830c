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
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceContext,
    InterfaceError,
    RebootNeed,
    hookimpl,
    write_atomically,
)
from udsoncan.Response import Response

from mender_orchestrator_canbus import hookspecs
from mender_orchestrator_canbus.args import PARSER, DriverSettings, parse_interface_args
from mender_orchestrator_canbus.security import simulator_key
from mender_orchestrator_canbus.uds import NoAnswer, Refused, UdsSession

# under tmp/: the only part of the File API directory an Interface may write (SPEC 5)
STATE_DIR = Path("tmp", "canbus")
RECORD = "install.json"
PREVIOUS_IMAGE = "previous.bin"
Code = Response.Code
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


@dataclass
class InstallRecord:
    """What ``artifact_install`` found and did, for the states that follow it."""

    previous_version: str
    target_version: str
    previous_bank: int | None = None
    flash_touched: bool = False  # the erase was requested: the flash may differ from before
    image_saved: bool = False  # single bank: previous.bin holds the bank as it was


class CanbusDriver(DriverBase):
    """One ECU reached over UDS on ISO-TP on a python-can bus."""

    extra_hookspecs: ModuleType = hookspecs
    driver_api = ">=1.0,<2"  # the orchestrator_core.driver_api versions this is written for
    interface_args_parser = PARSER

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

    @staticmethod
    def _payload(ctx: InterfaceContext) -> Path:
        files = sorted(ctx.files_dir.iterdir()) if ctx.files_dir.is_dir() else []
        if len(files) != 1 or not files[0].is_file():
            raise InterfaceError(
                f"{ctx.name}: expected exactly one payload file (the ECU image) in "
                f"{ctx.files_dir}, found {[p.name for p in files] or 'none'}"
            )
        return files[0]

    def _erase(self, ctx: InterfaceContext, uds: UdsSession) -> None:
        settings = self.settings
        ctx.log.info("erasing %d bytes at %#x", settings.memory_size, settings.memory_address)
        uds.erase(settings.memory_size)

    def _program(
        self, ctx: InterfaceContext, uds: UdsSession, image: BinaryIO, size: int, version: str
    ) -> None:
        """Download into erased flash, label with ``version``, have the ECU check the result."""
        settings = self.settings
        crc = 0
        while chunk := image.read(1 << 16):
            crc = zlib.crc32(chunk, crc)
        image.seek(0)
        uds.download(image, size, ctx.progress)
        uds.write_text(settings.version_write_did, version)
        uds.routine(
            settings.check_routine,
            "checkProgrammingDependencies",
            crc.to_bytes(4, "big"),
            refusal=f"rejected the image (CRC-32 {crc:08x}, {size} bytes)",
        )

    def _expect_version(
        self, ctx: InterfaceContext, uds: UdsSession, expected: str, what: str
    ) -> None:
        version = uds.wait_until_answering(self.settings.version_did)
        if version != expected:
            raise InterfaceError(
                f"{ctx.name}: after {what} the ECU reports version {version!r} "
                f"(DID {self.settings.version_did:#06x}), expected {expected!r}"
            )
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
            version = str(uds.read(self.settings.version_did))
        return {f"rootfs-image.{ctx.component.interface}.version": version}

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.YES

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return True

    @hookimpl(trylast=True)
    def canbus_security_key(self, ctx: InterfaceContext, level: int, seed: bytes) -> bytes:
        """The simulator's published algorithm, for when no vendor plugin answers."""
        return simulator_key(seed)

    # ------------------------------------------------------------------ update states

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        settings = self.settings
        target = self._target_version(ctx)
        payload = self._payload(ctx)
        size = payload.stat().st_size
        if size == 0 or size > settings.memory_size:
            raise InterfaceError(
                f"{ctx.name}: the image {payload.name} is {size} bytes; it must hold 1 to "
                f"{settings.memory_size} bytes (--memory-size)"
            )
        with self._session(ctx) as uds:
            record = InstallRecord(
                previous_version=str(uds.read(settings.version_did)),
                target_version=target,
                previous_bank=int(uds.read(settings.bank_did)) if settings.banks == 2 else None,
            )
            self._save_record(ctx, record)
            uds.enter_programming(lambda level, seed: self._key_for(ctx, level, seed))
            if settings.banks == 1:
                # a single bank is overwritten in place: keep what is there to put it back
                saved = uds.upload(settings.memory_size).rstrip(bytes([ERASED]))
                write_atomically(self._state_dir(ctx) / PREVIOUS_IMAGE, saved)
                record.image_saved = True
                ctx.log.info("saved the current image (%d bytes) for rollback", len(saved))
            record.flash_touched = True
            self._save_record(ctx, record)
            try:
                self._erase(ctx, uds)
            except Refused as exc:
                if exc.code in REFUSED_BEFORE_STARTING:
                    record.flash_touched = False
                    self._save_record(ctx, record)
                raise
            with payload.open("rb") as image:
                self._program(ctx, uds, image, size, target)
        ctx.log.info("%s flashed; the ECU runs it after its reset", target)

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        with self._session(ctx) as uds:
            uds.reset()

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        record = self._load_record(ctx)
        expected = record.target_version if record else self._target_version(ctx)
        with self._session(ctx) as uds:
            self._expect_version(ctx, uds, expected, "the update's reset")

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
        settings = self.settings

        def unlock(level: int, seed: bytes) -> bytes | None:
            return self._key_for(ctx, level, seed)

        with self._session(ctx) as uds:
            try:
                uds.enter_programming(unlock)
            except NoAnswer:
                # the engine may roll back right after ArtifactReboot, while the ECU restarts
                uds.wait_until_answering(settings.version_did)
                uds.enter_programming(unlock)
            if record.previous_bank is not None:
                ctx.log.info("switching the ECU back to bank %d", record.previous_bank)
                uds.routine(
                    settings.bank_routine,
                    "selectBank",
                    bytes([record.previous_bank]),
                    refusal=f"refused bank {record.previous_bank}",
                )
                return
            if not record.image_saved:
                raise InterfaceError(
                    f"{ctx.name}: the flash was touched but no copy of the previous image was saved"
                )
            path = self._state_dir(ctx) / PREVIOUS_IMAGE
            ctx.log.info("re-flashing the previous image (%s)", record.previous_version)
            self._erase(ctx, uds)
            with path.open("rb") as image:
                self._program(ctx, uds, image, path.stat().st_size, record.previous_version)

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        with self._session(ctx) as uds:
            uds.reset()

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        record = self._load_record(ctx)
        with self._session(ctx) as uds:
            if record is None:
                # the install never read the ECU, so nothing changed: it only has to answer
                uds.wait_until_answering(self.settings.version_did)
                uds.check_default_session()
                return
            self._expect_version(ctx, uds, record.previous_version, "the rollback's reset")
            if record.previous_bank is not None:
                bank = int(uds.read(self.settings.bank_did))
                if bank != record.previous_bank:
                    raise InterfaceError(
                        f"{ctx.name}: after the rollback the ECU runs bank {bank}, "
                        f"expected bank {record.previous_bank}"
                    )
