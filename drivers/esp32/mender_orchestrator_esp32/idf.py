"""ESP-IDF's flash formats, as the second-stage bootloader reads them.

- The partition table (at 0x8000): 32-byte entries (magic 0xAA50, type, subtype, offset, size,
  label, flags), an MD5 entry (0xEBEB), then 0xFF.
- ``otadata``: two flash sectors, each starting with an ``esp_ota_select_entry_t``
  (``ota_seq``, ``seq_label[20]``, ``ota_state``, ``crc`` = CRC-32 of ``ota_seq``).
- The app image: ``esp_image_header_t`` (magic 0xE9), the first segment's header, then
  ``esp_app_desc_t`` (magic 0xABCD5432, version, project name).

and the bootloader's choice of partition with app rollback enabled
(``CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE``), shared by the driver (which predicts what the chip
boots) and the simulator (which boots it).
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from dataclasses import dataclass, replace

PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_SIZE = 0xC00
SECTOR = 0x1000
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_FACTORY = 0x00
SUBTYPE_OTA_0 = 0x10
SUBTYPE_OTADATA = 0x00
IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
APP_DESC_OFFSET = 24 + 8  # after esp_image_header_t and the first segment header
APP_DESC_SIZE = 256
UNDEFINED = 0xFFFF_FFFF


class OtaState(enum.IntEnum):
    """``esp_ota_img_states_t``."""

    NEW = 0x0
    PENDING_VERIFY = 0x1
    VALID = 0x2
    INVALID = 0x3
    ABORTED = 0x4
    UNDEFINED = 0xFFFF_FFFF


class FormatError(ValueError):
    """Flash contents that do not have the shape ESP-IDF gives them."""


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int

    @property
    def ota_slot(self) -> int | None:
        """N for ``ota_N``, None for any other partition."""
        if self.type == TYPE_APP and SUBTYPE_OTA_0 <= self.subtype < SUBTYPE_OTA_0 + 16:
            return self.subtype - SUBTYPE_OTA_0
        return None

    def encode(self) -> bytes:
        label = self.label.encode()
        if len(label) > 16:
            raise FormatError(f"partition label {self.label!r} is longer than 16 bytes")
        return ENTRY_MAGIC + struct.pack(
            "<BBII16sI", self.type, self.subtype, self.offset, self.size, label, 0
        )


@dataclass(frozen=True)
class PartitionTable:
    partitions: tuple[Partition, ...]

    @classmethod
    def decode(cls, raw: bytes) -> PartitionTable:
        found: list[Partition] = []
        for at in range(0, min(len(raw), PARTITION_TABLE_SIZE) - 31, 32):
            entry = raw[at : at + 32]
            if entry[:2] == MD5_MAGIC:
                if hashlib.md5(raw[:at]).digest() != entry[16:32]:
                    raise FormatError(f"the partition table's MD5 entry (at +0x{at:x}) is wrong")
                break
            if entry[:2] != ENTRY_MAGIC:
                break
            kind, subtype, offset, size, label, _flags = struct.unpack("<BBII16sI", entry[2:])
            found.append(
                Partition(label.rstrip(b"\0").decode(errors="replace"), kind, subtype, offset, size)
            )
        if not found:
            raise FormatError(
                f"no partition table at 0x{PARTITION_TABLE_OFFSET:x} (no 0xAA50 entry)"
            )
        return cls(tuple(found))

    def encode(self) -> bytes:
        body = b"".join(p.encode() for p in self.partitions)
        md5 = MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
        raw = body + md5
        return raw + b"\xff" * (PARTITION_TABLE_SIZE - len(raw))

    def ota_layout(self) -> tuple[Partition, list[Partition]]:
        """otadata and the OTA slots; a FormatError where the table lacks either."""
        return self.otadata, self.ota_slots

    @property
    def otadata(self) -> Partition:
        for p in self.partitions:
            if p.type == TYPE_DATA and p.subtype == SUBTYPE_OTADATA:
                if p.size < 2 * SECTOR:
                    raise FormatError(f"otadata partition {p.label!r} is smaller than 2 sectors")
                return p
        raise FormatError("the partition table has no otadata partition (data, ota)")

    @property
    def ota_slots(self) -> list[Partition]:
        """``ota_0``, ``ota_1``... in slot order."""
        slots = sorted(
            (p for p in self.partitions if p.ota_slot is not None),
            key=lambda p: p.subtype,
        )
        if len(slots) < 2:
            raise FormatError("the partition table has fewer than two OTA app partitions")
        return slots

    @property
    def factory(self) -> Partition | None:
        return next(
            (p for p in self.partitions if p.type == TYPE_APP and p.subtype == SUBTYPE_FACTORY),
            None,
        )

    def by_label(self, label: str) -> Partition:
        for p in self.partitions:
            if p.label == label:
                return p
        raise FormatError(f"no partition labelled {label!r}")


def ota_crc(seq: int) -> int:
    """ESP-IDF's ``bootloader_common_ota_select_crc``: ``esp_rom_crc32_le(UINT32_MAX, seq)``."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFF_FFFF) & 0xFFFF_FFFF


