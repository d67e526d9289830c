"""The ``i2c`` driver: updates an STM32 through its system bootloader on an I2C bus.

What each state does:

- Identity: Get ID (the part number), plus the MCU's unique ID when ``--uid-address`` says
  where it is.
- Provides: the version record the driver wrote with the image (``unknown`` without one).
- ArtifactInstall: read back the whole managed area and keep it (for rollback); erase what
  must change, the version record's page first; write the image in 256-byte blocks; read back
  and compare (a page that differs is erased and written again, ``--write-retries`` times);
  write the version record last.
- ArtifactReboot: Go to the flash base, and check that the bootloader left the bus.
- ArtifactVerifyReboot: back in the bootloader, the record and the image read back as written.
- ArtifactRollback: write the kept area back the same way; ArtifactRollbackReboot starts what
  the flash holds (if it holds an application); ArtifactVerifyRollbackReboot checks that the
  flash reads back byte for byte as kept.

Queries leave the MCU as they found it: if it was running its application, they restart it
into the bootloader (``i2c_enter_bootloader``) and start the application again afterwards.
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
from contextlib import contextmanager
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

from mender_orchestrator_i2c import hookspecs
from mender_orchestrator_i2c.bus import I2CBus, ResettableBus, open_builtin
from mender_orchestrator_i2c.protocol import Bootloader, Nacked, NoAnswer
from mender_orchestrator_i2c.record import VersionRecord, decode
from mender_orchestrator_i2c.settings import PARSER, Settings, parse

BLANK = 0xFF
CHUNK = 256


@dataclass(frozen=True)
class Saved:
    """What ArtifactInstall keeps for the states after it (``tmp/i2c-driver/state.json``)."""

    pid: int
    previous_sha256: str
    previous_bootable: bool
    target_version: str
    image_sha256: str
    image_length: int


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

    def save(self, saved: Saved, previous: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.directory / "previous.bin", previous)
        write_atomic(self.directory / "state.json", json.dumps(asdict(saved)).encode())

    def previous(self, saved: Saved) -> bytes:
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


class I2CDriver(DriverBase):
    """In-process driver for the ``i2c`` Interface; one instance per Component.

    The class is the ``mender_orchestrator.drivers`` entry point: the engine calls it with the
    Component, and the constructor rejects bad ``interface_args`` with a ``ConfigError``.
    """

    extra_hookspecs = hookspecs
    driver_api = ">=1.0,<2"  # the orchestrator_core.driver_api versions this is written for
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        super().__init__(component)
        self.settings = parse(component)

    # ------------------------------------------------------------------ built-in extensions

    @hookimpl(trylast=True)
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> I2CBus:
        return open_builtin(bus)

    @hookimpl(trylast=True)
    def i2c_enter_bootloader(self, ctx: InterfaceContext, bus: I2CBus, address: int) -> bool | None:
        if isinstance(bus, ResettableBus):
            bus.reset_to_bootloader()
            return True
        return None

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        s = self.settings
        with self._session(ctx, restore=True) as boot:
            pid = boot.get_id()
            uid = None if s.uid_address is None else boot.read_memory(s.uid_address, s.uid_length)
        if uid is not None:
            return f"stm32-{pid:03x}-{uid.hex()}"
        bus = f"sim-{Path(s.bus[4:]).name}" if s.bus.startswith("sim:") else f"i2c{s.bus}"
        return f"stm32-{pid:03x}-{bus}-0x{s.address:02x}"

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        with self._session(ctx, restore=True) as boot:
            record = self._read_record(boot)
        if record is None:
            ctx.log.warning(
                "%s: no valid version record at 0x%08x; reporting version 'unknown'",
                ctx.name,
                self.settings.version_record,
            )
        version = "unknown" if record is None else record.version
        return {f"rootfs-image.{self.component.interface}.version": version}

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        with self._session(ctx, restore=True) as boot:
            pid = boot.get_id()
        return [
            ("i2c_bus", self.settings.bus),
            ("i2c_address", f"0x{self.settings.address:02x}"),
            ("stm32_pid", f"0x{pid:03x}"),
            ("stm32_bootloader_version", boot.version_text),
        ]

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
        s = self.settings
        image = self._payload(ctx)
        version = self._target_version(ctx)
        record = VersionRecord.for_image(version, image).encode()
        store = Store(ctx)
        with self._session(ctx, restore=False) as boot:
            pid = boot.get_id()
            current = boot.read_memory(s.flash_base, s.flash_size)
            saved = store.load()
            if saved is None:
                saved = Saved(
                    pid=pid,
                    previous_sha256=_sha256(current),
                    previous_bootable=bootable(current, s),
                    target_version=version,
                    image_sha256=_sha256(image),
                    image_length=len(image),
                )
                store.save(saved, current)
            else:
                ctx.log.info("%s: keeping the image saved by the first install attempt", ctx.name)
            wanted = bytearray(b"\xff" * s.flash_size)
            wanted[: len(image)] = image
            offset = s.image_limit
            wanted[offset : offset + len(record)] = record
            ctx.log.info(
                "%s: flashing %d bytes, version %s (bootloader v%s, write 0x%02x, erase 0x%02x)",
                ctx.name,
                len(image),
                version,
                boot.version_text,
                boot.write_command,
                boot.erase_command,
            )
            self._make_area(ctx, boot, current, bytes(wanted))

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        self._start_application(ctx)

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        s = self.settings
        with self._session(ctx, restore=True) as boot:
            pid = boot.get_id()
            record = self._read_record(boot)
            image = boot.read_memory(s.flash_base, saved.image_length)
        if pid != saved.pid:
            raise InterfaceError(
                f"{ctx.name}: answers with part number 0x{pid:03x}, not 0x{saved.pid:03x} as "
                f"during the install: a different MCU?"
            )
        if record is None or record.version != saved.target_version:
            found = "no valid version record" if record is None else f"version {record.version!r}"
            raise InterfaceError(
                f"{ctx.name}: after the reboot the device holds {found}, "
                f"expected {saved.target_version!r}"
            )
        if _sha256(image) != saved.image_sha256 or record.image_crc32 != zlib.crc32(image):
            raise InterfaceError(
                f"{ctx.name}: after the reboot the flash no longer holds the image written "
                f"(0x{s.flash_base:08x}, {saved.image_length} bytes)"
            )

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
        previous = store.previous(saved)
        with self._session(ctx, restore=False) as boot:
            current = boot.read_memory(self.settings.flash_base, self.settings.flash_size)
            self._make_area(ctx, boot, current, previous)

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
        previous = store.previous(saved)
        s = self.settings
        with self._session(ctx, restore=True) as boot:
            current = boot.read_memory(s.flash_base, s.flash_size)
        if current != previous:
            at = s.flash_base + _first_difference(current, previous)
            raise InterfaceError(
                f"{ctx.name}: the rollback did not restore the flash: it differs from the saved "
                f"image from 0x{at:08x} on"
            )

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _session(self, ctx: InterfaceContext, *, restore: bool) -> Iterator[Bootloader]:
        """The bus opened and the bootloader answering; with ``restore``, an MCU found running
        its application is started again when the work is done."""
        s = self.settings
        if ctx.hook is not None:
            bus = ctx.hook.i2c_open_bus(ctx=ctx, bus=s.bus)
        else:
            bus = self.i2c_open_bus(ctx, s.bus)
        try:
            boot = Bootloader(bus, s, ctx.deadline, ctx.name)
            was_running = not self._connect(ctx, bus, boot)
            yield boot
            if restore and was_running:
                boot.go(s.flash_base)
        finally:
            bus.close()

    def _connect(self, ctx: InterfaceContext, bus: I2CBus, boot: Bootloader) -> bool:
        """Reach the bootloader; ``True`` if it was already there."""
        try:
            boot.connect()
            return True
        except Nacked:
            boot.connect()  # it was in the middle of a command; the NACK put it back in step
            return True
        except NoAnswer:
            pass
        address = self.settings.address
        if ctx.hook is not None:
            entered = ctx.hook.i2c_enter_bootloader(ctx=ctx, bus=bus, address=address)
        else:
            entered = self.i2c_enter_bootloader(ctx, bus, address)
        started = time.monotonic()
        give_up = min(ctx.deadline, started + self.settings.connect_timeout)
        while True:
            try:
                boot.connect()
                return False
            except NoAnswer as exc:
                if time.monotonic() >= give_up:
                    hint = (
                        ""
                        if entered
                        else " If the MCU runs its application, install a plugin implementing "
                        "the i2c_enter_bootloader hook (drive BOOT0/NRST) for this board."
                    )
                    raise InterfaceError(
                        f"{ctx.name}: the bootloader did not answer within "
                        f"{give_up - started:.1f} s (--connect-timeout): {exc}.{hint}"
                    ) from exc
                time.sleep(0.02)

    def _read_record(self, boot: Bootloader) -> VersionRecord | None:
        return decode(boot.read_memory(self.settings.version_record, VersionRecord.size_limit()))

    def _saved(self, ctx: InterfaceContext) -> Saved:
        saved = Store(ctx).load()
        if saved is None:
            raise InterfaceError(f"{ctx.name}: no record of the install in {Store(ctx).directory}")
        return saved

    def _start_application(self, ctx: InterfaceContext, *, only_if_bootable: bool = False) -> None:
        base = self.settings.flash_base
        with self._session(ctx, restore=False) as boot:
            if only_if_bootable and not bootable(boot.read_memory(base, 8), self.settings):
                ctx.log.info(
                    "%s: the flash holds no application; leaving the MCU in its bootloader",
                    ctx.name,
                )
                return
            boot.go(base)
            try:
                boot.connect()
            except NoAnswer:
                return  # the bootloader has left the bus: the application runs
        raise InterfaceError(
            f"{ctx.name}: the bootloader still answers after Go to 0x{base:08x}: "
            f"the application did not start"
        )

    def _check_listing(self, ctx: InterfaceContext, files: list[tuple[str, int]]) -> None:
        if len(files) != 1:
            names = ", ".join(name for name, _ in files) or "none"
            raise InterfaceError(
                f"{ctx.name}: the i2c driver flashes exactly one payload file; "
                f"the Artifact has {len(files)} ({names})"
            )
        name, size = files[0]
        limit = self.settings.image_limit
        if not 8 <= size <= limit:
            raise InterfaceError(
                f"{ctx.name}: payload {name} is {size} bytes; the image area holds 8 to {limit} "
                f"bytes (0x{self.settings.flash_base:08x} up to the version record at "
                f"0x{self.settings.version_record:08x})"
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

    def _make_area(
        self, ctx: InterfaceContext, boot: Bootloader, current: bytes, wanted: bytes
    ) -> None:
        """Turn the managed area from ``current`` into ``wanted``, touching only pages that
        differ. The version record's page is erased first and written last, so an interrupted
        run never leaves a valid record next to a partial image."""
        s = self.settings
        size = s.page_size
        record_page = (s.version_record - s.flash_base) // size

        def page(data: bytes, number: int) -> bytes:
            return data[number * size : (number + 1) * size]

        changed = [p for p in s.pages if page(current, p) != page(wanted, p)]
        dirty = [p for p in changed if page(current, p).count(BLANK) != size]
        if record_page in dirty:
            dirty.remove(record_page)
            dirty.insert(0, record_page)
        boot.erase_pages(dirty)
        body = [p for p in changed if p != record_page]
        total = len(changed) * size
        for written, number in enumerate(body, start=1):
            self._write_page(boot, number, page(wanted, number))
            ctx.progress(written * size, total, "bytes flashed")
        self._verify_pages(ctx, boot, body, wanted)
        if record_page in changed:
            self._write_page(boot, record_page, page(wanted, record_page))
            ctx.progress(total, total, "bytes flashed")
            self._verify_pages(ctx, boot, [record_page], wanted)

    def _write_page(self, boot: Bootloader, number: int, content: bytes) -> None:
        start = self.settings.flash_base + number * self.settings.page_size
        for offset in range(0, len(content), CHUNK):
            # erased flash already reads 0xFF: trailing 0xFF bytes need no writing
            block = content[offset : offset + CHUNK].rstrip(b"\xff")
            if block:
                boot.write_memory(start + offset, block)

    def _verify_pages(
        self, ctx: InterfaceContext, boot: Bootloader, pages: list[int], wanted: bytes
    ) -> None:
        s = self.settings
        size = s.page_size
        for number in pages:
            address = s.flash_base + number * size
            expected = wanted[number * size : (number + 1) * size]
            for attempt in range(s.write_retries + 1):
                found = boot.read_memory(address, size)
                if found == expected:
                    break
                at = _first_difference(found, expected)
                problem = (
                    f"page {number} read back wrong at 0x{address + at:08x}: wrote "
                    f"0x{expected[at]:02x}, read 0x{found[at]:02x}"
                )
                if attempt == s.write_retries:
                    raise InterfaceError(
                        f"{ctx.name}: {problem} (after {attempt + 1} attempt(s), "
                        f"--write-retries={s.write_retries})"
                    )
                ctx.log.warning("%s: %s; erasing and writing it again", ctx.name, problem)
                boot.erase_pages([number])
                self._write_page(boot, number, expected)
