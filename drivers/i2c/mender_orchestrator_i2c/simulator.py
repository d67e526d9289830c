"""A simulated STM32 waiting in its system bootloader on an I2C bus (ST AN4221).

``SimulatedBus(PATH)`` stands where ``smbus2.SMBus(N)`` would: its ``i2c_rdwr(*msgs)`` takes
smbus2 ``i2c_msg`` objects, one I2C transfer per message, and fails with ``OSError`` where a
Linux adapter would (``ENXIO`` when nothing acknowledges the address, ``ETIMEDOUT`` when the
chip stretches the clock past the adapter's limit, ``EREMOTEIO`` when the host breaks the
protocol). The driver opens it for ``--bus=sim:PATH``.

What it models, byte for byte: Get, Get Version, Get ID, Read Memory, Write Memory, Erase
(pages and mass erase) and Go, each command framed as code + complement, every frame checked
with its XOR checksum and answered ACK (0x79) or NACK (0x1F); an answer frame is read in one
transfer (reading it short loses the rest, as on the chip); the clock-stretching commands hold
the ACK read for as long as the flash operation takes, the no-stretch ones (bootloader v1.1)
answer BUSY (0x76) until it is done. Flash behaves like flash: a page must be erased (0xFF)
before a word in it is programmed, else the write is refused (program error -> NACK); writes
are 4-byte aligned. Go checks the target's vector table: a sane one starts the application
(the bootloader then leaves the bus), a bad one locks the core up (silent too). The carrier
board's BOOT0/NRST lines are ``reset_to_bootloader()``.

Files, all next to each other:

``PATH``
    the flash contents, raw (``flash_size`` bytes), replaced atomically after every erase or
    write; created erased by ``init`` (opening a path where no device was created is an error,
    as a typo in ``--bus`` must not conjure up a blank chip).
``PATH.json``
    ``{"chip": {...}, "faults": [...], "state": {...}}``: the chip's description (written by
    ``init``, edit it to change the chip), the faults to inject (consumed as they
    fire), and the state the simulator keeps (running mode, power). See drivers/i2c/README.md.
``PATH.lock``
    held while a bus is open, so one process at a time talks to the device.

Run ``python -m mender_orchestrator_i2c.simulator --help`` to create or inspect a device.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator_core.driver_api import size as size_argument
from orchestrator_core.driver_api import write_atomically as write_atomic

from mender_orchestrator_i2c.an4221 import (
    ACK,
    BUSY,
    COMMANDS_BY_VERSION,
    MASS_ERASE,
    NACK,
    Command,
    stm32_crc,
    xor,
)
from mender_orchestrator_i2c.record import VersionRecord, decode

I2C_M_RD = 0x0001
LOCK_WAIT_SECONDS = 10.0

FAULT_KINDS = ("nack", "busy", "bit_flip", "power_loss")
FAULT_COMMANDS = ("get", "get_version", "get_id", "read", "write", "erase", "go", "checksum")

# The command a fault rule names, for each command code.
_COMMAND_NAMES = {
    Command.GET: "get",
    Command.GET_VERSION: "get_version",
    Command.GET_ID: "get_id",
    Command.READ_MEMORY: "read",
    Command.GO: "go",
    Command.WRITE_MEMORY: "write",
    Command.NO_STRETCH_WRITE_MEMORY: "write",
    Command.ERASE: "erase",
    Command.NO_STRETCH_ERASE: "erase",
    Command.NO_STRETCH_GET_CHECKSUM: "checksum",
    Command.READOUT_PROTECT: "protect",
    Command.NO_STRETCH_READOUT_PROTECT: "protect",
    Command.READOUT_UNPROTECT: "unprotect",
    Command.NO_STRETCH_READOUT_UNPROTECT: "unprotect",
    Command.WRITE_UNPROTECT: "write_unprotect",
    Command.NO_STRETCH_WRITE_UNPROTECT: "write_unprotect",
}
# Refused while readout protection level 1 is on: everything that reads or changes the memory
_PROTECTED = ("read", "write", "erase", "go", "checksum")
APPLICATION_BYTE = 0xA5  # what the simulated application answers to any read


class SimulatorError(ValueError):
    """The simulator's files are unusable; the message names the file and the field."""


# --------------------------------------------------------------------------- configuration


