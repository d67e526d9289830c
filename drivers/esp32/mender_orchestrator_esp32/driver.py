"""The ``esp32`` driver: an ESP32 updated through its ROM serial loader, A/B over ESP-IDF's OTA
partitions with the bootloader's app rollback.

- Identity: ``esp32-<MAC>`` from eFuse. Provides: the ``esp_app_desc_t`` version of the app
  the bootloader starts (per otadata).
- ArtifactInstall: the image (an ESP-IDF app whose descriptor version is the Artifact's) goes
  to the OTA slot not running, checked by MD5 on the chip; then otadata selects it with state
  NEW, in the sector not active (as ``esp_ota_set_boot_partition``). What a rollback needs (the
  two otadata entries, the running slot and version) is kept in ``tmp/esp32-driver/``.
- ArtifactReboot: the chip leaves the loader; the bootloader marks the app PENDING_VERIFY and
  starts it.
- ArtifactVerifyReboot: back in the loader (which does not run the bootloader), otadata must
  select the new slot in state PENDING_VERIFY (or VALID) and the slot must hold the new app.
  The chip stays in the loader: a boot now would roll the unconfirmed app back.
- ArtifactCommit: the entry's state becomes VALID (``esp_ota_mark_app_valid_cancel_rollback``
  done from outside), then the app starts.
- ArtifactRollback: the kept otadata entries are written back; ArtifactRollbackReboot starts
  the app; ArtifactVerifyRollbackReboot checks the previous slot and version are selected.

Queries never restart a running application: they ask it (the ``esp32_query_application``
hook), else answer from what the driver recorded on the host whenever it changed otadata
(``hostrecord``). Only the first query of a chip nothing is recorded for reads it (the MAC and
the selected app's descriptor), then starts the application again as the update states do.
An ESP32 is served by its ROM alone; the later chips (S2, S3, C3, C2, C6, H2) through esptool's
flasher stub, uploaded at every connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceContext,
    InterfaceError,
    RebootNeed,
    hookimpl,
    write_atomically,
)

from mender_orchestrator_esp32 import hookspecs, hostrecord, idf
from mender_orchestrator_esp32.hostrecord import ChipRecord
from mender_orchestrator_esp32.link import Session, session
from mender_orchestrator_esp32.settings import PARSER, Settings, parse

# esp_image_header_t.chip_id of each chip the driver takes
CHIP_IDS = {
    "esp32": 0, "esp32s2": 2, "esp32s3": 9, "esp32c3": 5, "esp32c2": 12, "esp32c6": 13,
    "esp32h2": 16,
}  # fmt: skip
# the host record's fields Inventory reports, in its order
_INVENTORY = ("mac", "partition", "ota_state", "project", "idf_version")


@dataclass(frozen=True)
class Saved:
    """What ArtifactInstall keeps for the states after it (``tmp/esp32-driver/state.json``)."""

    mac: str
    otadata: list[str]  # the two entries as they were, hex
    previous_slot: str
    previous_version: str
    target_slot: str
    target_version: str
    image_md5: str
    image_length: int


class Store:
    def __init__(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: this state needs the File API directory")
        self.directory = ctx.work_dir / "tmp" / "esp32-driver"

    def load(self) -> Saved | None:
        path = self.directory / "state.json"
        try:
            return Saved(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise InterfaceError(f"{path} is unreadable: {exc}") from exc

    def save(self, saved: Saved) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.directory / "state.json", json.dumps(asdict(saved)).encode())

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Layout:
    """The partition table and otadata as read from the chip."""

    table: idf.PartitionTable
    otadata: idf.OtaData

    @property
    def selected(self) -> idf.Partition:
        return idf.selected_partition(self.table, self.otadata)

    @property
    def active_state(self) -> idf.OtaState | None:
        active = self.otadata.active()
        if active is None:
            return None
        try:
            return idf.OtaState(self.otadata.entries[active].state)
        except ValueError:
            return None

    def describe(self, desc: idf.AppDescription | None) -> dict[str, str | None]:
        """What the host record keeps of this layout, ``desc`` being the selected app's."""
        state = self.active_state
        return {
            "version": "unknown" if desc is None else desc.version,
            "partition": self.selected.label,
            "ota_state": "none" if state is None else state.name,
            "project": "" if desc is None else desc.project,
            "idf_version": "" if desc is None else desc.idf_version,
        }


