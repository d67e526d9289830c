"""The simulated ECU's non-volatile memory, kept on disk so it survives restarts.

``PATH`` (the state file) is JSON: serial number, bank count and size, which bank boots, and
per bank whether it holds a valid image and its version. Each bank's bytes live next to it in
``PATH.bank0`` (and ``PATH.bank1``). Programming behaves like NOR flash: it can only clear
bits, so writing over data that was not erased corrupts it, as on the real part.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator_core.driver_api import write_atomically

ERASED = 0xFF
SECTOR = 4096


@dataclass
class Bank:
    valid: bool = False
    version: str | None = None


@dataclass
class FlashLayout:
    serial: str
    bank_size: int
    boot_bank: int = 0
    banks: list[Bank] = field(default_factory=list)


class FlashStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.layout = self._read()

    @classmethod
    def create(
        cls, path: Path, *, banks: int, bank_size: int, serial: str, version: str, image: bytes
    ) -> FlashStore:
        """A new ECU: bank 0 holds ``image`` labelled ``version``, any other bank is erased."""
        if bank_size < SECTOR or bank_size % SECTOR:
            raise ValueError(f"the bank size ({bank_size} bytes) must be a multiple of {SECTOR}")
        if not 1 <= len(image) <= bank_size:
            raise ValueError(
                f"the initial image ({len(image)} bytes) must fit a bank of {bank_size}"
            )
        for index in range(banks):
            content = image if index == 0 else b""
            write_atomically(
                cls._bank_path(path, index), content + bytes([ERASED]) * (bank_size - len(content))
            )
        layout = FlashLayout(
            serial, bank_size, 0, [Bank(True, version)] + [Bank() for _ in range(banks - 1)]
        )
        write_atomically(path, json.dumps(asdict(layout), indent=2).encode())
        return cls(path)

    @staticmethod
    def _bank_path(path: Path, index: int) -> Path:
        return path.with_name(f"{path.name}.bank{index}")

    def _read(self) -> FlashLayout:
        """The layout from the state file, checked field by field: the simulator's own files
        may be edited by hand, and a mistake must be named, not surface mid-request."""
        where = str(self.path)
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: cannot read it: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a JSON object")
        serial, bank_size = raw.get("serial"), raw.get("bank_size")
        boot_bank, banks = raw.get("boot_bank"), raw.get("banks")
        if not isinstance(serial, str) or not serial:
            raise ValueError(f"{where}: serial: expected a non-empty string, got {serial!r}")
        if type(bank_size) is not int or bank_size < SECTOR or bank_size % SECTOR:
            raise ValueError(
                f"{where}: bank_size: expected a multiple of {SECTOR} bytes, got {bank_size!r}"
            )
        if not isinstance(banks, list) or len(banks) not in (1, 2):
            raise ValueError(f"{where}: banks: expected a list of 1 or 2 banks, got {banks!r}")
        if type(boot_bank) is not int or not 0 <= boot_bank < len(banks):
            raise ValueError(
                f"{where}: boot_bank: expected a bank number below {len(banks)}, got {boot_bank!r}"
            )
        layout = FlashLayout(serial, bank_size, boot_bank, [])
        for index, bank in enumerate(banks):
            if (
                not isinstance(bank, dict)
                or set(bank) != {"valid", "version"}
                or not isinstance(bank["valid"], bool)
                or not isinstance(bank["version"], str | None)
            ):
                raise ValueError(
                    f'{where}: banks[{index}]: expected {{"valid": true|false, "version": '
                    f'"..."|null}}, got {bank!r}'
                )
            memory = self._bank_path(self.path, index)
            size = memory.stat().st_size if memory.is_file() else None
            if size != bank_size:
                found = "it is missing" if size is None else f"it holds {size} bytes"
                raise ValueError(
                    f"{memory}: bank {index} must hold bank_size={bank_size} bytes; {found}"
                )
            layout.banks.append(Bank(**bank))
        return layout

    def reload(self) -> None:
        """Forget everything not written to disk (what a power cycle does)."""
        self.layout = self._read()

    def save(self) -> None:
        write_atomically(self.path, json.dumps(asdict(self.layout), indent=2).encode())

    def read(self, bank: int, offset: int, size: int) -> bytes:
        with self._bank_path(self.path, bank).open("rb") as memory:
            memory.seek(offset)
            return memory.read(size)

    def program(self, bank: int, offset: int, data: bytes) -> None:
        with self._bank_path(self.path, bank).open("r+b") as memory:
            memory.seek(offset)
            current = memory.read(len(data))
            memory.seek(offset)
            cleared = int.from_bytes(current, "big") & int.from_bytes(data, "big")
            memory.write(cleared.to_bytes(len(data), "big"))

    def erase(self, bank: int, offset: int, size: int) -> None:
        """Erase whole sectors covering ``[offset, offset + size)``."""
        start = offset - offset % SECTOR
        end = min(-(-(offset + size) // SECTOR) * SECTOR, self.layout.bank_size)
        with self._bank_path(self.path, bank).open("r+b") as memory:
            memory.seek(start)
            memory.write(bytes([ERASED]) * (end - start))

    def sync(self, bank: int) -> None:
        with self._bank_path(self.path, bank).open("r+b") as memory:
            os.fsync(memory.fileno())
