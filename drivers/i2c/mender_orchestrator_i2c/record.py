"""The version record the driver writes into flash next to the image.

The STM32 bootloader cannot tell which firmware is installed, so the driver keeps that in a
small record of its own, in a page of its own, written last during an install: a torn install
leaves no valid record rather than a wrong version.

Layout (little-endian), padded with 0xFF to a multiple of 4 bytes (the flash write unit)::

    0   4  magic b"MOVR"
    4   2  record format (1)
    6   2  L, length of the version string
    8   4  image length in bytes
    12  4  CRC-32 of the image
    16  L  version, UTF-8
    16+L 4 CRC-32 of bytes 0 .. 16+L
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"MOVR"
FORMAT = 1
_HEADER = struct.Struct("<4sHHII")
_CRC = struct.Struct("<I")
MAX_VERSION_BYTES = 200  # keeps the record inside one 256-byte Write Memory


@dataclass(frozen=True)
class VersionRecord:
    version: str
    image_length: int
    image_crc32: int

    @classmethod
    def for_image(cls, version: str, image: bytes) -> VersionRecord:
        return cls(version, len(image), zlib.crc32(image))

    def encode(self) -> bytes:
        text = self.version.encode("utf-8")
        if not text or len(text) > MAX_VERSION_BYTES:
            raise ValueError(
                f"version {self.version!r} must be 1 to {MAX_VERSION_BYTES} bytes of UTF-8"
            )
        body = _HEADER.pack(MAGIC, FORMAT, len(text), self.image_length, self.image_crc32) + text
        raw = body + _CRC.pack(zlib.crc32(body))
        return raw + b"\xff" * (-len(raw) % 4)

    @staticmethod
    def size_limit() -> int:
        """Bytes to read to be sure to get a whole record."""
        return _HEADER.size + MAX_VERSION_BYTES + _CRC.size + 3


def decode(raw: bytes) -> VersionRecord | None:
    """The record in ``raw`` (read from its address), or ``None`` when there is no valid one."""
    if len(raw) < _HEADER.size or raw[:4] != MAGIC:
        return None
    _magic, fmt, length, image_length, image_crc = _HEADER.unpack_from(raw)
    end = _HEADER.size + length
    if fmt != FORMAT or not 0 < length <= MAX_VERSION_BYTES or len(raw) < end + _CRC.size:
        return None
    (stored_crc,) = _CRC.unpack_from(raw, end)
    if zlib.crc32(raw[:end]) != stored_crc:
        return None
    try:
        version = raw[_HEADER.size : end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return VersionRecord(version, image_length, image_crc)
