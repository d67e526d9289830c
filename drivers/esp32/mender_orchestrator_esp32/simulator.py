"""A simulated ESP32 on a pseudo-terminal: the ROM serial loader, its flash, and the boot.

The host talks to ``/dev/pts/N`` (or a symbolic link to it) exactly as to a USB-UART bridge:

- The ROM loader's SLIP-framed commands as the ESP32 ROM answers them: SYNC (eight replies),
  READ_REG / WRITE_REG (chip detection magic, eFuse MAC words, the clock calibration that
  esptool's ESP32 baud-rate change reads), SPI_ATTACH, SPI_SET_PARAMS, FLASH_BEGIN (erases up
  front), FLASH_DATA (checksum and sequence checked; NOR flash: a write only clears bits),
  FLASH_END (leaves the loader and boots), SPI_FLASH_MD5 (32 hex digits), READ_FLASH_SLOW (64
  bytes), CHANGE_BAUDRATE; anything else is refused with status 0x05. Replies carry the ESP32
  ROM's four status bytes.
- The flash is the file ``PATH`` (written in place, as flash is); ``PATH.json`` holds
  ``chip``, ``faults`` and ``state``.
- The boot follows ESP-IDF's second-stage bootloader with app rollback enabled: the otadata
  entry of highest valid sequence picks the OTA slot; an entry in state NEW becomes
  PENDING_VERIFY and boots; one still PENDING_VERIFY at the next boot is marked ABORTED and the
  other slot boots; a slot without a valid app image is skipped.
- A pty carries no DTR/RTS lines, so the board's auto-reset circuit is modelled by what the
  host does next: a SYNC while the application runs is the host's reset into the download mode
  (``--before=default-reset``; the second-stage bootloader does not run), and the application
  starts on FLASH_END (``--after=soft-reset``). An RTS pulse (``--after=hard-reset``) never
  reaches it.
- The line rate is modelled (``chip.model_line_rate``): every byte takes 10 bit times at the
  baud rate the host set on the port (standard rates), so flashing takes as long as over a
  real UART; and so are the flash's erase and program times.

Faults (``faults`` in ``PATH.json``; each rule fires ``times`` times, -1 forever, after
``skip`` matching operations, and is removed from the file once spent):

- ``{"kind": "no_sync"}``: SYNC goes unanswered (a board not in download mode, a wrong port).
- ``{"kind": "write_error", "offset": A}``: FLASH_DATA of the block holding flash address A
  (any block without ``offset``) answers status 0x08, flash write error; nothing is written.
- ``{"kind": "reset", "offset": A, "after_bytes": N}``: N bytes of that block are written, then
  the chip resets (a brown-out): it prints its boot log and boots what otadata selects.

``chip.model`` names the chip, from a table (``LATER_MODELS``) of what tells each apart.
``esp32s3`` is an ESP32-S3: its ROM answers GET_SECURITY_INFO with chip ID 9 and cannot read
flash, so esptool uploads its flasher stub (MEM_BEGIN/MEM_DATA/MEM_END); no code runs here, a
program loaded and started is taken to be the stub, which greets with ``OHAI`` and answers with
two status bytes, READ_FLASH and a raw MD5. Arming the S3's RTC watchdog resets the chip once
its registers are locked. ``esp32c3``, ``esp32c2``, ``esp32c6`` and ``esp32h2`` the same way
with their chip IDs, eFuse and watchdog addresses (the C6 and H2 without a watchdog reset, as
esptool; the C2 with its chip revision and a 26 MHz crystal in its registers). ``esp32s2``'s ROM
answers GET_SECURITY_INFO without a chip ID, and its magic value (0x7C6) tells it, as for the
ESP32; its bootloader is at 0x1000 like the ESP32's, the others' at 0. ``esp32c5`` is a chip
the driver does not take (a wrong chip). The second-stage bootloader boots only an app built
for the chip (``esp_image_header_t.chip_id``).

A pty has no RTS line: ``Simulator.pulse_en()`` (or SIGUSR1 to ``serve``) stands for the
board's EN line pulled by RTS or its reset button: the chip restarts and boots.
``Rfc2217Simulator`` (``serve --rfc2217``) serves the chip as an RFC 2217 port instead, whose
DTR and RTS reach the board's auto-reset circuit (``board``): no stand-in is needed there.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import json
import operator
import os
import queue
import select
import socket
import struct
import sys
import termios
import threading
import time
import tty
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator_core.driver_api import write_atomically

from mender_orchestrator_esp32 import idf, slip
from mender_orchestrator_esp32.board import AutoResetBoard, ResetPlayingPortManager

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
CHECKSUM_SEED = 0xEF
ROM_BAUD = 115200  # the rate esptool syncs at

OP_FLASH_BEGIN = 0x02
OP_FLASH_DATA = 0x03
OP_FLASH_END = 0x04
OP_MEM_BEGIN = 0x05
OP_MEM_END = 0x06
OP_MEM_DATA = 0x07
OP_SYNC = 0x08
OP_WRITE_REG = 0x09
OP_READ_REG = 0x0A
OP_SPI_SET_PARAMS = 0x0B
OP_SPI_ATTACH = 0x0D
OP_READ_FLASH_SLOW = 0x0E
OP_CHANGE_BAUDRATE = 0x0F
OP_SPI_FLASH_MD5 = 0x13
OP_GET_SECURITY_INFO = 0x14
OP_STUB_READ_FLASH = 0xD2

STATUS_INVALID_MESSAGE = 0x05
STATUS_FAILED = 0x06
STATUS_CHECKSUM = 0x07
STATUS_FLASH_WRITE = 0x08
STATUS_FLASH_READ = 0x09

CHIP_DETECT_MAGIC_REG = 0x4000_1000
ESP32_EFUSE_BASE = 0x3FF5_A000
ESP32_RTCCALICFG1 = 0x3FF5_F06C
ESP32_UART_CLKDIV = 0x3FF4_0014
WDT_FIRES_AFTER = 0.3  # seconds, at the latest: esptool locks the registers first
WDT_ENABLE = 1 << 31


@dataclass(frozen=True)
class Model:
    """What tells the chips after the ESP32 apart on the wire and at boot.

    - ``chip_id``: what their ROM's GET_SECURITY_INFO answers (20 bytes); None for the
      ESP32-S2, whose ROM answers the command in 12 bytes without one, so that esptool reads
      the magic value (``magic``, at 0x40001000) instead, as for the ESP32.
    - ``image_chip_id``: ``esp_image_header_t.chip_id`` of the images built for it, which its
      second-stage bootloader requires.
    - ``efuse_mac``: where eFuse keeps the MAC: two words, bytes 2..5 then 0..1 in the low half
      (on the ESP32-C2 that second word also holds the chip revision, in bits 16..21).
    - ``watchdog``: the RTC watchdog's config and write-protect registers, where esptool resets
      the chip through it (None where esptool does not: the C6 and H2, whose USB-Serial/JTAG
      port would vanish).
    - ``bootloader_offset``: where the ROM looks for the second-stage bootloader.
    - ``uart_clkdiv``: the UART clock divider register esptool reads to tell the crystal
      (the ESP32-C2 comes with 26 MHz or 40 MHz ones), and ``crystal_mhz``.
    """

    name: str
    chip_id: int | None
    image_chip_id: int
    magic: int
    efuse_mac: int
    watchdog: tuple[int, int] | None
    bootloader_offset: int = 0x0
    uart_clkdiv: int | None = None
    crystal_mhz: int = 40
    revision_in_mac_word: bool = False


# the ESP32 itself is the ROM without GET_SECURITY_INFO (the magic value tells it); esp32c5 is
# a chip the driver does not take (a wrong chip). Magic values the ROMs hold where esptool
# never reads them (it asks GET_SECURITY_INFO first) are left 0.
LATER_MODELS = {
    "esp32s2": Model("ESP32-S2", None, 2, 0x0000_07C6, 0x3F41_A044, (0x3F40_8094, 0x3F40_80AC),
                     bootloader_offset=0x1000),
    "esp32s3": Model("ESP32-S3", 9, 9, 0, 0x6000_7044, (0x6000_8098, 0x6000_80B0)),
    "esp32c3": Model("ESP32-C3", 5, 5, 0, 0x6000_8844, (0x6000_8090, 0x6000_80A8)),
    "esp32c2": Model("ESP32-C2", 12, 12, 0, 0x6000_8840, (0x6000_8084, 0x6000_809C),
                     uart_clkdiv=0x6000_0014, crystal_mhz=26, revision_in_mac_word=True),
    "esp32c6": Model("ESP32-C6", 13, 13, 0, 0x600B_0844, None),
    "esp32h2": Model("ESP32-H2", 16, 16, 0, 0x600B_0844, None),
    "esp32c5": Model("ESP32-C5", 23, 23, 0, 0x600B_4844, None, bootloader_offset=0x2000),
}  # fmt: skip
MODELS = ("esp32", *LATER_MODELS)
ESP32_BOOTLOADER_OFFSET = 0x1000
ESP32_MAGIC = 0x00F0_1D83
# the ESP32-C2's chip revision v1.0 (ECO1): esptool's stub refuses revision 0
C2_REVISION_V1_0 = 1 << 20


def bootloader_offset(model: str) -> int:
    later = LATER_MODELS.get(model)
    return ESP32_BOOTLOADER_OFFSET if later is None else later.bootloader_offset


def image_chip_id(model: str) -> int:
    later = LATER_MODELS.get(model)
    return 0 if later is None else later.image_chip_id


ROM_BANNER = (
    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
)


# what the ROM prints when GPIO0 was low at reset (esptool reads it to check the boot mode)
ROM_DOWNLOAD_BANNER = (
    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x3 "
    b"(DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n"
)


class SimulatorError(Exception):
    """A simulated device that cannot be created, opened or served."""


def side_file(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@dataclass
class Chip:
    model: str = "esp32"
    mac: str = "240ac4123456"
    flash_size: int = 4 * 1024 * 1024
    sector_erase_seconds: float = 0.02
    program_seconds_per_kib: float = 0.002
    model_line_rate: bool = True


@dataclass
class State:
    mode: str = "download"  # "download" or "app"
    running: str | None = None  # label of the partition the last boot started
    boots: int = 0
    resets_mid_write: int = 0
    # what the host did to the chip, so a test can tell a query that left it alone
    syncs: int = 0  # SYNC commands answered (a connection to the ROM loader)
    loader_entries: int = 0  # resets from the running app into the download mode


@dataclass
class Device:
    path: Path
    chip: Chip
    faults: list[dict[str, Any]] = field(default_factory=list)
    state: State = field(default_factory=State)

    @classmethod
    def create(
        cls, path: Path, chip: Chip, app_size: int = 0x10000, image: bytes | None = None
    ) -> Device:
        """A flash laid out as ESP-IDF's two-OTA partition table, with ``image`` (if any) in
        ``ota_0`` selected and VALID, as after a factory flash."""
        table = default_table(app_size)
        end = max(p.offset + p.size for p in table.partitions)
        if end > chip.flash_size:
            raise SimulatorError(
                f"the partition table needs 0x{end:x} bytes of flash; the chip has "
                f"0x{chip.flash_size:x} (--flash-size)"
            )
        flash = bytearray(b"\xff" * chip.flash_size)
        # the second-stage bootloader where this chip's ROM looks for it (its header only)
        at = bootloader_offset(chip.model)
        flash[at : at + 4] = bytes([idf.IMAGE_MAGIC, 3, 2, 0x20])
        raw_table = table.encode()
        flash[idf.PARTITION_TABLE_OFFSET : idf.PARTITION_TABLE_OFFSET + len(raw_table)] = raw_table
        if image is not None:
            slot = table.ota_slots[0]
            if len(image) > slot.size:
                raise SimulatorError(f"the image ({len(image)} bytes) does not fit {slot.label}")
            flash[slot.offset : slot.offset + len(image)] = image
            _, otadata = idf.OtaData((_blank_entry(), _blank_entry())).select(
                0, len(table.ota_slots), idf.OtaState.VALID
            )
            at = table.otadata.offset
            flash[at : at + 2 * idf.SECTOR] = (
                idf.OtaData.sector(otadata.entries[0]) + idf.OtaData.sector(otadata.entries[1])
            )
        path.write_bytes(bytes(flash))
        device = cls(path, chip, state=State(mode="app"))
        device.save_side()
        device.state.running = device.boot_choice()
        device.save_side()
        return device

    @classmethod
    def load(cls, path: Path) -> Device:
        side = side_file(path)
        if not path.is_file() or not side.is_file():
            raise SimulatorError(
                f"no simulated ESP32 at {path}: create one with "
                f"`python -m mender_orchestrator_esp32.simulator init {path}`"
            )
        try:
            document = json.loads(side.read_text(encoding="utf-8"))
            return cls(
                path,
                Chip(**document["chip"]),
                list(document.get("faults", [])),
                State(**document.get("state", {})),
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise SimulatorError(f"{side} is not a simulator settings file: {exc}") from exc

    def save_side(self) -> None:
        document = {"chip": asdict(self.chip), "faults": self.faults, "state": asdict(self.state)}
        write_atomically(side_file(self.path), (json.dumps(document, indent=2) + "\n").encode())

    # ---------------------------------------------------------------- flash

    def read(self, offset: int, length: int) -> bytes:
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(length)

    def program(self, offset: int, data: bytes) -> None:
        """NOR flash: programming can only clear bits (erase sets them)."""
        current = self.read(offset, len(data))
        merged = int.from_bytes(current, "big") & int.from_bytes(data, "big")
        self._store(offset, merged.to_bytes(len(data), "big"))

    def erase(self, offset: int, length: int) -> None:
        self._store(offset, b"\xff" * length)

    def _store(self, offset: int, data: bytes) -> None:
        with self.path.open("r+b") as f:
            f.seek(offset)
            f.write(data)

    # ---------------------------------------------------------------- boot

    def boot_choice(self) -> str | None:
        """What the second-stage bootloader starts, updating otadata as it does; None where
        the ROM finds no bootloader where this chip looks for one, or no slot holds an app
        built for this chip."""
        if self.read(bootloader_offset(self.chip.model), 1) != bytes([idf.IMAGE_MAGIC]):
            return None
        try:
            table = idf.PartitionTable.decode(
                self.read(idf.PARTITION_TABLE_OFFSET, idf.PARTITION_TABLE_SIZE)
            )
            ota_partition = table.otadata
            otadata = idf.OtaData.decode(self.read(ota_partition.offset, 2 * idf.SECTOR))
        except idf.FormatError:
            return None
        active = otadata.active()
        if active is not None:
            state = otadata.entries[active].state
            if state == idf.OtaState.PENDING_VERIFY:
                # not confirmed since its first boot: roll back
                otadata = otadata.set_state(active, idf.OtaState.ABORTED)
                self._write_ota_entry(ota_partition, active, otadata)
            elif state == idf.OtaState.NEW:
                otadata = otadata.set_state(active, idf.OtaState.PENDING_VERIFY)
                self._write_ota_entry(ota_partition, active, otadata)
        chosen = idf.selected_partition(table, otadata)
        fallbacks = [chosen, *(p for p in [table.factory, *table.ota_slots] if p is not None)]
        for partition in fallbacks:
            start = self.read(partition.offset, 512)
            if idf.AppDescription.decode(start) is None:
                continue
            # ESP-IDF's bootloader refuses an image for another chip ("invalid chip ID")
            if idf.image_chip_id(start) == image_chip_id(self.chip.model):
                return partition.label
        return None

    def _write_ota_entry(self, partition: idf.Partition, index: int, data: idf.OtaData) -> None:
        at = partition.offset + index * idf.SECTOR
        self._store(at, idf.OtaData.sector(data.entries[index]))


def _blank_entry() -> idf.OtaEntry:
    return idf.OtaEntry.decode(b"\xff" * idf.OtaEntry.SIZE)


def default_table(app_size: int) -> idf.PartitionTable:
    """nvs, otadata, phy_init, ota_0, ota_1: ESP-IDF's "two OTA definitions" without factory."""
    if app_size <= 0 or app_size % 0x10000:
        raise SimulatorError(f"app partitions are 64 KiB aligned; --app-size 0x{app_size:x} is not")
    return idf.PartitionTable(
        (
            idf.Partition("nvs", idf.TYPE_DATA, 0x02, 0x9000, 0x4000),
            idf.Partition("otadata", idf.TYPE_DATA, idf.SUBTYPE_OTADATA, 0xD000, 0x2000),
            idf.Partition("phy_init", idf.TYPE_DATA, 0x01, 0xF000, 0x1000),
            idf.Partition("ota_0", idf.TYPE_APP, idf.SUBTYPE_OTA_0, 0x10000, app_size),
            idf.Partition(
                "ota_1", idf.TYPE_APP, idf.SUBTYPE_OTA_0 + 1, 0x10000 + app_size, app_size
            ),
        )
    )


