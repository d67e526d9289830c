"""The ``i2c`` driver: updates an STM32 through its system bootloader on an I2C bus.

What each state does:

- Queries (Identity, Provides, Inventory) never stop a running application: they ask the
  application (the ``i2c_query_application`` hook), else answer from what the driver recorded
  on the host at its last install (``hostrecord``), and read the bootloader only when the MCU
  is already waiting in it. Only update states enter the bootloader.
- ArtifactInstall: plans the rollback (the previous Artifact, kept by the core; on the first
  deployment a read-back of the area when readout protection allows it), then erases the
  version record's page and the vector table's page first and writes them last: the image
  body, then the vector table, then the record, each verified (Get Checksum where the
  bootloader has it, read-back otherwise; a differing page is erased and written again).
- ArtifactReboot: an NRST reset where wired (``i2c_reset_mcu``), else Go to the flash base;
  checks that the bootloader left the bus.
- ArtifactVerifyReboot: back in the bootloader, the record and the image's checksum.
- ArtifactRollback: the same install with the previous Artifact (or the read-back).

Everything needed from one state to the next lives in the File API directory
(``tmp/i2c-driver/``), so a deployment survives a restart of the orchestrator.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceContext,
    InterfaceError,
    RebootNeed,
    hookimpl,
)
from orchestrator_core.driver_api import write_atomically as write_atomic

from mender_orchestrator_i2c import hookspecs, hostrecord
from mender_orchestrator_i2c.an4221 import Command, stm32_crc
from mender_orchestrator_i2c.bus import I2CBus, ResettableBus, open_builtin
from mender_orchestrator_i2c.families import FAMILIES, BankSwap, Family
from mender_orchestrator_i2c.layout import (
    Layout,
    LayoutError,
    Unit,
    describe,
    for_family,
    uniform,
)
from mender_orchestrator_i2c.protocol import (
    Bootloader,
    Nacked,
    NoAnswer,
    NotBootloader,
)
from mender_orchestrator_i2c.record import VersionRecord, decode
from mender_orchestrator_i2c.settings import PARSER, Settings, parse

BLANK = 0xFF
NEEDS_NRST = (
    "{name}: --bank-swap=yes: the MCU must be restarted by NRST (--nrst-gpio or the "
    "i2c_reset_mcu hook): Go from the bootloader starts bank 1 whatever BFB2 says"
)
CHUNK = 256
VECTORS = 8  # bytes of the vector table that make an image bootable: initial SP, reset handler


@dataclass(frozen=True)
class Saved:
    """What ArtifactInstall keeps for the states after it (``tmp/i2c-driver/state.json``)."""

    pid: int
    target_version: str
    image_sha256: str
    image_length: int
    # how a rollback restores the previous firmware: "artifact" (install the previous
    # Artifact again), "backup" (write back the area read before the install) or "none"
    rollback: str
    previous_version: str
    previous_sha256: str  # of the previous Artifact's image, or of the backup
    protected: bool  # readout protection was on: removed for the install, set again after
    bootloader_version: str  # as Get Version said, for the Inventory
    # with --bank-swap (rollback "bank"): the bank the MCU booted before the install, and the
    # one the install writes and swaps to; 0 without
    previous_bank: int = 0
    target_bank: int = 0


class Store:
    """The driver's files in the Component's File API directory."""

    def __init__(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: this state needs the File API directory")
        self.directory = ctx.work_dir / "tmp" / "i2c-driver"

    def load(self) -> Saved | None:
        try:
            raw = json.loads((self.directory / "state.json").read_text(encoding="utf-8"))
            return Saved(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise InterfaceError(f"{self.directory / 'state.json'} is unreadable: {exc}") from exc

    def save(self, saved: Saved, backup: bytes | None) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if backup is not None:
            write_atomic(self.directory / "previous.bin", backup)
        write_atomic(self.directory / "state.json", json.dumps(asdict(saved)).encode())

    def backup(self, saved: Saved) -> bytes:
        path = self.directory / "previous.bin"
        data = path.read_bytes()
        if _sha256(data) != saved.previous_sha256:
            raise InterfaceError(f"{path} does not match the checksum taken when it was saved")
        return data

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bootable(image: bytes, settings: Settings) -> bool:
    """Does ``image`` start with a Cortex-M vector table that Go at the flash base can use?"""
    if len(image) < 8:
        return False
    stack = int.from_bytes(image[:4], "little")
    reset = int.from_bytes(image[4:8], "little")
    entry = reset & ~1
    return (
        0x1000_0000 <= stack <= 0x4000_0000  # SRAM (or CCM) of every STM32
        and stack % 4 == 0
        and bool(reset & 1)  # Thumb
        and settings.flash_base <= entry < settings.flash_base + settings.flash_size
    )


def _first_difference(a: bytes, b: bytes) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


def _words(data: bytes) -> bytes:
    """``data`` padded with erased bytes to whole words, as Write Memory stores it."""
    return data + b"\xff" * (-len(data) % 4)


class I2CDriver(DriverBase):
    """In-process driver for the ``i2c`` Interface; one instance per Component.

    The class is the ``mender_orchestrator.drivers`` entry point: the engine calls it with the
    Component, and the constructor rejects bad ``interface_args`` with a ``ConfigError``.
    """

    extra_hookspecs = hookspecs
    driver_api = ">=1.2,<2"  # the orchestrator_core.driver_api versions this is written for
    keeps_previous_artifact = True  # a rollback installs the previous Artifact again
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        super().__init__(component)
        self.settings = parse(component)
        self.records = hostrecord.file_for(
            self.settings.state_dir, self.settings.bus, self.settings.address
        )
        # the area's erase units: --page-size pages until the part is known (its product ID
        # from Get ID, or as recorded at the last install), then the family table's
        self.layout = uniform(self.settings)
        self.pid = 0  # Get ID's answer, once a session has asked
        known = self.records.load().pid
        if known is not None and known in FAMILIES:
            with suppress(LayoutError):
                self.layout = self._layout_for(known)

    # ------------------------------------------------------------------ built-in extensions

    @hookimpl(trylast=True)
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> I2CBus:
        return open_builtin(bus)

    @hookimpl(trylast=True)
    def i2c_enter_bootloader(self, ctx: InterfaceContext, bus: I2CBus, address: int) -> bool | None:
        s = self.settings
        if s.nrst_gpio is not None and s.boot0_gpio is not None:
            from mender_orchestrator_i2c.gpio import restart

            restart(ctx, s.nrst_gpio, s.boot0_gpio, bootloader=True)
            return True
        if isinstance(bus, ResettableBus):
            bus.reset_to_bootloader()
            return True
        return None

    @hookimpl(trylast=True)
    def i2c_reset_mcu(self, ctx: InterfaceContext, bus: I2CBus, address: int) -> bool | None:
        s = self.settings
        if s.nrst_gpio is None:
            return None
        from mender_orchestrator_i2c.gpio import restart

        restart(ctx, s.nrst_gpio, s.boot0_gpio, bootloader=False)
        return True

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        s = self.settings
        known = self.records.load()
        if known.identity is not None:
            return known.identity
        answer = self._ask_application(ctx)
        pid_text, uid_text = answer.get("pid"), answer.get("uid")
        if pid_text and uid_text:
            identity = f"stm32-{int(pid_text, 16):03x}-{uid_text.lower()}"
        else:
            with self._query_session(ctx) as boot:
                if boot is None:
                    identity = f"stm32-{self._bus_name()}-0x{s.address:02x}"
                else:
                    pid = boot.get_id()
                    uid = self._read_uid(ctx, boot)
                    tail = uid.hex() if uid is not None else f"{self._bus_name()}-0x{s.address:02x}"
                    identity = f"stm32-{pid:03x}-{tail}"
                    known = known.updated(pid=pid, bootloader_version=boot.version_text)
        hostrecord.save(self.records, known.updated(identity=identity))
        return identity

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        version = self._ask_application(ctx).get("version")
        if version is None:
            version = self.records.load().version
        if version is None:
            with self._query_session(ctx) as boot:
                if boot is not None:
                    try:
                        self.pid = boot.get_id()
                        self.layout = self._layout_for(self.pid)
                    except LayoutError as exc:  # ArtifactInstall fails on it; a query warns
                        ctx.log.warning("%s: %s", ctx.name, exc)
                        boot = None
                readable = boot is not None and not boot.read_protected()
                record = None
                if boot is not None and readable:
                    family = FAMILIES.get(self.pid)
                    if self.settings.bank_swap and family is not None and family.bank_swap:
                        self.layout = self.layout.in_bank(self._booted_bank(boot), family)
                    record = self._read_record(boot)
            if record is not None:
                version = record.version
        if version is None:
            ctx.log.warning(
                "%s: the version is not known without stopping the application (no install "
                "recorded in %s, no i2c_query_application hook): reporting 'unknown'",
                ctx.name,
                self.records.path,
            )
        return {f"rootfs-image.{self.component.interface}.version": version or "unknown"}

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        known = self.records.load()
        pid = self._ask_application(ctx).get("pid")
        items = [("i2c_bus", self.settings.bus), ("i2c_address", f"0x{self.settings.address:02x}")]
        if pid is not None or known.pid is not None:
            items.append(("stm32_pid", f"0x{int(pid, 16) if pid else known.pid:03x}"))
        if known.bootloader_version is not None:
            items.append(("stm32_bootloader_version", known.bootloader_version))
        return items

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.YES

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return True

    # ------------------------------------------------------------------ update states

    @hookimpl
    def download(self, ctx: InterfaceContext) -> None:
        # The payload is left unread, so the engine stores it in files/ for ArtifactInstall;
        # only its shape is checked here, before anything touches the device.
        if ctx.artifact is not None and ctx.artifact.files:
            self._check_listing(ctx, list(ctx.artifact.files))

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        image = self._payload(ctx)
        version = self._target_version(ctx)
        store = Store(ctx)
        with self._session(ctx) as boot:
            pid = self.pid
            saved = store.load()
            current = None
            if saved is None:
                protected = self._lift_protection(ctx, boot)
                if self.settings.bank_swap:
                    saved = self._plan_bank_swap(ctx, boot, store, pid, image, version)
                else:
                    saved, current = self._plan_rollback(
                        ctx, boot, store, pid, image, version, protected
                    )
            else:
                ctx.log.info("%s: keeping the rollback planned by the first attempt", ctx.name)
            ctx.log.info(
                "%s: flashing %d bytes, version %s (bootloader v%s, write 0x%02x, erase 0x%02x)",
                ctx.name,
                len(image),
                version,
                boot.version_text,
                boot.write_command,
                boot.erase_command,
            )
            if saved.rollback == "bank":
                family, swap = self._dual_bank()
                self.layout = self.layout.in_bank(saved.target_bank, family)
                ctx.log.info("%s: writing bank %d", ctx.name, saved.target_bank)
                self._install(ctx, boot, image, version, protected=False)
                self._set_boot_bank(ctx, boot, swap, saved.target_bank)
                return
            self._install(ctx, boot, image, version, protected=saved.protected, current=current)

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        self._start_application(ctx)

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        if saved.protected:
            self._verify_protected(ctx, saved.target_version)
            self._remember(saved, saved.target_version)
            return
        image = self._payload(ctx)
        with self._session(ctx) as boot:
            pid = self.pid
            problem = None
            if saved.rollback == "bank":
                problem = self._check_bank(boot, saved.target_bank)
            if problem is None:
                problem = self._check_installed(boot, image, saved.target_version)
            self._leave_bootloader(ctx, boot)
        if pid != saved.pid:
            raise InterfaceError(
                f"{ctx.name}: answers with part number 0x{pid:03x}, not 0x{saved.pid:03x} as "
                f"during the install: a different MCU?"
            )
        if problem:
            raise InterfaceError(f"{ctx.name}: after the reboot {problem}")
        # it runs the new version from now on, committed or not: queries must say so (the
        # Mender client reads Provides between ArtifactInstall and ArtifactCommit); a
        # rollback records the previous one again
        self._remember(saved, saved.target_version)

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        self._remember(saved, saved.target_version)

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is not None:
            Store(ctx).remove()

    # ------------------------------------------------------------------ error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        store = Store(ctx)
        saved = store.load()
        if saved is None:
            ctx.log.info("%s: the install never reached the device; nothing to roll back", ctx.name)
            return
        if saved.rollback == "none":
            raise InterfaceError(
                f"{ctx.name}: cannot roll back: this was the first deployment through the "
                f"orchestrator (no previous Artifact kept) and readout protection kept the "
                f"previous firmware from being read before the install"
            )
        if saved.rollback == "bank":
            with self._session(ctx) as boot:
                # bank saved.previous_bank was never written: booting it again is the rollback
                _, swap = self._dual_bank()
                self._set_boot_bank(ctx, boot, swap, saved.previous_bank)
            return
        with self._session(ctx) as boot:
            if saved.protected:  # set again if the install got that far: remove it again
                self._lift_protection(ctx, boot)
            if saved.rollback == "artifact":
                image = self._previous_image(ctx, saved)
                if self._check_installed(boot, image, saved.previous_version) is None:
                    self._untouched(ctx, boot, saved)
                    return
                self._install(ctx, boot, image, saved.previous_version, protected=saved.protected)
            else:
                backup = store.backup(saved)
                if self._check_area(boot, backup) is None:
                    return  # the install failed before it changed anything
                self._write_area(ctx, boot, backup, current=None)

    def _untouched(self, ctx: InterfaceContext, boot: Bootloader, saved: Saved) -> None:
        """The flash still holds the previous firmware (the install failed before it changed
        anything): only readout protection, if it was lifted, goes back on."""
        ctx.log.info("%s: the flash still holds version %s", ctx.name, saved.previous_version)
        if saved.protected:
            boot.change_option_bytes(
                Command.READOUT_PROTECT, Command.NO_STRETCH_READOUT_PROTECT, "Readout Protect"
            )
            self._wait_for_bootloader(ctx, boot, hint=False)

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        # Whether or not the rollback had anything to restore, the MCU is left running what
        # its flash holds, as it was before the install.
        self._start_application(ctx, only_if_bootable=True)

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        store = Store(ctx)
        saved = store.load()
        if saved is None:
            return
        if saved.rollback == "none":
            raise InterfaceError(f"{ctx.name}: the rollback could not run (see ArtifactRollback)")
        if saved.rollback == "bank":
            with self._session(ctx) as boot:
                problem = self._check_bank(boot, saved.previous_bank)
                record = self._read_record(boot)
                if problem is None and saved.previous_version != "unknown":
                    if record is None or record.version != saved.previous_version:
                        found = "no version record" if record is None else record.version
                        problem = f"bank {saved.previous_bank} holds {found!r}, expected " + repr(
                            saved.previous_version
                        )
                self._leave_bootloader(ctx, boot)
            if problem:
                raise InterfaceError(f"{ctx.name}: the rollback did not restore: {problem}")
        elif saved.protected:
            self._verify_protected(ctx, saved.previous_version)
        else:
            s = self.settings
            with self._session(ctx) as boot:
                if saved.rollback == "artifact":
                    problem = self._check_installed(
                        boot, self._previous_image(ctx, saved), saved.previous_version
                    )
                else:
                    problem = self._check_area(boot, store.backup(saved))
                if bootable(boot.read_memory(s.flash_base, 8), s):
                    boot.go(s.flash_base)
            if problem:
                raise InterfaceError(
                    f"{ctx.name}: the rollback did not restore the flash: {problem}"
                )
        self._remember(saved, saved.previous_version)

    # ------------------------------------------------------------------ sessions

    @contextmanager
    def _session(self, ctx: InterfaceContext, *, area: bool = True) -> Iterator[Bootloader]:
        """The bus opened and the bootloader answering (entered if need be): update states.
        With ``area``, the managed area must fit the part (its erase units known)."""
        bus = self._open(ctx)
        try:
            boot = Bootloader(bus, self.settings, ctx.deadline, ctx.name)
            self._connect(ctx, bus, boot)
            self.pid = boot.get_id()
            if area:
                self._use_part(ctx, self.pid)
            yield boot
        finally:
            bus.close()

    @contextmanager
    def _query_session(self, ctx: InterfaceContext) -> Iterator[Bootloader | None]:
        """The bootloader if the MCU is waiting in it, else ``None``: never disturbs an
        application (no reset, no Go)."""
        bus = self._open(ctx)
        try:
            boot = Bootloader(bus, self.settings, ctx.deadline, ctx.name)
            yield boot if self._handshake(boot) else None
        finally:
            bus.close()

    def _open(self, ctx: InterfaceContext) -> I2CBus:
        if ctx.hook is not None:
            bus: I2CBus = ctx.hook.i2c_open_bus(ctx=ctx, bus=self.settings.bus)
            return bus
        return self.i2c_open_bus(ctx, self.settings.bus)

    def _ask_application(self, ctx: InterfaceContext) -> dict[str, str]:
        if ctx.hook is None or not ctx.hook.i2c_query_application.get_hookimpls():
            return {}
        bus = self._open(ctx)
        try:
            answer = ctx.hook.i2c_query_application(ctx=ctx, bus=bus, address=self.settings.address)
        finally:
            bus.close()
        return dict(answer or {})

    @staticmethod
    def _handshake(boot: Bootloader) -> bool:
        """Does the bootloader answer? Get Version and Get, with their ACKs, tell it from an
        application that happens to answer at the same address (its bytes are no ACK)."""
        for _ in range(2):  # a NACK may only mean it was mid-command: that put it back in step
            try:
                boot.connect()
                return True
            except Nacked:
                continue
            except (NoAnswer, NotBootloader):
                return False
        return False

    def _connect(self, ctx: InterfaceContext, bus: I2CBus, boot: Bootloader) -> None:
        """Reach the bootloader, restarting the MCU into it if something else answers."""
        if self._handshake(boot):
            return
        address = self.settings.address
        if ctx.hook is not None:
            entered = ctx.hook.i2c_enter_bootloader(ctx=ctx, bus=bus, address=address)
        else:
            entered = self.i2c_enter_bootloader(ctx, bus, address)
        self._wait_for_bootloader(ctx, boot, hint=not entered)

    def _wait_for_bootloader(self, ctx: InterfaceContext, boot: Bootloader, hint: bool) -> None:
        started = time.monotonic()
        give_up = min(ctx.deadline, started + self.settings.connect_timeout)
        while True:
            try:
                boot.connect()
                return
            except (NoAnswer, NotBootloader, Nacked) as exc:
                if time.monotonic() >= give_up:
                    advice = (
                        " If the MCU runs its application, install a plugin implementing "
                        "the i2c_enter_bootloader hook (drive BOOT0/NRST) for this board."
                        if hint
                        else ""
                    )
                    raise InterfaceError(
                        f"{ctx.name}: the bootloader did not answer within "
                        f"{give_up - started:.1f} s (--connect-timeout): {exc}.{advice}"
                    ) from exc
                time.sleep(0.02)

    # ------------------------------------------------------------------ install steps

    def _lift_protection(self, ctx: InterfaceContext, boot: Bootloader) -> bool:
        """Remove readout protection (with ``--readout-protection=cycle``) and, with
        ``--write-unprotect=yes``, write protection; ``True`` if readout protection was on."""
        protected = boot.read_protected()
        if protected:
            if self.settings.readout_protection != "cycle":
                raise InterfaceError(
                    f"{ctx.name}: the MCU has readout protection (level 1): its bootloader "
                    f"refuses to read, write or erase the flash. --readout-protection=cycle "
                    f"lets the driver remove it, which mass-erases the whole flash, and set it "
                    f"again after the install"
                )
            ctx.log.warning(
                "%s: removing readout protection: the MCU mass-erases its whole flash", ctx.name
            )
            boot.change_option_bytes(
                Command.READOUT_UNPROTECT, Command.NO_STRETCH_READOUT_UNPROTECT, "Readout Unprotect"
            )
            self._wait_for_bootloader(ctx, boot, hint=False)
        if self.settings.write_unprotect:
            boot.change_option_bytes(
                Command.WRITE_UNPROTECT, Command.NO_STRETCH_WRITE_UNPROTECT, "Write Unprotect"
            )
            self._wait_for_bootloader(ctx, boot, hint=False)
        return protected

    def _plan_rollback(
        self,
        ctx: InterfaceContext,
        boot: Bootloader,
        store: Store,
        pid: int,
        image: bytes,
        version: str,
        protected: bool,
    ) -> tuple[Saved, bytes | None]:
        """How a rollback will restore the previous firmware; and the area's contents when
        they were read for that."""
        backup = None
        previous = ctx.previous_artifact
        if previous is not None and previous.files:
            way = "artifact"
            data = previous.files[0].read_bytes()
            previous_version = previous.info.version_for(self.component.interface)
        elif not protected:
            # the first deployment through the orchestrator: nothing kept yet, so the
            # flash is read back once (the only way to roll back to the factory firmware)
            way = "backup"
            area = self.layout
            data = backup = boot.read_memory(area.base, area.size)
            record = decode(data[area.image_limit : area.image_limit + VersionRecord.size_limit()])
            previous_version = "unknown" if record is None else record.version
        else:
            way, data, previous_version = "none", b"", "unknown"
            ctx.log.warning(
                "%s: no rollback possible for this install: no previous Artifact is kept yet "
                "and readout protection hid the previous firmware",
                ctx.name,
            )
        saved = Saved(
            pid=pid,
            target_version=version,
            image_sha256=_sha256(image),
            image_length=len(image),
            rollback=way,
            previous_version=previous_version,
            previous_sha256=_sha256(data),
            protected=protected,
            bootloader_version=boot.version_text,
        )
        store.save(saved, backup)
        return saved, backup

    def _install(
        self,
        ctx: InterfaceContext,
        boot: Bootloader,
        image: bytes,
        version: str,
        *,
        protected: bool,
        current: bytes | None = None,
    ) -> None:
        area = self.layout
        wanted = bytearray(b"\xff" * area.size)
        wanted[: len(image)] = image
        record = VersionRecord.for_image(version, image).encode()
        wanted[area.image_limit : area.image_limit + len(record)] = record
        self._write_area(ctx, boot, bytes(wanted), current)
        if protected:
            boot.change_option_bytes(
                Command.READOUT_PROTECT, Command.NO_STRETCH_READOUT_PROTECT, "Readout Protect"
            )
            self._wait_for_bootloader(ctx, boot, hint=False)

    def _old_extent(self, boot: Bootloader) -> int:
        """Bytes from the area's start that may hold an older image: the one the version
        record describes, or the whole image area without a record."""
        limit = self.layout.image_limit
        record = self._read_record(boot) if not boot.read_protected() else None
        return limit if record is None else min(record.image_length, limit)

    def _write_area(
        self, ctx: InterfaceContext, boot: Bootloader, wanted: bytes, current: bytes | None
    ) -> None:
        """Make the managed area hold ``wanted``. The version record's unit and the vector
        table's unit are erased first and written last (vector table, then record), so an
        interrupted run never leaves a bootable partial image nor a valid record next to one."""
        area = self.layout
        first, record = area.first, area.record

        def part(data: bytes, unit: Unit) -> bytes:
            return data[unit.offset : unit.offset + unit.size]

        if current is None:
            old = set(area.extent(self._old_extent(boot)))
            changed = [
                u
                for u in area.units
                if u in old or u == record or part(wanted, u).count(BLANK) != u.size
            ]
            dirty = list(changed)
        else:
            changed = [u for u in area.units if part(current, u) != part(wanted, u)]
            if changed:  # the vector table and the record go whatever else changes
                changed = sorted({*changed, first, record}, key=lambda u: u.offset)
            dirty = [u for u in changed if part(current, u).count(BLANK) != u.size]
        dirty.sort(key=lambda u: (u != record, u != first, u.offset))
        boot.erase_pages([u.number for u in dirty])
        body = [u for u in changed if u not in (first, record)]
        total = sum(u.size for u in changed)
        done = 0
        for unit in body:
            self._write_unit(boot, unit, part(wanted, unit))
            done += unit.size
            ctx.progress(done, total, "bytes flashed")
        self._verify_units(ctx, boot, body, wanted)
        for last in (first, record):
            if last in changed:
                self._write_unit(boot, last, part(wanted, last))
                done += last.size
                ctx.progress(done, total, "bytes flashed")
                self._verify_units(ctx, boot, [last], wanted)

    def _write_unit(self, boot: Bootloader, unit: Unit, content: bytes) -> None:
        start = self.layout.base + unit.offset
        pieces = [
            (offset, content[offset : offset + CHUNK]) for offset in range(0, len(content), CHUNK)
        ]
        if unit.offset == 0:
            # the vector table (initial SP, reset handler) goes in last, on its own: until
            # then Go or a reset finds nothing to start, even if power fails mid-page
            head = pieces.pop(0)[1]
            pieces = [(VECTORS, head[VECTORS:]), *pieces, (0, head[:VECTORS])]
        for offset, piece in pieces:
            # erased flash already reads 0xFF: trailing 0xFF bytes need no writing
            block = piece.rstrip(b"\xff")
            if block:
                boot.write_memory(start + offset, block)

    def _unit_problem(self, boot: Bootloader, unit: Unit, expected: bytes) -> str | None:
        address = self.layout.base + unit.offset
        if boot.has_checksum:
            found_crc = boot.get_checksum(address, len(expected))
            wanted_crc = stm32_crc(expected)
            if found_crc == wanted_crc:
                return None
            return (
                f"page {unit.number} at 0x{address:08x} has checksum 0x{found_crc:08x}, "
                f"expected 0x{wanted_crc:08x} (Get Checksum)"
            )
        found = boot.read_memory(address, len(expected))
        if found == expected:
            return None
        at = _first_difference(found, expected)
        return (
            f"page {unit.number} read back wrong at 0x{address + at:08x}: wrote "
            f"0x{expected[at]:02x}, read 0x{found[at]:02x}"
        )

    def _verify_units(
        self, ctx: InterfaceContext, boot: Bootloader, units: list[Unit], wanted: bytes
    ) -> None:
        retries = self.settings.write_retries
        for unit in units:
            expected = wanted[unit.offset : unit.offset + unit.size]
            for attempt in range(retries + 1):
                problem = self._unit_problem(boot, unit, expected)
                if problem is None:
                    break
                if attempt == retries:
                    raise InterfaceError(
                        f"{ctx.name}: {problem} (after {attempt + 1} attempt(s), "
                        f"--write-retries={retries})"
                    )
                ctx.log.warning("%s: %s; erasing and writing it again", ctx.name, problem)
                boot.erase_pages([unit.number])
                self._write_unit(boot, unit, expected)

    # ------------------------------------------------------------------ checks after a reboot

    def _check_installed(self, boot: Bootloader, image: bytes, version: str) -> str | None:
        """What is wrong with the flash as ``image`` with ``version`` installed, or ``None``."""
        record = self._read_record(boot)
        if record is None or record.version != version:
            found = "no valid version record" if record is None else f"version {record.version!r}"
            return f"the device holds {found}, expected {version!r}"
        base = self.layout.base
        padded = _words(image)
        if boot.has_checksum:
            same = boot.get_checksum(base, len(padded)) == stm32_crc(padded)
        else:
            same = boot.read_memory(base, len(image)) == image
        if not same or record.image_crc32 != zlib.crc32(image):
            return f"the flash no longer holds the image written (0x{base:08x}, {len(image)} bytes)"
        return None

    def _check_area(self, boot: Bootloader, expected: bytes) -> str | None:
        base = self.layout.base
        if boot.has_checksum:
            if boot.get_checksum(base, len(expected)) == stm32_crc(expected):
                return None
            return f"the area's checksum differs from the saved image's (0x{base:08x})"
        current = boot.read_memory(base, len(expected))
        if current == expected:
            return None
        at = base + _first_difference(current, expected)
        return f"it differs from the saved image from 0x{at:08x} on"

    def _verify_protected(self, ctx: InterfaceContext, version: str) -> None:
        """Under readout protection the flash cannot be read: the image was verified before
        protection was set; what is left to check is that the application runs (and says
        its version, where a plugin can ask it)."""
        answer = self._ask_application(ctx)
        running = answer.get("version")
        if running is not None and running != version:
            raise InterfaceError(
                f"{ctx.name}: the application reports version {running!r}, expected {version!r}"
            )
        with self._query_session(ctx) as boot:
            if boot is not None:
                raise InterfaceError(
                    f"{ctx.name}: the bootloader still answers: the application did not start"
                )

    # ------------------------------------------------------------------ helpers

    def _layout_for(self, pid: int) -> Layout:
        """The area's erase units on the part ``pid``; ``LayoutError`` if it does not fit.
        A ``--page-size`` given for a part with uniform pages wins over the table (the
        Topology names the board's part; a table entry may cover variants)."""
        s = self.settings
        family = FAMILIES.get(pid)
        if family is None:
            return uniform(s)
        if s.page_size_given:
            if family.uniform is None:
                raise LayoutError(
                    f"--page-size={s.page_size}: the {family.name} has sectors of different "
                    f"sizes ({describe(family)}), which the driver knows; remove --page-size"
                )
            return uniform(s)
        return for_family(s, family)

    def _use_part(self, ctx: InterfaceContext, pid: int) -> None:
        try:
            self.layout = self._layout_for(pid)
        except LayoutError as exc:
            raise InterfaceError(f"{ctx.name}: {exc}") from None
        if self.settings.bank_swap:
            self._check_dual_bank(ctx, pid)
        family = FAMILIES.get(pid)
        if family is None:
            return
        if family.note:
            ctx.log.info("%s: %s: %s", ctx.name, family.name, family.note)
        if self.settings.page_size_given and family.uniform != self.settings.page_size:
            ctx.log.warning(
                "%s: --page-size=%d, but the %s (product ID 0x%03x) erases %d-byte pages",
                ctx.name,
                self.settings.page_size,
                family.name,
                pid,
                family.uniform,
            )

    def _read_uid(self, ctx: InterfaceContext, boot: Bootloader) -> bytes | None:
        s = self.settings
        if s.uid_address is None:
            return None
        try:
            return boot.read_memory(s.uid_address, s.uid_length)
        except Nacked:
            if not boot.read_protected():
                raise
            ctx.log.warning(
                "%s: readout protection hides the unique ID; the Identity names the bus and "
                "address instead",
                ctx.name,
            )
            return None

    def _read_record(self, boot: Bootloader) -> VersionRecord | None:
        address = self.layout.base + self.layout.record.offset
        return decode(boot.read_memory(address, VersionRecord.size_limit()))

    def _remember(self, saved: Saved, version: str) -> None:
        known = self.records.load()
        hostrecord.save(
            self.records,
            known.updated(
                pid=saved.pid, bootloader_version=saved.bootloader_version, version=version
            ),
        )

    # ------------------------------------------------------------------ bank swap

    def _dual_bank(self) -> tuple[Family, BankSwap]:
        """The part's family and its bank-swap bit; checked by ``_use_part`` in the session."""
        family = FAMILIES[self.pid]
        assert family.bank_swap is not None
        return family, family.bank_swap

    def _check_dual_bank(self, ctx: InterfaceContext, pid: int) -> None:
        family = FAMILIES.get(pid)
        if family is None or family.bank_swap is None:
            name = f"the {family.name}" if family is not None else "this part"
            offered = ", ".join(f.name for f in FAMILIES.values() if f.bank_swap is not None)
            raise InterfaceError(
                f"{ctx.name}: --bank-swap=yes: {name} (product ID 0x{pid:03x}) has no bank "
                f"swap the driver drives (parts with one: {offered})"
            )
        end = self.layout.base + self.layout.size
        if end > family.flash_base + family.bank_size:
            raise InterfaceError(
                f"{ctx.name}: --bank-swap=yes: the area (--flash-base=0x{self.layout.base:08x}, "
                f"--flash-size={self.layout.size}) must lie in bank 1 of the {family.name}, "
                f"which ends at 0x{family.flash_base + family.bank_size:08x}"
            )

    def _option_word(self, boot: Bootloader, swap: BankSwap) -> int:
        raw = boot.read_memory(swap.option_address, 8)
        word, complement = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
        if word ^ complement != 0xFFFF_FFFF:
            raise InterfaceError(
                f"{self.component.label}: the option word at 0x{swap.option_address:08x} "
                f"(0x{word:08x}) and its complement (0x{complement:08x}) disagree"
            )
        return word

    def _booted_bank(self, boot: Bootloader) -> int:
        """The bank a reset from flash runs: the one BFB2 selects if its vector table is
        valid, else the other (as the bootloader's dual-bank check falls back)."""
        family, swap = self._dual_bank()
        chosen = 2 if self._option_word(boot, swap) & swap.mask else 1
        for bank in (chosen, 3 - chosen):
            start = family.flash_base + (bank - 1) * family.bank_size
            if bootable(boot.read_memory(start, VECTORS), self.settings):
                return bank
        return chosen

    def _set_boot_bank(
        self, ctx: InterfaceContext, boot: Bootloader, swap: BankSwap, bank: int
    ) -> None:
        """Make the next reset from flash boot ``bank``: Write Memory of the option double
        word with BFB2 changed; the bootloader then resets itself (the option byte launch)."""
        word = self._option_word(boot, swap)
        wanted = word | swap.mask if bank == 2 else word & ~swap.mask
        if wanted == word:
            return
        ctx.log.info(
            "%s: %s %s: the MCU boots bank %d from its next reset",
            ctx.name, "setting" if bank == 2 else "clearing", swap.name, bank,
        )  # fmt: skip
        data = wanted.to_bytes(4, "little") + (wanted ^ 0xFFFF_FFFF).to_bytes(4, "little")
        boot.write_memory(swap.option_address, data)
        self._wait_for_bootloader(ctx, boot, hint=False)
        if self._option_word(boot, swap) != wanted:
            raise InterfaceError(
                f"{ctx.name}: {swap.name} did not change (option word at "
                f"0x{swap.option_address:08x})"
            )

    def _check_bank(self, boot: Bootloader, bank: int) -> str | None:
        """Point the layout at ``bank``; what is wrong if the MCU does not boot it."""
        family, _ = self._dual_bank()
        self.layout = self._layout_for(self.pid).in_bank(bank, family)
        booted = self._booted_bank(boot)
        return None if booted == bank else f"the MCU boots bank {booted}, not bank {bank}"

    def _plan_bank_swap(
        self,
        ctx: InterfaceContext,
        boot: Bootloader,
        store: Store,
        pid: int,
        image: bytes,
        version: str,
    ) -> Saved:
        """A/B: the install writes the bank the MCU does not boot and swaps to it; a rollback
        swaps back to the untouched one."""
        family, _ = self._dual_bank()
        running = self._booted_bank(boot)
        self.layout = self.layout.in_bank(running, family)
        record = self._read_record(boot)
        self.layout = self._layout_for(pid)
        saved = Saved(
            pid=pid,
            target_version=version,
            image_sha256=_sha256(image),
            image_length=len(image),
            rollback="bank",
            previous_version="unknown" if record is None else record.version,
            previous_sha256="",
            protected=False,
            bootloader_version=boot.version_text,
            previous_bank=running,
            target_bank=3 - running,
        )
        store.save(saved, None)
        return saved

    def _leave_bootloader(self, ctx: InterfaceContext, boot: Bootloader) -> None:
        """Start the application again after a check: Go to the flash base, or with
        --bank-swap an NRST reset (Go would not map the bank BFB2 selects)."""
        if not self.settings.bank_swap:
            if bootable(boot.read_memory(self.settings.flash_base, 8), self.settings):
                boot.go(self.settings.flash_base)
            return
        if not self._reset(ctx, boot):
            raise InterfaceError(NEEDS_NRST.format(name=ctx.name))

    def _reset(self, ctx: InterfaceContext, boot: Bootloader) -> bool:
        """An NRST reset into the flash, if a plugin or --nrst-gpio can give one."""
        address = self.settings.address
        reset = (
            ctx.hook.i2c_reset_mcu(ctx=ctx, bus=boot.bus, address=address)
            if ctx.hook is not None
            else self.i2c_reset_mcu(ctx, boot.bus, address)
        )
        return bool(reset)

    def _bus_name(self) -> str:
        bus = self.settings.bus
        return f"sim-{Path(bus[4:]).name}" if bus.startswith("sim:") else f"i2c{bus}"

    def _saved(self, ctx: InterfaceContext) -> Saved:
        saved = Store(ctx).load()
        if saved is None:
            raise InterfaceError(f"{ctx.name}: no record of the install in {Store(ctx).directory}")
        return saved

    def _previous_image(self, ctx: InterfaceContext, saved: Saved) -> bytes:
        previous = ctx.previous_artifact
        data = previous.files[0].read_bytes() if previous is not None and previous.files else b""
        if _sha256(data) != saved.previous_sha256:
            raise InterfaceError(
                f"{ctx.name}: the previous Artifact's payload is gone or changed since the "
                f"install began; cannot roll back"
            )
        return data

    def _start_application(self, ctx: InterfaceContext, *, only_if_bootable: bool = False) -> None:
        base = self.settings.flash_base
        with self._session(ctx, area=False) as boot:
            if (
                only_if_bootable
                and not self.settings.bank_swap  # the bank BFB2 selects is checked after
                and not boot.read_protected()
                and not bootable(boot.read_memory(base, 8), self.settings)
            ):
                ctx.log.info(
                    "%s: the flash holds no application; leaving the MCU in its bootloader",
                    ctx.name,
                )
                return
            reset = self._reset(ctx, boot)
            if not reset and self.settings.bank_swap:
                raise InterfaceError(NEEDS_NRST.format(name=ctx.name))
            if not reset:
                try:
                    boot.go(base)
                except Nacked as exc:
                    raise InterfaceError(
                        f"{exc.message}: under readout protection the bootloader refuses Go; "
                        f"wire NRST (--nrst-gpio or the i2c_reset_mcu hook)"
                    ) from None
            if not self._handshake(boot):
                return  # the bootloader has left the bus: the application runs
        how = "the NRST reset" if reset else f"Go to 0x{base:08x}"
        raise InterfaceError(
            f"{ctx.name}: the bootloader still answers after {how}: the application did not start"
        )

    def _check_listing(self, ctx: InterfaceContext, files: list[tuple[str, int]]) -> None:
        if len(files) != 1:
            names = ", ".join(name for name, _ in files) or "none"
            raise InterfaceError(
                f"{ctx.name}: the i2c driver flashes exactly one payload file; "
                f"the Artifact has {len(files)} ({names})"
            )
        name, size = files[0]
        limit = self.layout.image_limit
        if not 8 <= size <= limit:
            raise InterfaceError(
                f"{ctx.name}: payload {name} is {size} bytes; the image area holds 8 to {limit} "
                f"bytes (0x{self.settings.flash_base:08x} up to the version record at "
                f"0x{self.layout.base + limit:08x})"
            )

    def _payload(self, ctx: InterfaceContext) -> bytes:
        files = (
            sorted(p for p in ctx.files_dir.iterdir() if p.is_file())
            if ctx.files_dir.is_dir()
            else []
        )
        self._check_listing(ctx, [(p.name, p.stat().st_size) for p in files])
        image = files[0].read_bytes()
        if not bootable(image, self.settings):
            raise InterfaceError(
                f"{ctx.name}: payload {files[0].name} does not start with a Cortex-M vector table "
                f"(initial stack pointer 0x{int.from_bytes(image[:4], 'little'):08x}, reset "
                f"handler 0x{int.from_bytes(image[4:8], 'little'):08x}); Go at "
                f"0x{self.settings.flash_base:08x} could not start it"
            )
        return image

    def _target_version(self, ctx: InterfaceContext) -> str:
        if ctx.artifact is None:
            raise InterfaceError(f"{ctx.name}: ArtifactInstall called without an Artifact")
        version = ctx.artifact.version_for(self.component.interface)
        try:
            VersionRecord.for_image(version, b"").encode()
        except ValueError as exc:
            raise InterfaceError(
                f"{ctx.name}: cannot record the Artifact's version {version!r}: {exc}"
            ) from exc
        return version