@dataclass(frozen=True)
class OtaEntry:
    """One ``esp_ota_select_entry_t`` (32 bytes)."""

    seq: int
    state: int
    crc: int
    label: bytes = b"\xff" * 20

    SIZE = 32

    @classmethod
    def make(cls, seq: int, state: OtaState) -> OtaEntry:
        return cls(seq, int(state), ota_crc(seq))

    @classmethod
    def decode(cls, raw: bytes) -> OtaEntry:
        seq, label, state, crc = struct.unpack("<I20sII", raw[: cls.SIZE])
        return cls(seq, state, crc, label)

    def encode(self) -> bytes:
        return struct.pack("<I20sII", self.seq, self.label, self.state, self.crc)

    @property
    def valid(self) -> bool:
        """What ``bootloader_common_ota_select_valid`` accepts."""
        return (
            self.seq != UNDEFINED
            and self.crc == ota_crc(self.seq)
            and self.state not in (OtaState.INVALID, OtaState.ABORTED)
        )

    @property
    def state_name(self) -> str:
        try:
            return OtaState(self.state).name
        except ValueError:
            return f"0x{self.state:08x}"


@dataclass(frozen=True)
class OtaData:
    """The two sectors of ``otadata``."""

    entries: tuple[OtaEntry, OtaEntry]

    @classmethod
    def decode(cls, raw: bytes) -> OtaData:
        if len(raw) < SECTOR + OtaEntry.SIZE:
            raise FormatError("otadata is shorter than two sectors")
        return cls((OtaEntry.decode(raw[:OtaEntry.SIZE]), OtaEntry.decode(raw[SECTOR:])))

    @staticmethod
    def sector(entry: OtaEntry | None) -> bytes:
        if entry is None:
            return b"\xff" * SECTOR
        raw = entry.encode()
        return raw + b"\xff" * (SECTOR - len(raw))

    def active(self) -> int | None:
        """Index (0 or 1) of the entry the bootloader takes: the valid one of highest seq."""
        candidates = [i for i, e in enumerate(self.entries) if e.valid]
        if not candidates:
            return None
        return max(candidates, key=lambda i: self.entries[i].seq)

    def with_entry(self, index: int, entry: OtaEntry) -> OtaData:
        entries = list(self.entries)
        entries[index] = entry
        return OtaData((entries[0], entries[1]))

    def select(self, slot: int, slots: int, state: OtaState) -> tuple[int, OtaData]:
        """``esp_ota_set_boot_partition``: the lowest seq above the current one that names
        ``slot``, written into the entry that is not active; returns (that index, new data)."""
        active = self.active()
        current = 0 if active is None else self.entries[active].seq
        seq = current + 1
        while (seq - 1) % slots != slot:
            seq += 1
        index = 0 if active is None else 1 - active
        return index, self.with_entry(index, OtaEntry.make(seq, state))

    def set_state(self, index: int, state: OtaState) -> OtaData:
        return self.with_entry(index, replace(self.entries[index], state=int(state)))


@dataclass(frozen=True)
class AppDescription:
    """The fields of ``esp_app_desc_t`` the driver reports."""

    version: str
    project: str
    idf_version: str

    @classmethod
    def decode(cls, image_start: bytes) -> AppDescription | None:
        """From the first bytes of a partition; None where no valid app image starts."""
        if len(image_start) < APP_DESC_OFFSET + APP_DESC_SIZE or image_start[0] != IMAGE_MAGIC:
            return None
        desc = image_start[APP_DESC_OFFSET : APP_DESC_OFFSET + APP_DESC_SIZE]
        (magic,) = struct.unpack("<I", desc[:4])
        if magic != APP_DESC_MAGIC:
            return None
        return cls(_text(desc[16:48]), _text(desc[48:80]), _text(desc[112:144]))

    def encode(self) -> bytes:
        """An ``esp_app_desc_t`` (for the simulator and tests)."""
        raw = struct.pack("<IIII", APP_DESC_MAGIC, 0, 0, 0)
        raw += _field(self.version, 32) + _field(self.project, 32)
        raw += _field("00:00:00", 16) + _field("Jan  1 2026", 16) + _field(self.idf_version, 32)
        return raw + b"\0" * (APP_DESC_SIZE - len(raw))


def selected_partition(table: PartitionTable, otadata: OtaData) -> Partition:
    """The app partition the bootloader starts, before it looks at the entry's state: the
    slot of the active otadata entry, else the factory app, else ``ota_0``."""
    slots = table.ota_slots
    active = otadata.active()
    if active is None:
        return table.factory or slots[0]
    return slots[(otadata.entries[active].seq - 1) % len(slots)]


def image_chip_id(image: bytes) -> int:
    """``esp_image_header_t.chip_id`` (0 for ESP32)."""
    (chip_id,) = struct.unpack_from("<H", image, 12)
    return int(chip_id)


def make_app_image(description: AppDescription, body: bytes, chip_id: int = 0) -> bytes:
    """A minimal well-formed app image: header, one DROM segment holding the descriptor."""
    segment = description.encode() + body
    segment += b"\0" * (-len(segment) % 4)
    header = struct.pack(
        "<BBBBIBBBBHBHH4sB", IMAGE_MAGIC, 1, 2, 0x20, 0x400D_0000, 0xEE, 0, 0, 0,
        chip_id, 0, 0, 0xFFFF, b"\0" * 4, 0,
    )  # fmt: skip
    return header + struct.pack("<II", 0x3F40_0020, len(segment)) + segment


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _field(text: str, width: int) -> bytes:
    raw = text.encode()[: width - 1]
    return raw + b"\0" * (width - len(raw))