class Esp32Driver(DriverBase):
    """In-process driver for the ``esp32`` Interface; one instance per Component."""

    driver_api = ">=1.2,<2"  # HostRecordFile
    extra_hookspecs = hookspecs
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        super().__init__(component)
        self.settings: Settings = parse(component)
        self.records = hostrecord.file_for(self.settings.state_dir, self.settings.port)

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        known = self.records.load()
        if known.mac is None:
            mac = self._ask_application(ctx).get("mac")
            if mac is None:
                known = self._first_contact(ctx, known)
            else:
                known = known.updated(mac=mac)
                self._record(ctx, known, strict=False)
        return f"esp32-{known.mac}"

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        version = self._ask_application(ctx).get("version")
        if version is None:
            known = self.records.load()
            if known.version is None:
                known = self._first_contact(ctx, known)
            version = known.version
        return {f"rootfs-image.{self.component.interface}.version": version or "unknown"}

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        answer = self._ask_application(ctx)
        known = self.records.load()
        if not known.complete and not set(_INVENTORY) <= answer.keys():
            known = self._first_contact(ctx, known)
        values = {**asdict(known), **answer}
        mac = values["mac"] or ""
        return [
            ("esp32_port", self.settings.port),
            ("esp32_mac", ":".join(mac[i : i + 2] for i in range(0, len(mac), 2))),
            *((f"esp32_{key}", values[key] or "") for key in _INVENTORY if key != "mac"),
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
        # The payload is left to the engine (files/); only its listing is checked here.
        if ctx.artifact is not None and ctx.artifact.files:
            self._check_listing(ctx, list(ctx.artifact.files))

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        image = self._payload(ctx)
        version = self._target_version(ctx, image)
        store = Store(ctx)
        # a record that cannot be kept would leave the queries reporting the old app: find
        # out before the chip is touched
        self._record(ctx, self.records.load())
        with session(self.settings, ctx) as s:
            mac = s.mac()
            layout = self._layout(s)
            saved = store.load()
            running = layout.selected
            target = (
                self._next_slot(layout.table, running)
                if saved is None
                else layout.table.by_label(saved.target_slot)
            )
            if len(image) > target.size:
                raise InterfaceError(
                    f"{ctx.name}: the image ({len(image)} bytes) does not fit partition "
                    f"{target.label} ({target.size} bytes)"
                )
            if saved is None:
                desc = self._description(s, running)
                saved = Saved(
                    mac=mac,
                    otadata=[e.encode().hex() for e in layout.otadata.entries],
                    previous_slot=running.label,
                    previous_version="unknown" if desc is None else desc.version,
                    target_slot=target.label,
                    target_version=version,
                    image_md5=hashlib.md5(image).hexdigest(),
                    image_length=len(image),
                )
                store.save(saved)
            else:
                ctx.log.info("%s: continuing the install into %s", ctx.name, saved.target_slot)
            ctx.log.info(
                "%s: writing %s (%d bytes) to %s at 0x%x, %d baud",
                ctx.name, version, len(image), target.label, target.offset, self.settings.baud,
            )  # fmt: skip
            s.write(
                target.offset,
                image,
                f"the app image in {target.label}",
                lambda done, total: ctx.progress(done, total, "bytes flashed"),
            )
            slots = layout.table.ota_slots
            index, otadata = layout.otadata.select(
                slots.index(target), len(slots), idf.OtaState.NEW
            )
            self._write_entry(s, layout.table, index, otadata)
        self._check_recorded_mac(ctx, mac)
        installed = Layout(layout.table, otadata).describe(idf.AppDescription.decode(image))
        self._record(ctx, self.records.load().updated(mac=mac, **installed))

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        with session(self.settings, ctx) as s:
            s.start_application()

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        with session(self.settings, ctx) as s:
            self._check_same_chip(ctx, s, saved)
            layout = self._layout(s)
            target = layout.table.by_label(saved.target_slot)
            desc = self._description(s, target)
            md5 = s.md5(target.offset, saved.image_length, f"the app image in {target.label}")
        self._check_booted(ctx, layout, saved)
        if md5 != saved.image_md5:
            raise InterfaceError(
                f"{ctx.name}: {target.label} no longer holds the image written (MD5 {md5}, "
                f"not {saved.image_md5})"
            )
        if desc is None or desc.version != saved.target_version:
            found = "no app" if desc is None else f"version {desc.version!r}"
            raise InterfaceError(
                f"{ctx.name}: {saved.target_slot} holds {found}, not {saved.target_version!r}"
            )
        self._record(ctx, self.records.load().updated(**layout.describe(desc)))

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        with session(self.settings, ctx) as s:
            layout = self._layout(s)
            active = layout.otadata.active()
            if active is None or layout.selected.label != saved.target_slot:
                raise InterfaceError(
                    f"{ctx.name}: cannot confirm {saved.target_slot}: otadata selects "
                    f"{layout.selected.label}"
                )
            if layout.active_state != idf.OtaState.VALID:
                otadata = layout.otadata.set_state(active, idf.OtaState.VALID)
                self._write_entry(s, layout.table, active, otadata)
                layout = Layout(layout.table, otadata)
            # what the chip boots from now on, written before the boot a query could race
            self._record(
                ctx,
                self.records.load().updated(
                    **layout.describe(self._description(s, layout.selected))
                ),
            )
            s.start_application()

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is not None:
            Store(ctx).remove()

    # ------------------------------------------------------------------ error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        saved = Store(ctx).load()
        if saved is None:
            ctx.log.info("%s: the install never reached the chip; nothing to roll back", ctx.name)
            return
        previous = idf.OtaData(
            (
                idf.OtaEntry.decode(bytes.fromhex(saved.otadata[0])),
                idf.OtaEntry.decode(bytes.fromhex(saved.otadata[1])),
            )
        )
        with session(self.settings, ctx) as s:
            self._check_same_chip(ctx, s, saved)
            layout = self._layout(s)
            for index in (0, 1):
                if layout.otadata.entries[index] != previous.entries[index]:
                    self._write_entry(s, layout.table, index, previous)
            restored = Layout(layout.table, previous)
            desc = self._description(s, restored.selected)
        self._record(ctx, self.records.load().updated(**restored.describe(desc)))

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        if Store(ctx).load() is None:
            return  # the chip was not touched: it runs what it ran
        with session(self.settings, ctx) as s:
            s.start_application()

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        saved = Store(ctx).load()
        if saved is None:
            return
        with session(self.settings, ctx) as s:
            self._check_same_chip(ctx, s, saved)
            layout = self._layout(s)
            desc = self._description(s, layout.selected)
            version = "unknown" if desc is None else desc.version
            if (layout.selected.label, version) != (saved.previous_slot, saved.previous_version):
                raise InterfaceError(
                    f"{ctx.name}: after the rollback otadata selects {layout.selected.label} "
                    f"(version {version!r}), not {saved.previous_slot} (version "
                    f"{saved.previous_version!r}) as before the install"
                )
            self._record(ctx, self.records.load().updated(**layout.describe(desc)))
            self._leave_running(s, layout)

    # ------------------------------------------------------------------ host record

    def _ask_application(self, ctx: InterfaceContext) -> dict[str, str]:
        if ctx.hook is None or not ctx.hook.esp32_query_application.get_hookimpls():
            return {}
        answer = ctx.hook.esp32_query_application(ctx=ctx, port=self.settings.port)
        values = {key: str(value) for key, value in (answer or {}).items()}
        if "mac" in values:
            # as the Identity spells it: 12 lower-case hex digits, whatever the firmware prints
            mac = re.sub(r"[:\-]", "", values["mac"]).lower()
            if re.fullmatch(r"[0-9a-f]{12}", mac):
                values["mac"] = mac
            else:
                ctx.log.warning(
                    "%s: esp32_query_application answered mac %r, not 12 hexadecimal digits; "
                    "ignoring it",
                    ctx.name,
                    values.pop("mac"),
                )
        return values

    def _first_contact(self, ctx: InterfaceContext, known: ChipRecord) -> ChipRecord:
        """Nothing recorded for this chip yet: read it once (it restarts the app, as an update
        state does), record what it runs, and answer from that from now on."""
        ctx.log.info(
            "%s: nothing recorded in %s; reading the chip once", ctx.name, self.records.path
        )
        with session(self.settings, ctx) as s:
            mac = s.mac()
            layout = self._layout(s)
            desc = self._description(s, layout.selected)
            self._leave_running(s, layout)
        if desc is None:
            ctx.log.warning(
                "%s: no ESP-IDF app in %s (the partition otadata selects); version 'unknown'",
                ctx.name,
                layout.selected.label,
            )
        record = known.updated(mac=mac, **layout.describe(desc))
        self._record(ctx, record, strict=False)
        return record

    def _record(self, ctx: InterfaceContext, record: ChipRecord, *, strict: bool = True) -> None:
        """Keep ``record`` for the queries. In an update state a failure fails the state: the
        record would otherwise report what the chip no longer boots. A query that read the chip
        answers anyway (it reads it again next time)."""
        try:
            self.records.save(record)
        except OSError as exc:
            problem = (
                f"{ctx.name}: cannot record what the chip runs in {self.records.path}: "
                f"{exc.strerror or exc} (--state-dir)"
            )
            if strict:
                raise InterfaceError(problem) from exc
            ctx.log.warning("%s", problem)

    def _check_recorded_mac(self, ctx: InterfaceContext, mac: str) -> None:
        recorded = self.records.load().mac
        if recorded is not None and recorded != mac:
            ctx.log.warning(
                "%s: the chip on %s has MAC %s; the Identity recorded in %s stays esp32-%s "
                "(remove that file if the chip was replaced)",
                ctx.name, self.settings.port, mac, self.records.path, recorded,
            )  # fmt: skip

    # ------------------------------------------------------------------ helpers

    def _layout(self, s: Session) -> Layout:
        raw = self._read_table(s)
        try:
            table = idf.PartitionTable.decode(raw)
            ota, _slots = table.ota_layout()
        except idf.FormatError as exc:
            raise InterfaceError(f"{s.ctx.name}: {s.where}: {exc}") from exc
        first = s.read(ota.offset, idf.OtaEntry.SIZE, "otadata")
        second = s.read(ota.offset + idf.SECTOR, idf.OtaEntry.SIZE, "otadata")
        return Layout(table, idf.OtaData((idf.OtaEntry.decode(first), idf.OtaEntry.decode(second))))

    @staticmethod
    def _read_table(s: Session) -> bytes:
        """The partition table up to its MD5 entry (or its end), not the whole 3 KiB: the ROM
        reads 64 bytes a command."""
        raw = b""
        while len(raw) < idf.PARTITION_TABLE_SIZE:
            raw += s.read(idf.PARTITION_TABLE_OFFSET + len(raw), 64, "the partition table")
            last = raw[-64:]
            if any(last[i : i + 2] != idf.ENTRY_MAGIC for i in (0, 32)):
                break
        return raw

    def _description(self, s: Session, partition: idf.Partition) -> idf.AppDescription | None:
        start = s.read(
            partition.offset, idf.APP_DESC_OFFSET + idf.APP_DESC_SIZE, f"{partition.label}'s header"
        )
        return idf.AppDescription.decode(start)

    def _write_entry(
        self, s: Session, table: idf.PartitionTable, index: int, otadata: idf.OtaData
    ) -> None:
        at = table.otadata.offset + index * idf.SECTOR
        s.write(at, idf.OtaData.sector(otadata.entries[index]), f"otadata sector {index}")

    @staticmethod
    def _next_slot(table: idf.PartitionTable, running: idf.Partition) -> idf.Partition:
        """``esp_ota_get_next_update_partition``: the OTA slot after the running one."""
        slots = table.ota_slots
        if running not in slots:
            return slots[0]
        return slots[(slots.index(running) + 1) % len(slots)]

    def _leave_running(self, s: Session, layout: Layout) -> None:
        """Start the app again after a query, unless a boot would roll an unconfirmed one back."""
        if layout.active_state in (idf.OtaState.NEW, idf.OtaState.PENDING_VERIFY):
            s.ctx.log.info(
                "%s: otadata holds an unconfirmed app (%s); leaving the chip in the loader",
                s.ctx.name,
                layout.active_state.name,
            )
            return
        s.start_application()

    def _check_booted(self, ctx: InterfaceContext, layout: Layout, saved: Saved) -> None:
        state = layout.active_state
        if layout.selected.label != saved.target_slot:
            entries = ", ".join(
                f"seq {e.seq} {e.state_name}"
                for e in layout.otadata.entries
                if e.seq != idf.UNDEFINED
            )
            raise InterfaceError(
                f"{ctx.name}: the bootloader rolled back: otadata selects "
                f"{layout.selected.label}, not {saved.target_slot} ({entries})"
            )
        if state == idf.OtaState.NEW:
            raise InterfaceError(
                f"{ctx.name}: {saved.target_slot} was never started (its otadata state is still "
                f"NEW): the reset did not reach the chip (--after={self.settings.after})"
            )
        if state not in (idf.OtaState.PENDING_VERIFY, idf.OtaState.VALID):
            raise InterfaceError(
                f"{ctx.name}: {saved.target_slot} is in otadata state "
                f"{'none' if state is None else state.name}, not PENDING_VERIFY"
            )

    def _check_same_chip(self, ctx: InterfaceContext, s: Session, saved: Saved) -> None:
        mac = s.mac()
        if mac != saved.mac:
            raise InterfaceError(
                f"{ctx.name}: the chip on {self.settings.port} has MAC {mac}, not {saved.mac} "
                f"as during the install: a different chip?"
            )

    def _saved(self, ctx: InterfaceContext) -> Saved:
        saved = Store(ctx).load()
        if saved is None:
            raise InterfaceError(f"{ctx.name}: no record of the install in {Store(ctx).directory}")
        return saved

    def _check_listing(self, ctx: InterfaceContext, files: list[tuple[str, int]]) -> None:
        if len(files) != 1:
            names = ", ".join(name for name, _ in files) or "none"
            raise InterfaceError(
                f"{ctx.name}: the esp32 driver flashes exactly one ESP-IDF app image; "
                f"the Artifact has {len(files)} ({names})"
            )

    def _payload(self, ctx: InterfaceContext) -> bytes:
        files = (
            sorted(p for p in ctx.files_dir.iterdir() if p.is_file())
            if ctx.files_dir.is_dir()
            else []
        )
        self._check_listing(ctx, [(p.name, p.stat().st_size) for p in files])
        return _check_image(ctx, files[0], self.settings.chip)

    def _target_version(self, ctx: InterfaceContext, image: bytes) -> str:
        if ctx.artifact is None:
            raise InterfaceError(f"{ctx.name}: ArtifactInstall called without an Artifact")
        version = ctx.artifact.version_for(self.component.interface)
        desc = idf.AppDescription.decode(image)
        if desc is None or desc.version != version:
            raise InterfaceError(
                f"{ctx.name}: the image's app descriptor says version "
                f"{None if desc is None else desc.version!r}, the Artifact provides {version!r}: "
                f"Provides reads the descriptor, so they must be the same"
            )
        return version


def _check_image(ctx: InterfaceContext, path: Path, chip: str) -> bytes:
    image = path.read_bytes()
    problem = None
    if len(image) < idf.APP_DESC_OFFSET + idf.APP_DESC_SIZE or image[0] != idf.IMAGE_MAGIC:
        problem = f"does not start with an ESP app image header (magic 0x{idf.IMAGE_MAGIC:02X})"
    elif idf.AppDescription.decode(image) is None:
        problem = f"has no esp_app_desc_t (magic 0x{idf.APP_DESC_MAGIC:08X}) in its first segment"
    elif idf.image_chip_id(image) != CHIP_IDS[chip]:
        problem = (
            f"is built for chip ID {idf.image_chip_id(image)}, not {chip}'s ({CHIP_IDS[chip]})"
        )
    if problem is not None:
        raise InterfaceError(f"{ctx.name}: payload {path.name} {problem}")
    return image