# ------------------------------------------------------------------------ the serial side


def _baud_table() -> dict[int, int]:
    table = {}
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit():
            table[getattr(termios, name)] = int(name[1:])
    return table


BAUD_RATES = _baud_table()


class Rom:
    """The ESP32 ROM loader's command handling for one Device."""

    def __init__(self, device: Device, send: Any, lines_reach_it: bool = False) -> None:
        self.device = device
        self.send = send  # callable(bytes): raw bytes to the host
        # over a pty no DTR/RTS reaches the chip, so a SYNC while the app runs stands for the
        # host's reset into the download mode; over RFC 2217 the lines do, and the app ignores
        # a SYNC as it ignores any byte
        self.sync_is_reset = not lines_reach_it
        self.attached = False
        self.begin: tuple[int, int, int, int] | None = None  # offset, blocks, block size, next seq
        self.registers: dict[int, int] = {}
        self.ram: tuple[int, int] | None = None  # MEM_BEGIN: blocks, next seq
        self.stub = False  # esptool's flasher stub "runs" (it answers instead of the ROM)
        self.watchdog_at: float | None = None  # when the armed RTC watchdog resets the chip

    # ------------------------------------------------------------ helpers

    def reply(self, op: int, value: int = 0, data: bytes = b"", status: int = 0) -> None:
        # the ROM sends four status bytes (two reserved), the stub two
        body = data + bytes([1 if status else 0, status] + ([] if self.stub else [0, 0]))
        self.send(slip.encode(struct.pack("<BBHI", 1, op, len(body), value) + body))

    def fault(self, kind: str, offset: int | None = None, length: int = 0) -> dict[str, Any] | None:
        """The first rule of ``kind`` matching the operation; counts it and persists."""
        faults = self.device.faults
        for rule in faults:
            if rule.get("kind") != kind:
                continue
            at = rule.get("offset")
            if at is not None and (offset is None or not offset <= at < offset + length):
                continue
            if rule.get("skip", 0) > 0:
                rule["skip"] -= 1
                self.device.save_side()
                return None
            times = rule.get("times", 1)
            if times > 0:
                rule["times"] = times - 1
                if rule["times"] == 0:
                    faults.remove(rule)
            self.device.save_side()
            return rule
        return None

    def register(self, address: int) -> int:
        chip = self.device.chip
        mac = bytes.fromhex(chip.mac)
        later = LATER_MODELS.get(chip.model)
        if address == CHIP_DETECT_MAGIC_REG:
            return ESP32_MAGIC if later is None else later.magic
        if later is not None:
            return self._later_register(later, address, mac)
        if address == ESP32_EFUSE_BASE + 4:  # eFuse word 1: MAC bytes 2..5
            return int.from_bytes(mac[2:6], "big")
        if address == ESP32_EFUSE_BASE + 8:  # eFuse word 2: CRC8, MAC bytes 0..1
            return (0x5A << 16) | int.from_bytes(mac[:2], "big")
        if address == ESP32_EFUSE_BASE + 16:  # eFuse word 4: CK8M frequency (for the baud math)
            return 100
        if address == ESP32_UART_CLKDIV:  # the divider for 115200 from its 40 MHz crystal
            return 40_000_000 // ROM_BAUD
        if address == ESP32_RTCCALICFG1:  # 1024 << 7: with CK8M 100 the ROM computed 40 MHz
            return 1024 << 7
        return self.registers.get(address, 0)

    def _later_register(self, later: Model, address: int, mac: bytes) -> int:
        if address == later.efuse_mac:  # MAC bytes 2..5
            return int.from_bytes(mac[2:6], "big")
        if address == later.efuse_mac + 4:  # MAC bytes 0..1
            revision = C2_REVISION_V1_0 if later.revision_in_mac_word else 0
            return revision | int.from_bytes(mac[:2], "big")
        if address == later.uart_clkdiv:
            # the ROM set its divider from the SYNC at 115200 (it detects the host's rate)
            return later.crystal_mhz * 1_000_000 // ROM_BAUD
        return self.registers.get(address, 0)

    # ------------------------------------------------------------ commands

    def handle(self, frame: bytes) -> None:
        if len(frame) < 8 or frame[0] != 0:
            return  # not a request: the ROM ignores it
        _, op, size, checksum = struct.unpack("<BBHI", frame[:8])
        data = frame[8:]
        if len(data) != size:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        if self.device.state.mode != "download":
            if op != OP_SYNC or not self.sync_is_reset:
                return  # the application does not speak the loader's protocol
            # the host's DTR/RTS sequence put the chip back into the download mode
            self.device.state.mode = "download"
            self.device.state.running = None
            self.device.state.loader_entries += 1
            self.device.save_side()
        handler = {
            OP_SYNC: self.sync,
            OP_READ_REG: self.read_reg,
            OP_WRITE_REG: self.write_reg,
            OP_SPI_ATTACH: self.spi_attach,
            OP_SPI_SET_PARAMS: self.spi_set_params,
            OP_FLASH_BEGIN: self.flash_begin,
            OP_FLASH_END: self.flash_end,
            OP_SPI_FLASH_MD5: self.flash_md5,
            OP_READ_FLASH_SLOW: self.read_flash,
            OP_CHANGE_BAUDRATE: self.change_baudrate,
            OP_GET_SECURITY_INFO: self.security_info,
            OP_MEM_BEGIN: self.mem_begin,
            OP_MEM_END: self.mem_end,
            OP_STUB_READ_FLASH: self.stub_read_flash,
        }.get(op)
        if op == OP_FLASH_DATA:
            self.flash_data(data, checksum)
        elif op == OP_MEM_DATA:
            self.mem_data(data, checksum)
        elif handler is None:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
        else:
            handler(op, data)

    def sync(self, op: int, data: bytes) -> None:
        if data != SYNC_PAYLOAD or self.fault("no_sync") is not None:
            return
        # the host resets the chip into the ROM before it syncs (--before=default-reset)
        self.stub = False
        self.attached = False
        self.begin = None
        self.ram = None
        self.device.state.syncs += 1
        self.device.save_side()
        for _ in range(8):
            self.reply(op, value=0x2012_0707)

    def read_reg(self, op: int, data: bytes) -> None:
        (address,) = struct.unpack("<I", data[:4])
        self.reply(op, value=self.register(address))

    def write_reg(self, op: int, data: bytes) -> None:
        address, value, mask, _delay = struct.unpack("<IIII", data[:16])
        old = self.registers.get(address, 0)
        self.registers[address] = (old & ~mask) | (value & mask)
        self.reply(op)
        later = LATER_MODELS.get(self.device.chip.model)
        if later is None or later.watchdog is None:
            return
        config, protect = later.watchdog
        if address == config and value & mask & WDT_ENABLE:
            # esptool's --after watchdog-reset arms the RTC watchdog, then locks its registers
            self.watchdog_at = time.monotonic() + WDT_FIRES_AFTER
        elif address == protect and self.watchdog_at is not None:
            self.watchdog_at = time.monotonic()
        self.tick()

    def tick(self) -> None:
        """The watchdog's reset, when it is due."""
        if self.watchdog_at is not None and time.monotonic() >= self.watchdog_at:
            self.power_cycle()

    def spi_attach(self, op: int, data: bytes) -> None:
        self.attached = True
        self.reply(op)

    def spi_set_params(self, op: int, data: bytes) -> None:
        if len(data) != 24:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        self.reply(op)

    def security_info(self, op: int, data: bytes) -> None:
        later = LATER_MODELS.get(self.device.chip.model)
        if later is None:  # the ESP32 ROM has no such command
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        # flags, flash_crypt_cnt, seven key purposes; then the chip ID and API version, which
        # the ESP32-S2's ROM does not send
        info = struct.pack("<IBBBBBBBB", 0, 0, *([0] * 7))
        if later.chip_id is not None:
            info += struct.pack("<II", later.chip_id, 0)
        self.reply(op, data=info)

    def _flash_range_ok(self, op: int, offset: int, length: int) -> bool:
        if not self.attached:
            self.reply(op, status=STATUS_FAILED)  # SPI flash not attached yet
            return False
        if offset + length > self.device.chip.flash_size:
            self.reply(op, status=STATUS_FAILED)
            return False
        return True

    def flash_begin(self, op: int, data: bytes) -> None:
        # the ESP32 ROM takes no encryption flag; later ROMs and the stub do
        if len(data) != (16 if self.device.chip.model == "esp32" and not self.stub else 20):
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        erase_size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        if not self._flash_range_ok(op, offset, erase_size):
            return
        if erase_size:
            start = offset - offset % idf.SECTOR
            end = offset + erase_size
            end += -end % idf.SECTOR
            self.device.erase(start, end - start)
            time.sleep((end - start) // idf.SECTOR * self.device.chip.sector_erase_seconds)
        self.begin = (offset, blocks, block_size, 0)
        self.reply(op)

    def flash_data(self, data: bytes, checksum: int) -> None:
        op = OP_FLASH_DATA
        if self.begin is None or len(data) < 16:
            self.reply(op, status=STATUS_FAILED)
            return
        size, seq, _, _ = struct.unpack("<IIII", data[:16])
        block = data[16:]
        offset, blocks, block_size, expected = self.begin
        if size != len(block) or size > block_size or seq != expected or seq >= blocks:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        if _checksum(block) != checksum & 0xFF:
            self.reply(op, status=STATUS_CHECKSUM)
            return
        at = offset + seq * block_size
        if self.fault("write_error", at, len(block)) is not None:
            self.reply(op, status=STATUS_FLASH_WRITE)
            return
        reset = self.fault("reset", at, len(block))
        if reset is not None:
            cut = int(reset.get("after_bytes", len(block) // 2))
            self.device.program(at, block[:cut])
            self.device.state.resets_mid_write += 1
            self.power_cycle()
            return
        self.device.program(at, block)
        time.sleep(len(block) / 1024 * self.device.chip.program_seconds_per_kib)
        self.begin = (offset, blocks, block_size, seq + 1)
        self.reply(op)

    def flash_end(self, op: int, data: bytes) -> None:
        # the boot is done before the reply goes out, so that whoever reads the state after
        # the host saw the reply finds it booted; its log follows the reply on the line
        log = self.start_application()
        self.reply(op)
        self.send(log)

    def flash_md5(self, op: int, data: bytes) -> None:
        offset, length, _, _ = struct.unpack("<IIII", data[:16])
        if not self._flash_range_ok(op, offset, length):
            return
        digest = hashlib.md5(self.device.read(offset, length))
        self.reply(op, data=digest.digest() if self.stub else digest.hexdigest().encode())

    def read_flash(self, op: int, data: bytes) -> None:
        offset, length = struct.unpack("<II", data[:8])
        if length > 64:
            self.reply(op, status=STATUS_FLASH_READ)
            return
        if not self._flash_range_ok(op, offset, length):
            return
        block = self.device.read(offset, length)
        self.reply(op, data=block + b"\0" * (64 - len(block)))

    def change_baudrate(self, op: int, data: bytes) -> None:
        self.reply(op)  # the host then sets the port to the new rate, which the line follows

    def mem_begin(self, op: int, data: bytes) -> None:
        _size, blocks, _block_size, _offset = struct.unpack("<IIII", data[:16])
        self.ram = (blocks, 0)
        self.reply(op)

    def mem_data(self, data: bytes, checksum: int) -> None:
        op = OP_MEM_DATA
        size, seq, _, _ = struct.unpack("<IIII", data[:16])
        if self.ram is None or size != len(data) - 16 or seq != self.ram[1]:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        if _checksum(data[16:]) != checksum & 0xFF:
            self.reply(op, status=STATUS_CHECKSUM)
            return
        self.ram = (self.ram[0], seq + 1)
        self.reply(op)

    def mem_end(self, op: int, data: bytes) -> None:
        _stay, entry = struct.unpack("<II", data[:8])
        self.reply(op)
        if entry and self.ram is not None:
            # no code runs here: what was loaded and started is taken to be esptool's stub
            self.stub = True
            self.ram = None
            self.send(slip.encode(b"OHAI"))

    def stub_read_flash(self, op: int, data: bytes) -> None:
        """The stub's READ_FLASH: a reply, the data in frames of ``sector`` bytes (the host's
        acknowledgements only pace a real stub), then the MD5 of it all."""
        offset, length, sector, _in_flight = struct.unpack("<IIII", data[:16])
        if not self.stub:
            self.reply(op, status=STATUS_INVALID_MESSAGE)
            return
        if not self._flash_range_ok(op, offset, length):
            return
        self.reply(op)
        content = self.device.read(offset, length)
        for at in range(0, length, sector):
            self.send(slip.encode(content[at : at + sector]))
        self.send(slip.encode(hashlib.md5(content).digest()))

    # ------------------------------------------------------------ resets

    def enter_download_mode(self) -> None:
        """EN released with GPIO0 low: the ROM starts its serial loader."""
        state = self.device.state
        if state.mode == "app":
            state.loader_entries += 1
        self.stub = False
        self.attached = False
        self.begin = None
        self.ram = None
        self.watchdog_at = None
        state.mode = "download"
        state.running = None
        self.device.save_side()
        self.send(ROM_DOWNLOAD_BANNER)

    def power_cycle(self) -> None:
        log = self.start_application()
        self.send(ROM_BANNER + log)

    def start_application(self) -> bytes:
        """Boot; returns what the bootloader prints."""
        self.attached = False
        self.begin = None
        self.stub = False
        self.watchdog_at = None
        state = self.device.state
        state.running = self.device.boot_choice()
        state.mode = "app"
        state.boots += 1
        self.device.save_side()
        where = state.running or "nothing bootable"
        return f"I (31) boot: Loaded app from partition {where}\r\n".encode()


def _checksum(data: bytes) -> int:
    return functools.reduce(operator.xor, data, CHECKSUM_SEED)


class Simulator:
    """Serves one Device on a new pty, in a thread; ``link`` (if given) names the pty."""

    def __init__(self, path: Path, link: Path | None = None) -> None:
        self.device = Device.load(path)
        self.link = link
        if link is not None and link.exists() and not link.is_symlink():
            raise SimulatorError(f"--link {link} exists and is not a symbolic link")
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline, as a UART
        self.port = os.ttyname(self.slave)
        if link is not None:
            if link.is_symlink():  # a link left by a simulator that was killed
                link.unlink()
            link.symlink_to(self.port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"esp32-sim {path}", daemon=True)
        self._wire_free = 0.0
        self._en_pulses: queue.SimpleQueue[threading.Event] = queue.SimpleQueue()
        self._side_mtime = 0
        self.bytes_in = 0  # on the line, from the host and to it (for benchmarks)
        self.bytes_out = 0

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link is not None and self.link.is_symlink():
            if os.readlink(self.link) == self.port:  # not another simulator's since
                self.link.unlink()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pulse_en(self, timeout: float = 5.0) -> None:
        """The EN line pulled low and released (RTS through the auto-reset circuit, which a
        pty cannot carry, or the reset button): the chip restarts and boots what otadata
        selects. Done by the serving thread, between two commands."""
        done = threading.Event()
        self._en_pulses.put(done)
        if not done.wait(timeout):
            raise SimulatorError("the simulator did not take the EN pulse (is it serving?)")

    @property
    def address(self) -> str:
        return str(self.link) if self.link is not None else self.port

    def _baud(self) -> int | None:
        try:
            return BAUD_RATES.get(termios.tcgetattr(self.slave)[4])
        except termios.error:
            return None

    def _wire(self, count: int) -> None:
        """Wait as long as ``count`` bytes take on the line (10 bits each)."""
        baud = self._baud() if self.device.chip.model_line_rate else None
        if not baud:
            return
        now = time.monotonic()
        self._wire_free = max(self._wire_free, now) + count * 10 / baud
        if self._wire_free > now:
            time.sleep(self._wire_free - now)

    def _send(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._wire(len(data))
        self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                select.select([], [self.master], [], 0.1)

    def _refresh(self) -> None:
        """Take the tests' (or the user's) edits of ``PATH.json``, such as new faults."""
        try:
            mtime = side_file(self.device.path).stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._side_mtime:
            try:
                self.device = Device.load(self.device.path)
            except SimulatorError as exc:  # half-written by a careless editor: keep the last
                print(f"esp32 simulator: {exc}", file=sys.stderr)
                return
            rom = getattr(self, "_rom", None)
            if rom is not None:
                rom.device = self.device
            self._side_mtime = mtime

    lines_reach_it = False  # DTR/RTS: a pty has none

    def _serve(self) -> None:
        self._decoder = slip.Decoder()
        self._refresh()
        self._rom = Rom(self.device, self._send, lines_reach_it=self.lines_reach_it)
        while not self._stop.is_set():
            while not self._en_pulses.empty():
                done = self._en_pulses.get()
                self._refresh()
                self._rom.power_cycle()
                done.set()
            data = self._receive()
            if data:
                self._take(data)
            else:
                self._rom.tick()

    def _receive(self) -> bytes:
        """What the host sent, waiting a little; b"" if nothing came."""
        ready, _, _ = select.select([self.master], [], [], 0.05)
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # no host has the port open
                time.sleep(0.02)
                return b""
            raise

    def _take(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._wire(len(data))
        for frame in self._decoder.feed(data):
            self._refresh()
            self._rom.handle(frame)
            # our own writes of PATH.json are not edits to take again
            self._side_mtime = side_file(self.device.path).stat().st_mtime_ns


class Rfc2217Simulator(Simulator):
    """Serves one Device as an RFC 2217 serial port on 127.0.0.1 (``address`` is esptool's
    ``rfc2217://127.0.0.1:PORT``), one host at a time: the port's DTR and RTS reach the board's
    auto-reset circuit (``board``), so esptool's resets into the download mode and
    ``--after=hard-reset`` act on the chip as on a real board, and a SYNC while the app runs
    is ignored, as the app ignores it."""

    lines_reach_it = True

    def __init__(self, path: Path, tcp_port: int = 0) -> None:  # the base's, without a pty
        self.device = Device.load(path)
        self.link = None
        self.board = AutoResetBoard()
        self._listener = socket.create_server(("127.0.0.1", tcp_port))
        self.port = f"rfc2217://127.0.0.1:{self._listener.getsockname()[1]}"
        self._host: socket.socket | None = None
        self._manager: ResetPlayingPortManager | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"esp32-sim {path}", daemon=True)
        self._wire_free = 0.0
        self._en_pulses = queue.SimpleQueue()
        self._side_mtime = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in (self._host, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _baud(self) -> int | None:
        return self.board.baudrate

    def _write(self, data: bytes) -> None:
        if self._host is None or self._manager is None:
            return  # no host on the port: the bytes go nowhere, as on an unplugged cable
        with contextlib.suppress(OSError):
            self._host.sendall(b"".join(self._manager.escape(data)))

    def _receive(self) -> bytes:
        while not self.board.starts.empty():  # EN released: the chip starts, as GPIO0 says
            if self.board.starts.get() == "download":
                self._rom.enter_download_mode()
            else:
                self._rom.power_cycle()
        waiting = [self._listener] if self._host is None else [self._host]
        # short waits: a start comes from the board's thread, and its boot log is awaited
        ready, _, _ = select.select(waiting, [], [], 0.01)
        if not ready:
            return b""
        if self._host is None:
            self._host, _ = self._listener.accept()
            # each control-line change is a small write answered at once: no Nagle delay
            self._host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._manager = ResetPlayingPortManager(self.board, _Connection(self._host))
            return b""
        try:
            raw = self._host.recv(65536)
        except OSError:
            raw = b""
        if not raw:  # the host closed the port: the bridge drops DTR and RTS
            self._host.close()
            self._host = self._manager = None
            self.board.set_lines(False, False)
            return b""
        assert self._manager is not None
        return b"".join(self._manager.filter(raw))


class _Connection:
    """What pyserial's PortManager writes its Telnet answers to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)


# ------------------------------------------------------------------------ command line


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024 * 1024}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(text[:-1], 0) * units[text[-1]]
    return int(text, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mender_orchestrator_esp32.simulator",
        description="A simulated ESP32 (ROM serial loader) served on a pty.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create a device: flash file and settings")
    init.add_argument("path", type=Path)
    init.add_argument("--model", default="esp32", choices=MODELS)
    init.add_argument("--mac", default="240ac4123456", help="12 hex digits")
    init.add_argument("--flash-size", type=_size, default=4 * 1024 * 1024)
    init.add_argument("--app-size", type=_size, default=0x10000, help="each OTA slot")
    init.add_argument("--version", help="put an app of this version in ota_0 (with --project)")
    init.add_argument("--project", default="app")
    init.add_argument("--image", type=Path, help="put this app image in ota_0")
    serve = commands.add_parser("serve", help="serve a device on a new pty until SIGTERM")
    serve.add_argument("path", type=Path)
    serve.add_argument("--link", type=Path, help="symbolic link to the pty to create")
    serve.add_argument(
        "--rfc2217", type=int, nargs="?", const=0, metavar="TCP_PORT",
        help="serve an RFC 2217 port on 127.0.0.1 instead of a pty (its DTR/RTS reach the "
        "board's auto-reset circuit); any free TCP port unless given",
    )  # fmt: skip
    show = commands.add_parser("show", help="print the settings, state and otadata")
    show.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            return _init(args)
        if args.command == "serve":
            return _serve_forever(args.path, args.link, args.rfc2217)
        return _show(args.path)
    except (SimulatorError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _init(args: argparse.Namespace) -> int:
    if len(args.mac) != 12 or not all(c in "0123456789abcdefABCDEF" for c in args.mac):
        raise SimulatorError(f"--mac {args.mac!r}: expected 12 hex digits")
    image = None
    if args.image is not None:
        image = args.image.read_bytes()
    elif args.version is not None:
        description = idf.AppDescription(args.version, args.project, "v5.3")
        image = idf.make_app_image(description, b"", image_chip_id(args.model))
    chip = Chip(model=args.model, mac=args.mac.lower(), flash_size=args.flash_size)
    Device.create(args.path, chip, args.app_size, image)
    return 0


def _serve_forever(path: Path, link: Path | None, rfc2217: int | None) -> int:
    import signal

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    if rfc2217 is not None and link is not None:
        raise SimulatorError("--link names a pty; an RFC 2217 port has none")
    server = Simulator(path, link) if rfc2217 is None else Rfc2217Simulator(path, rfc2217)
    with server as sim:
        # the EN line, from a shell: kill -USR1 PID (a pty has no RTS)
        signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=sim.pulse_en).start())
        later = LATER_MODELS.get(sim.device.chip.model)
        name = "ESP32" if later is None else later.name
        print(f"ready: {name} simulator on {sim.port}" + (f" ({link})" if link else ""), flush=True)
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
        print(f"stopped: {sim.bytes_in} bytes in, {sim.bytes_out} bytes out", flush=True)
    return 0


def _show(path: Path) -> int:
    device = Device.load(path)
    table = idf.PartitionTable.decode(
        device.read(idf.PARTITION_TABLE_OFFSET, idf.PARTITION_TABLE_SIZE)
    )
    otadata = idf.OtaData.decode(device.read(table.otadata.offset, 2 * idf.SECTOR))
    print(json.dumps({"chip": asdict(device.chip), "state": asdict(device.state)}, indent=2))
    for index, entry in enumerate(otadata.entries):
        print(f"otadata[{index}]: seq={entry.seq} state={entry.state_name} valid={entry.valid}")
    for p in table.ota_slots:
        desc = idf.AppDescription.decode(device.read(p.offset, 512))
        print(f"{p.label}: {desc.version + ' ' + desc.project if desc else 'no app'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