def _number(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise SimulatorError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise SimulatorError(f'{where}: expected an integer or a string like "0x48", got {value!r}')


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SimulatorError(f"{where}: expected a number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Chip:
    """The simulated part. Defaults: an STM32G07x (PID 0x460) with 64 KiB of flash."""

    address: int = 0x48
    pid: int = 0x460
    bootloader_version: int = 0x11
    flash_base: int = 0x0800_0000
    flash_size: int = 64 * 1024
    page_size: int = 2048
    sram_base: int = 0x2000_0000
    sram_size: int = 36 * 1024
    uid_address: int = 0x1FFF_7590
    uid: bytes = b"\x00" * 12
    # Datasheet-typical timings; tests make them shorter.
    page_erase_seconds: float = 0.022
    mass_erase_seconds: float = 0.025
    program_seconds_per_kib: float = 0.011
    # How long the host's adapter tolerates a stretched clock before it gives up (ETIMEDOUT).
    stretch_timeout_seconds: float = 1.0
    # Commands Get lists beyond its version's own (some parts' ROMs do): listed, NACKed.
    extra_commands: tuple[int, ...] = ()
    # The application is an I2C target at the bootloader's address too (answers, not ours).
    application_answers: bool = False
    # Sizes of the flash's sectors, in order, where they differ (F2/F4/F7: 16K, ..., 128K);
    # empty: uniform pages of page_size. An erase takes page_erase_seconds per page_size.
    sectors: tuple[int, ...] = ()
    # Two banks of half the flash each, and the L4/G4 user option word (FLASH_OPTR) at
    # option_address with BFB2 (bit 20): a reset from flash boots bank 2, mapped at the flash
    # base, when BFB2 is set and bank 2 holds a valid vector table (else bank 1).
    dual_bank: bool = False
    option_address: int = 0x1FFF_7800

    @property
    def units(self) -> list[tuple[int, int]]:
        """The erase units, (offset, size) from the flash base: ``sectors`` when given
        (F2/F4/F7), else uniform pages."""
        sizes = list(self.sectors) or [self.page_size] * (self.flash_size // self.page_size)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        return list(zip(offsets, sizes, strict=True))

    @property
    def page_count(self) -> int:
        return len(self.sectors) or self.flash_size // self.page_size

    @property
    def commands(self) -> tuple[int, ...]:
        """What Get lists."""
        return COMMANDS_BY_VERSION[self.bootloader_version] + self.extra_commands

    def to_json(self) -> dict[str, object]:
        return {
            "address": f"0x{self.address:02x}",
            "pid": f"0x{self.pid:03x}",
            "bootloader_version": f"0x{self.bootloader_version:02x}",
            "flash_base": f"0x{self.flash_base:08x}",
            "flash_size": self.flash_size,
            "page_size": self.page_size,
            "sram_base": f"0x{self.sram_base:08x}",
            "sram_size": self.sram_size,
            "uid_address": f"0x{self.uid_address:08x}",
            "uid": self.uid.hex(),
            "page_erase_seconds": self.page_erase_seconds,
            "mass_erase_seconds": self.mass_erase_seconds,
            "program_seconds_per_kib": self.program_seconds_per_kib,
            "stretch_timeout_seconds": self.stretch_timeout_seconds,
            "extra_commands": [f"0x{code:02x}" for code in self.extra_commands],
            "application_answers": self.application_answers,
            "sectors": list(self.sectors),
            "dual_bank": self.dual_bank,
            "option_address": f"0x{self.option_address:08x}",
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> Chip:
        if not isinstance(raw, dict):
            raise SimulatorError(f"{where}: expected an object")
        known = set(cls().to_json())
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SimulatorError(
                f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in raw.items():
            at = f"{where}.{name}"
            if name == "sectors":
                if not isinstance(value, list):
                    raise SimulatorError(f"{at}: expected a list of sector sizes in bytes")
                values[name] = tuple(_number(size, f"{at}[{i}]") for i, size in enumerate(value))
            elif name == "extra_commands":
                if not isinstance(value, list):
                    raise SimulatorError(f"{at}: expected a list of command codes")
                codes = [_number(code, f"{at}[{i}]") for i, code in enumerate(value)]
                if any(not 0 <= code <= 0xFF for code in codes):
                    raise SimulatorError(f"{at}: a command code is one byte (0x00 .. 0xff)")
                values[name] = tuple(codes)
            elif name in ("application_answers", "dual_bank"):
                if not isinstance(value, bool):
                    raise SimulatorError(f"{at}: expected true or false")
                values[name] = value
            elif name == "uid":
                try:
                    values[name] = bytes.fromhex(str(value))
                except ValueError:
                    raise SimulatorError(f"{at}: expected hexadecimal digits") from None
            elif name.endswith("_seconds") or name == "program_seconds_per_kib":
                values[name] = _seconds(value, at)
            else:
                values[name] = _number(value, at)
        chip = cls(**values)
        chip.check(lambda field: f"{where}.{field}")
        return chip

    def check(self, name: Callable[[str], str]) -> None:
        """Raise ``SimulatorError`` for a part that cannot exist; ``name`` turns a field name
        into what the user wrote (a JSON path, a command-line option)."""
        if not 0x08 <= self.address <= 0x77:
            raise SimulatorError(f"{name('address')}: 0x{self.address:x} is not a 7-bit address")
        if not 0 <= self.pid <= 0xFFF:
            raise SimulatorError(f"{name('pid')}: expected a 12-bit device ID (0x000 .. 0xfff)")
        if self.bootloader_version not in COMMANDS_BY_VERSION:
            known = ", ".join(f"0x{v:02x}" for v in COMMANDS_BY_VERSION)
            raise SimulatorError(f"{name('bootloader_version')}: expected one of {known}")
        if self.page_size < 256 or self.page_size & (self.page_size - 1):
            raise SimulatorError(f"{name('page_size')}: expected a power of two >= 256")
        if self.sectors:
            if any(size < 256 or size % 256 for size in self.sectors):
                raise SimulatorError(f"{name('sectors')}: expected sizes of 256-byte multiples")
            if sum(self.sectors) != self.flash_size:
                raise SimulatorError(f"{name('sectors')}: the sizes must add up to flash_size")
        elif self.flash_size <= 0 or self.flash_size % self.page_size:
            raise SimulatorError(f"{name('flash_size')}: expected a multiple of page_size")
        if self.dual_bank and (self.sectors or self.flash_size % (2 * self.page_size)):
            raise SimulatorError(
                f"{name('dual_bank')}: two banks need uniform pages, a whole number in each half"
            )
        if self.page_count > 0xFFF0:
            raise SimulatorError(f"{name('flash_size')}: too many pages for the Erase command")
        if self.sram_size < 0:
            raise SimulatorError(f"{name('sram_size')}: expected a size >= 0")
        for base_field, region, base, size in (
            ("flash_base", "flash", self.flash_base, self.flash_size),
            ("sram_base", "SRAM", self.sram_base, self.sram_size),
            ("uid_address", "unique ID", self.uid_address, len(self.uid)),
        ):
            if base < 0 or base % 4 or base + size > 1 << 32:
                raise SimulatorError(
                    f"{name(base_field)}: the {region} must start word-aligned and end inside the "
                    f"32-bit address space"
                )
        if len(self.uid) != 12:
            raise SimulatorError(f"{name('uid')}: expected 12 bytes (24 hex digits)")


@dataclass
class Fault:
    """One fault rule of ``PATH.json``; see the README for what each kind does."""

    kind: str
    command: str | None = None
    page: int | None = None
    skip: int = 0
    times: int = 1  # -1: every time
    seconds: float = 1.0  # busy
    offset: int = 0  # bit_flip: byte of the written block
    bit: int = 0  # bit_flip
    after_bytes: int | None = None  # power_loss during a write: bytes programmed first
    after_pages: int = 0  # power_loss during an erase: pages erased first
    off_transactions: int = 3  # power_loss: bus transfers that fail before power is back

    @classmethod
    def from_json(cls, raw: object, where: str) -> Fault:
        if not isinstance(raw, dict):
            raise SimulatorError(f"{where}: expected an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SimulatorError(
                f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kind = raw.get("kind")
        if kind not in FAULT_KINDS:
            raise SimulatorError(f"{where}.kind: expected one of {', '.join(FAULT_KINDS)}")
        command = raw.get("command")
        if command is not None and command not in FAULT_COMMANDS:
            raise SimulatorError(f"{where}.command: expected one of {', '.join(FAULT_COMMANDS)}")
        timed = ("write", "erase")
        if kind in ("busy", "power_loss") and command not in timed:
            raise SimulatorError(f'{where}.command: a {kind} fault needs "write" or "erase"')
        if kind == "bit_flip" and command not in (None, "write"):
            raise SimulatorError(f'{where}.command: a bit_flip fault happens on "write"')
        fault = cls(kind=kind, command=command)
        for name in known - {"kind", "command"}:
            if name in raw and raw[name] is not None:
                if name == "seconds":
                    fault.seconds = _seconds(raw[name], f"{where}.{name}")
                else:
                    value = _number(raw[name], f"{where}.{name}")
                    if value < 0 and name != "times":
                        raise SimulatorError(f"{where}.{name}: expected a number >= 0, got {value}")
                    setattr(fault, name, value)
        if fault.times == 0 or fault.times < -1:
            raise SimulatorError(f"{where}.times: expected a count >= 1, or -1 for always")
        if not 0 <= fault.bit <= 7:
            raise SimulatorError(f"{where}.bit: expected 0..7")
        return fault

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def matches(self, kind: str, command: str, pages: Sequence[int]) -> bool:
        if self.kind != kind or self.command not in (None, command):
            return False
        return self.page is None or self.page in pages


@dataclass
class State:
    """What the device remembers between bus openings (kept in ``PATH.json``)."""

    mode: str = "bootloader"  # "bootloader", "application" or "lockup"
    power_off_transactions: int = 0
    power_cycles: int = 0
    last_go: int | None = None
    resets: int = 0  # NRST pulses (into the bootloader or the application) and system resets
    rdp_level: int = 0  # readout protection (option bytes): 0 off, 1 on
    wrp_pages: list[int] = field(default_factory=list)  # write-protected pages (option bytes)
    bfb2: bool = False  # boot from bank 2 (option bytes; dual-bank chips)
    running_bank: int | None = None  # the bank the application runs from, once one started

    @classmethod
    def from_json(cls, raw: object, where: str) -> State:
        if not isinstance(raw, dict):
            raise SimulatorError(f"{where}: expected an object")
        state = cls()
        mode = raw.get("mode", "bootloader")
        if mode not in ("bootloader", "application", "lockup"):
            raise SimulatorError(f"{where}.mode: expected bootloader, application or lockup")
        state.mode = mode
        for counter in ("power_off_transactions", "power_cycles", "resets", "rdp_level"):
            value = _number(raw.get(counter, 0), f"{where}.{counter}")
            if value < 0:
                raise SimulatorError(f"{where}.{counter}: expected a count >= 0, got {value}")
            setattr(state, counter, value)
        if state.rdp_level > 1:
            raise SimulatorError(f"{where}.rdp_level: expected 0 or 1 (level 2 is permanent)")
        wrp = raw.get("wrp_pages", [])
        if not isinstance(wrp, list):
            raise SimulatorError(f"{where}.wrp_pages: expected a list of page numbers")
        state.wrp_pages = [_number(page, f"{where}.wrp_pages[{i}]") for i, page in enumerate(wrp)]
        state.bfb2 = bool(raw.get("bfb2", False))
        bank = raw.get("running_bank")
        state.running_bank = None if bank is None else _number(bank, f"{where}.running_bank")
        go = raw.get("last_go")
        state.last_go = None if go is None else _number(go, f"{where}.last_go")
        return state

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "power_off_transactions": self.power_off_transactions,
            "power_cycles": self.power_cycles,
            "last_go": None if self.last_go is None else f"0x{self.last_go:08x}",
            "resets": self.resets,
            "rdp_level": self.rdp_level,
            "wrp_pages": self.wrp_pages,
            "bfb2": self.bfb2,
            "running_bank": self.running_bank,
        }


@dataclass
class Device:
    """The persistent parts of a simulated chip: its side file and its flash."""

    path: Path
    chip: Chip
    faults: list[Fault]
    state: State
    flash: bytearray = field(repr=False)

    @property
    def side_path(self) -> Path:
        return side_file(self.path)

    @classmethod
    def create(cls, path: Path, chip: Chip) -> Device:
        """A new chip, its flash erased, no faults; written to ``path`` and its side file."""
        device = cls(path, chip, [], State(), bytearray(b"\xff" * chip.flash_size))
        device.save_flash()
        device.save_side()
        return device

    @staticmethod
    def require(path: Path) -> None:
        """Raise ``SimulatorError`` unless a device was created at ``path``: like an empty
        socket on a real bus, a mistyped path must not become a blank chip."""
        if not path.exists() and not side_file(path).exists():
            raise SimulatorError(
                f"no simulated device at {path}: create one with "
                f"`python -m mender_orchestrator_i2c.simulator init {path}`"
            )
        for needed in (path, side_file(path)):
            if not needed.is_file():
                raise SimulatorError(
                    f"{needed} is not a file: a simulated device is PATH (its flash) and "
                    f"PATH.json, both made by `python -m mender_orchestrator_i2c.simulator init`"
                )

    @classmethod
    def load(cls, path: Path) -> Device:
        cls.require(path)
        side = side_file(path)
        try:
            raw = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"{side}: not readable JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise SimulatorError(f"{side}: expected a JSON object")
        chip = Chip.from_json(raw.get("chip", {}), f"{side}: chip")
        faults_raw = raw.get("faults", [])
        if not isinstance(faults_raw, list):
            raise SimulatorError(f"{side}: faults: expected a list")
        faults = [Fault.from_json(f, f"{side}: faults[{i}]") for i, f in enumerate(faults_raw)]
        state = State.from_json(raw.get("state", {}), f"{side}: state")
        flash = bytearray(path.read_bytes())
        if len(flash) != chip.flash_size:
            raise SimulatorError(
                f"{path}: holds {len(flash)} bytes but {side} says flash_size is {chip.flash_size}"
            )
        return cls(path, chip, faults, state, flash)

    def save_side(self) -> None:
        document = {
            "chip": self.chip.to_json(),
            "faults": [f.to_json() for f in self.faults],
            "state": self.state.to_json(),
        }
        write_atomic(self.side_path, (json.dumps(document, indent=2) + "\n").encode(), 0o644)

    def save_flash(self) -> None:
        write_atomic(self.path, bytes(self.flash), 0o644)

    def take_fault(self, kind: str, command: str, pages: Sequence[int] = ()) -> Fault | None:
        """The first rule of ``kind`` matching this operation that fires now (it is consumed)."""
        for rule in self.faults:
            if not rule.matches(kind, command, pages):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                self.save_side()
                continue
            if rule.times > 0:
                rule.times -= 1
                if rule.times == 0:
                    self.faults.remove(rule)
            self.save_side()
            return rule
        return None


def side_file(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# --------------------------------------------------------------------------- the bus


@dataclass
class _Pending:
    """A flash operation under way: its answer is ready at ``done_at``."""

    done_at: float
    answer: int
    stretch: bool


Handler = Callable[[bytes], None]


class SimulatedBus:
    """An I2C bus with one simulated STM32 on it, in the shape of ``smbus2.SMBus``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        Device.require(path)
        self._lock = self._acquire(path.with_name(path.name + ".lock"))
        try:
            self.device = Device.load(path)
        except BaseException:
            os.close(self._lock)
            raise
        self.chip = self.device.chip
        self._sram = bytearray(self.chip.sram_size)
        self._reset_protocol()

    # -- smbus2's surface

    def i2c_rdwr(self, *msgs: Any) -> None:
        """Run smbus2 ``i2c_msg`` transfers in order, as ``SMBus.i2c_rdwr`` does."""
        if self._lock < 0:
            raise OSError(errno.EBADF, "simulated I2C bus is closed")
        state = self.device.state
        if state.power_off_transactions > 0:
            state.power_off_transactions -= 1
            if state.power_off_transactions == 0:
                self._power_up()
            self.device.save_side()
            raise OSError(errno.ENXIO, "no device answers (simulated STM32 is unpowered)")
        for msg in msgs:
            if msg.addr != self.chip.address or state.mode == "lockup":
                raise OSError(errno.ENXIO, f"no device answers at 0x{msg.addr:02x}")
            if state.mode == "application":
                if not self.chip.application_answers:
                    raise OSError(errno.ENXIO, f"no device answers at 0x{msg.addr:02x}")
                # the application's own I2C target: it takes any write and answers its own
                # bytes, never the bootloader's ACK or NACK
                if msg.flags & I2C_M_RD:
                    ctypes.memmove(msg.buf, bytes((APPLICATION_BYTE,)) * msg.len, msg.len)
                continue
            if msg.flags & I2C_M_RD:
                data = self._read(msg.len)
                ctypes.memmove(msg.buf, data, msg.len)
            else:
                self._write(bytes(msg))

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def __enter__(self) -> SimulatedBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the carrier board's BOOT0 / NRST lines

    def reset_to_bootloader(self) -> None:
        """Hold BOOT0 high and pulse NRST: the chip restarts into its system bootloader."""
        self._pulse_nrst("bootloader")

    def reset_to_application(self) -> None:
        """Hold BOOT0 low and pulse NRST: the chip boots what its flash holds."""
        self._pulse_nrst("flash")

    def _pulse_nrst(self, boot_from: str) -> None:
        state = self.device.state
        if state.power_off_transactions > 0:
            return  # a reset line does not bring power back
        state.resets += 1
        if boot_from == "bootloader":
            state.mode = "bootloader"
        else:
            self._boot_from_flash()
        self.device.save_side()
        self._reset_protocol()

    def _boot_from_flash(self) -> None:
        """A reset with BOOT0 low: bank 1 at the flash base, or, with BFB2 set on a dual-bank
        chip, bank 2 if its vector table is valid (the bootloader's dual-bank check)."""
        chip, state = self.chip, self.device.state
        banks = [1]
        if chip.dual_bank and state.bfb2:
            banks = [2, 1]
        for bank in banks:
            start = chip.flash_base + (bank - 1) * (chip.flash_size // 2)
            if self._vector_table_ok(self._memory(start, 8)):
                state.mode, state.running_bank = "application", bank
                return
        state.mode, state.running_bank = "lockup", None

    def _option_word(self) -> int:
        """FLASH_OPTR as read: RDP 0xAA (level 0) or 0xBB, BFB2 (bit 20), the rest as shipped."""
        state = self.device.state
        word = 0xFFEF_F800 | (0xBB if state.rdp_level else 0xAA)
        return word | (1 << 20) if state.bfb2 else word

    # -- protocol engine

    def _reset_protocol(self) -> None:
        self._frames: deque[tuple[bytes, Callable[[], None] | None]] = deque()
        self._pending: _Pending | None = None
        self._expect: Handler = self._on_command
        self._command = 0
        self._address = 0
        self._erase_count = 0

    def _power_up(self) -> None:
        self.device.state.mode = "bootloader"  # BOOT0 is held high on the programming board
        self.device.state.power_cycles += 1
        self._sram = bytearray(self.chip.sram_size)
        self._reset_protocol()

    def _violation(self, what: str) -> OSError:
        self._reset_protocol()
        return OSError(errno.EREMOTEIO, f"simulated STM32 NACKed the transfer: {what}")

    def _write(self, data: bytes) -> None:
        if self._frames or self._pending:
            raise self._violation("host wrote while an answer was waiting to be read")
        self._expect(data)

    def _read(self, length: int) -> bytes:
        pending = self._pending
        if pending is not None:
            wait = pending.done_at - time.monotonic()
            if pending.stretch:
                if wait > self.chip.stretch_timeout_seconds:
                    time.sleep(self.chip.stretch_timeout_seconds)
                    self._reset_protocol()
                    raise OSError(errno.ETIMEDOUT, "clock held low past the adapter's limit")
                time.sleep(max(wait, 0.0))
            elif wait > 0:
                return bytes((BUSY,)) + b"\xff" * (length - 1)
            self._pending = None
            return bytes((pending.answer,)) + b"\xff" * (length - 1)
        if not self._frames:
            raise self._violation("host read but the bootloader had nothing to send")
        frame, on_sent = self._frames.popleft()
        if length > len(frame):
            # the bootloader sends its frame, then holds the clock waiting for a byte it will
            # never send: the adapter gives up, and the bootloader waits for a command again
            self._reset_protocol()
            raise OSError(
                errno.ETIMEDOUT,
                f"clock held low after {len(frame)} of the {length} bytes read "
                f"(the bootloader's frame was shorter)",
            )
        if on_sent is not None:
            on_sent()
        return frame[:length]  # a shorter read loses the rest of the frame, as on the chip

    def _send(self, frame: bytes, on_sent: Callable[[], None] | None = None) -> None:
        self._frames.append((frame, on_sent))

    def _ack(self, then: Handler | None = None, on_sent: Callable[[], None] | None = None) -> None:
        self._send(bytes((ACK,)), on_sent)
        self._expect = then or self._on_command

    def _nack(self) -> None:
        self._send(bytes((NACK,)))
        self._expect = self._on_command

    def _finish(self, answer: int, seconds: float) -> None:
        stretch = self._command in (Command.WRITE_MEMORY, Command.ERASE)
        self._pending = _Pending(time.monotonic() + seconds, answer, stretch)
        self._expect = self._on_command

    def _lose_power(self, fault: Fault) -> None:
        self.device.state.power_off_transactions = max(fault.off_transactions, 1)
        self.device.save_side()
        self._reset_protocol()

    # -- memory map

    def _region(self, address: int, length: int = 1) -> str | None:
        chip = self.chip
        regions = (
            ("flash", chip.flash_base, chip.flash_size),
            ("sram", chip.sram_base, chip.sram_size),
            ("uid", chip.uid_address, len(chip.uid)),
            ("option", chip.option_address, 8),
        )
        for name, base, size in regions:
            if base <= address and address + length <= base + size:
                return name
        return None

    def _page(self, address: int) -> int:
        offset = address - self.chip.flash_base
        return next(
            number
            for number, (start, size) in enumerate(self.chip.units)
            if start <= offset < start + size
        )

    def _pages(self, address: int, length: int) -> list[int]:
        return list(range(self._page(address), self._page(address + length - 1) + 1))

    def _memory(self, address: int, length: int) -> bytes:
        region = self._region(address, length)
        if region == "flash":
            offset = address - self.chip.flash_base
            return bytes(self.device.flash[offset : offset + length])
        if region == "sram":
            offset = address - self.chip.sram_base
            return bytes(self._sram[offset : offset + length])
        if region == "option":
            word = self._option_word()
            raw = word.to_bytes(4, "little") + (word ^ 0xFFFF_FFFF).to_bytes(4, "little")
            offset = address - self.chip.option_address
            return raw[offset : offset + length]
        offset = address - self.chip.uid_address
        return self.chip.uid[offset : offset + length]

    # -- command handlers, one per expected frame

    def _on_command(self, data: bytes) -> None:
        if len(data) != 2 or data[0] ^ data[1] != 0xFF:
            return self._nack()
        code = data[0]
        commands = self.chip.commands
        if code not in commands or code not in _COMMAND_NAMES:
            # Write Protect (setting WRP) is listed but refused: the driver never sets it.
            return self._nack()
        self._command = code
        name = _COMMAND_NAMES[Command(code)]
        if name.startswith("get") and self.device.take_fault("nack", name):
            return self._nack()
        if name in _PROTECTED and self.device.state.rdp_level:
            return self._nack()
        if code == Command.GET:
            self._ack()
            self._send(bytes((len(commands), self.chip.bootloader_version, *commands)))
            self._ack()
        elif code == Command.GET_VERSION:
            self._ack()
            self._send(bytes((self.chip.bootloader_version,)))
            self._ack()
        elif code == Command.GET_ID:
            self._ack()
            self._send(bytes((1, self.chip.pid >> 8, self.chip.pid & 0xFF)))
            self._ack()
        elif name == "erase":
            self._ack(self._on_erase_count)
        elif name in ("protect", "unprotect", "write_unprotect"):
            self._on_option_bytes(name)
        else:
            self._ack(self._on_address)

    def _on_option_bytes(self, name: str) -> None:
        """Readout (un)protect and write unprotect: change the option bytes, then a system
        reset (BOOT0 is still high: back into the bootloader). Removing readout protection
        mass-erases the flash first, as the hardware does."""
        state = self.device.state
        if name == "unprotect":
            self.device.flash[:] = b"\xff" * self.chip.flash_size
            self.device.save_flash()
            state.rdp_level = 0
        elif name == "protect":
            state.rdp_level = 1
        else:
            state.wrp_pages = []
        state.resets += 1
        self.device.save_side()
        self._ack()
        self._ack(on_sent=self._reset_protocol)

    def _on_address(self, data: bytes) -> None:
        if len(data) != 5 or xor(data[:4]) != data[4]:
            return self._nack()
        address = int.from_bytes(data[:4], "big")
        region = self._region(address)
        name = _COMMAND_NAMES[Command(self._command)]
        allowed = {"read": ("flash", "sram", "uid", "option"), "go": ("flash", "sram")}.get(
            name, ("flash", "sram", "option")
        )
        pages = [self._page(address)] if region == "flash" else []
        if region not in allowed or (
            name != "write" and self.device.take_fault("nack", name, pages)
        ):
            return self._nack()
        self._address = address
        if name == "go":
            self._ack(on_sent=self._jump)
        elif name == "checksum":
            self._ack(self._on_checksum_length)
        elif name == "read":
            self._ack(self._on_read_count)
        else:
            self._ack(self._on_write_data)

    def _on_read_count(self, data: bytes) -> None:
        if len(data) != 2 or data[0] ^ data[1] != 0xFF:
            return self._nack()
        length = data[0] + 1
        if self._region(self._address, length) is None:
            return self._nack()
        self._ack()
        self._send(self._memory(self._address, length))

    def _on_checksum_length(self, data: bytes) -> None:
        """Get Checksum: a 32-bit length (a multiple of 4) and its XOR, ACKed; then BUSY while
        the CRC unit runs, ACK, and the CRC with its XOR (no ACK after it)."""
        if len(data) != 5 or xor(data[:4]) != data[4]:
            return self._nack()
        length = int.from_bytes(data[:4], "big")
        if length == 0 or length % 4 or self._region(self._address, length) != "flash":
            return self._nack()
        crc = stm32_crc(self._memory(self._address, length)).to_bytes(4, "big")

        def compute() -> None:
            seconds = length / (64 * 1024 * 1024)  # the CRC unit: about a word a clock at 64 MHz
            self._finish(ACK, seconds)
            self._send(crc + bytes((xor(crc),)))

        self._ack(on_sent=compute)

    def _on_write_data(self, data: bytes) -> None:
        if len(data) < 3 or len(data) != data[0] + 3 or xor(data[:-1]) != data[-1]:
            return self._nack()
        block = data[1:-1]
        address = self._address
        region = self._region(address, len(block))
        if region == "option":
            return self._write_option_bytes(address, block)
        if address % 4 or len(block) % 4 or region not in ("flash", "sram"):
            return self._nack()
        if region == "sram":
            offset = address - self.chip.sram_base
            self._sram[offset : offset + len(block)] = block
            return self._finish(ACK, 0.0)
        pages = self._pages(address, len(block))
        seconds = self.chip.program_seconds_per_kib * len(block) / 1024
        protected = set(pages) & set(self.device.state.wrp_pages)
        if protected or self.device.take_fault("nack", "write", pages):
            return self._finish(NACK, seconds)
        power = self.device.take_fault("power_loss", "write", pages)
        if power is not None:
            cut = len(block) // 2 if power.after_bytes is None else power.after_bytes
            self._program(address, block[: cut - cut % 4])
            return self._lose_power(power)
        answer = ACK if self._program(address, block) else NACK
        flip = self.device.take_fault("bit_flip", "write", pages)
        if flip is not None and answer == ACK:
            at = address - self.chip.flash_base + flip.offset % len(block)
            self.device.flash[at] ^= 1 << flip.bit
            self.device.save_flash()
        busy = self.device.take_fault("busy", "write", pages)
        self._finish(answer, seconds + (busy.seconds if busy else 0.0))

    def _write_option_bytes(self, address: int, block: bytes) -> None:
        """Write Memory to the option bytes: the whole double word (the option word and its
        complement), then the option byte launch, a system reset (BOOT0 high: back into the
        bootloader). Only BFB2 may change here; anything else is refused (NACK)."""
        if address != self.chip.option_address or len(block) != 8:
            return self._nack()
        word = int.from_bytes(block[:4], "little")
        complement = int.from_bytes(block[4:], "little")
        changed = word ^ self._option_word()
        if complement != word ^ 0xFFFF_FFFF or changed & ~(1 << 20) or not self.chip.dual_bank:
            return self._nack()
        state = self.device.state
        state.bfb2 = bool(word & (1 << 20))
        state.resets += 1
        self.device.save_side()
        self._ack(on_sent=self._reset_protocol)

    def _program(self, address: int, block: bytes) -> bool:
        """Program word by word; a word that is not erased stops it (a program error)."""
        flash = self.device.flash
        offset = address - self.chip.flash_base
        ok = True
        for i in range(0, len(block), 4):
            word = block[i : i + 4]
            if word == b"\xff\xff\xff\xff":
                continue
            if flash[offset + i : offset + i + 4] != b"\xff\xff\xff\xff":
                ok = False
                break
            flash[offset + i : offset + i + 4] = word
        self.device.save_flash()
        return ok

    def _on_erase_count(self, data: bytes) -> None:
        if len(data) != 3 or xor(data[:2]) != data[2]:
            return self._nack()
        count = int.from_bytes(data[:2], "big")
        if count == MASS_ERASE:
            return self._erase(list(range(self.chip.page_count)), self.chip.mass_erase_seconds)
        if count + 1 > self.chip.page_count:
            return self._nack()  # includes the bank-erase codes 0xFFFE/0xFFFD: one bank only
        self._erase_count = count + 1
        self._ack(self._on_erase_pages)

    def _on_erase_pages(self, data: bytes) -> None:
        size = 2 * self._erase_count
        if len(data) != size + 1 or xor(data[:-1]) != data[-1]:
            return self._nack()
        pages = [int.from_bytes(data[i : i + 2], "big") for i in range(0, size, 2)]
        if any(page >= self.chip.page_count for page in pages):
            return self._nack()
        units = self.chip.units
        pages_erased = sum(units[page][1] for page in pages) / self.chip.page_size
        self._erase(pages, self.chip.page_erase_seconds * pages_erased)

    def _erase(self, pages: list[int], seconds: float) -> None:
        # a write-protected page refuses the whole erase, before anything is erased
        protected = set(pages) & set(self.device.state.wrp_pages)
        if protected or self.device.take_fault("nack", "erase", pages):
            return self._finish(NACK, seconds)
        units = self.chip.units
        power = self.device.take_fault("power_loss", "erase", pages)
        done = pages if power is None else pages[: power.after_pages]
        for page in done:
            start, size = units[page]
            self.device.flash[start : start + size] = b"\xff" * size
        if power is not None:
            if len(done) < len(pages):  # the page being erased is left half done
                start, size = units[pages[len(done)]]
                self.device.flash[start : start + size // 2] = b"\xff" * (size // 2)
            self.device.save_flash()
            return self._lose_power(power)
        self.device.save_flash()
        busy = self.device.take_fault("busy", "erase", pages)
        self._finish(ACK, seconds + (busy.seconds if busy else 0.0))

    def _jump(self) -> None:
        """Go: the core loads SP and PC from the vector table at the target address."""
        address = self._address
        table = self._memory(address, 8) if self._region(address, 8) else b""
        state = self.device.state
        state.last_go = address
        state.mode = "application" if self._vector_table_ok(table) else "lockup"
        # Go does not remap: an address in the second half of a dual-bank flash runs bank 2
        half = self.chip.flash_base + self.chip.flash_size // 2
        bank = 2 if self.chip.dual_bank and address >= half else 1
        state.running_bank = bank if state.mode == "application" else None
        self.device.save_side()
        self._reset_protocol()

    def _vector_table_ok(self, table: bytes) -> bool:
        if len(table) != 8:
            return False
        stack = int.from_bytes(table[:4], "little")
        reset = int.from_bytes(table[4:], "little")
        chip = self.chip
        stack_ok = chip.sram_base < stack <= chip.sram_base + chip.sram_size and stack % 4 == 0
        entry = reset & ~1
        reset_ok = bool(reset & 1) and chip.flash_base <= entry < chip.flash_base + chip.flash_size
        return stack_ok and reset_ok

    @staticmethod
    def _acquire(lock_path: Path) -> int:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        give_up = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > give_up:
                    os.close(fd)
                    raise OSError(
                        errno.EBUSY, f"simulated device {lock_path} is in use by another process"
                    ) from None
                time.sleep(0.01)


# --------------------------------------------------------------------------- command line


def _argument(parse: Callable[[str], int], expected: str) -> Callable[[str], int]:
    """An argparse ``type`` whose error says what was expected."""

    def convert(text: str) -> int:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


_INTEGER = _argument(lambda text: int(text, 0), "an integer (decimal or 0x hex)")
_SIZE = size_argument  # same message: "expected a size in bytes (2048, 0x800, 2K, 1M), got ..."


def _uid(text: str) -> bytes:
    try:
        uid = bytes.fromhex(text)
    except ValueError:
        uid = b""
    if len(uid) != 12:
        raise argparse.ArgumentTypeError(f"expected 24 hexadecimal digits, got {text!r}")
    return uid


def _record_offset(chip: Chip, address: int | None) -> int:
    """Where the version record sits in the flash (the driver's ``--version-record``)."""
    if address is None:
        return chip.flash_size - chip.page_size
    offset = address - chip.flash_base
    if offset % chip.page_size or not 0 < offset < chip.flash_size:
        raise SimulatorError(
            f"--version-record=0x{address:08x}: expected the start of a page after the first, "
            f"0x{chip.flash_base + chip.page_size:08x} .. "
            f"0x{chip.flash_base + chip.flash_size - chip.page_size:08x}"
        )
    return offset


def _init(args: argparse.Namespace) -> int:
    path: Path = args.path
    if (path.exists() or side_file(path).exists()) and not args.force:
        raise SimulatorError(f"{path} already exists; use --force to replace it")
    if not path.parent.is_dir():
        raise SimulatorError(f"{path}: directory {path.parent} does not exist")
    chip = Chip(
        address=args.address,
        pid=args.pid,
        bootloader_version=args.bootloader_version,
        flash_size=args.flash_size,
        page_size=args.page_size,
        uid=args.uid or os.urandom(12),
    )
    chip.check(lambda field: "--" + field.replace("_", "-"))
    # everything is checked before anything is written, so a mistake leaves no device behind
    record_offset = _record_offset(chip, args.version_record)
    factory: tuple[bytes, bytes] | None = None
    if args.image is not None:
        try:
            image = args.image.read_bytes()
        except OSError as exc:
            raise SimulatorError(f"--image {args.image}: {exc.strerror or exc}") from None
        try:
            record = VersionRecord.for_image(args.version, image).encode()
        except ValueError as exc:
            raise SimulatorError(f"--version: {exc}") from None
        if not 0 < len(image) <= record_offset:
            raise SimulatorError(
                f"--image {args.image}: {len(image)} bytes; the image must hold 1 to "
                f"{record_offset} bytes, below the version record at "
                f"0x{chip.flash_base + record_offset:08x}"
            )
        factory = (image, record)
    device = Device.create(path, chip)
    if factory is not None:
        image, record = factory
        device.flash[: len(image)] = image
        device.flash[record_offset : record_offset + len(record)] = record
        device.save_flash()
    print(f"simulated STM32 at 0x{chip.address:02x}: flash {path}, settings {side_file(path)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    device = Device.load(args.path)
    chip = device.chip
    offset = _record_offset(chip, args.version_record)
    record = decode(bytes(device.flash[offset : offset + VersionRecord.size_limit()]))
    summary = {
        "chip": chip.to_json(),
        "state": device.state.to_json(),
        "faults": [f.to_json() for f in device.faults],
        "version_record": None if record is None else record.__dict__,
        "blank_pages": [
            p
            for p, (start, size) in enumerate(chip.units)
            if device.flash[start : start + size].count(0xFF) == size
        ],
    }
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mender_orchestrator_i2c.simulator",
        description="Create or inspect a simulated STM32 (I2C system bootloader, ST AN4221).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="create a device: PATH (flash) and PATH.json (settings)")
    init.add_argument("path", type=Path)
    init.add_argument("--address", type=_INTEGER, default=0x48)
    init.add_argument("--pid", type=_INTEGER, default=0x460)
    init.add_argument("--bootloader-version", type=_INTEGER, default=0x11)
    init.add_argument("--flash-size", type=_SIZE, default=64 * 1024)
    init.add_argument("--page-size", type=_SIZE, default=2048)
    init.add_argument("--uid", type=_uid, help="24 hex digits (default: random)")
    init.add_argument("--image", type=Path, help="firmware to place at the flash base")
    init.add_argument("--version", default="factory", help="version written in the record")
    init.add_argument("--version-record", type=_INTEGER, help="default: last flash page")
    init.add_argument("--force", action="store_true", help="replace an existing device")
    show = sub.add_parser("show", help="print the device's settings, state and version record")
    show.add_argument("path", type=Path)
    show.add_argument("--version-record", type=_INTEGER, help="default: last flash page")
    args = parser.parse_args(argv)
    try:
        return _init(args) if args.action == "init" else _show(args)
    except (SimulatorError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
