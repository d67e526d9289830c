"""The MCUboot image format, as far as the driver checks it before an upload.

An image is a 32-byte header (``ih_magic`` 0x96f3b83d, header size, protected-TLV size, body
size, flags, version), padding up to the header size, the body, then the TLV areas: an
optional protected one (info magic 0x6908) and the unprotected one (0x6907) that holds the
SHA-256 of header + body + protected TLVs (type 0x10) and the signature. The SHA-256 TLV is
also the hash the device's image list reports, so it is what the driver verifies after a
reset.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

IMAGE_MAGIC = 0x96F3B83D
HEADER = struct.Struct("<IIHHII BBHI I")
TLV_INFO = struct.Struct("<HH")
TLV = struct.Struct("<HH")
TLV_INFO_MAGIC = 0x6907
TLV_PROTECTED_INFO_MAGIC = 0x6908
TLV_SHA256 = 0x10
# IMAGE_F_NON_BOOTABLE: an image MCUboot would never start
FLAG_NON_BOOTABLE = 0x0000_0010


class BadImage(ValueError):
    """The payload is not an MCUboot image the device could boot; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What the driver needs of an image: what the device will report once it runs it."""

    version: str
    sha256: bytes
    size: int

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()


def version_text(major: int, minor: int, revision: int, build: int) -> str:
    """The version as Zephyr's image list prints it (``1.2.3``, or ``1.2.3.4`` with a build
    number)."""
    text = f"{major}.{minor}.{revision}"
    return f"{text}.{build}" if build else text


def parse(data: bytes) -> ImageInfo:
    """The image's version and hash, after checking its header and TLVs; ``BadImage`` says
    what is wrong in terms of the MCUboot image format."""
    if len(data) < HEADER.size:
        raise BadImage(f"{len(data)} bytes is shorter than an MCUboot image header (32 bytes)")
    magic, _load, hdr_size, protect_size, img_size, flags, major, minor, rev, build, _pad = (
        HEADER.unpack_from(data)
    )
    if magic != IMAGE_MAGIC:
        raise BadImage(
            f"no MCUboot image header: magic 0x{magic:08x}, expected 0x{IMAGE_MAGIC:08x} "
            f"(sign the binary with imgtool)"
        )
    if hdr_size < HEADER.size:
        raise BadImage(f"header size {hdr_size} is below the 32 bytes of the header itself")
    if flags & FLAG_NON_BOOTABLE:
        raise BadImage(f"the header flags 0x{flags:08x} mark the image non-bootable")
    end = hdr_size + img_size
    if end + protect_size + TLV_INFO.size > len(data):
        raise BadImage(
            f"header says {hdr_size} + {img_size} bytes of image and {protect_size} of protected "
            f"TLVs, but the file has {len(data)} bytes in all: truncated"
        )
    offset = end
    if protect_size:
        magic, total = TLV_INFO.unpack_from(data, offset)
        if magic != TLV_PROTECTED_INFO_MAGIC or total != protect_size:
            raise BadImage(
                f"protected TLV area at {offset}: info 0x{magic:04x}/{total} bytes, expected "
                f"0x{TLV_PROTECTED_INFO_MAGIC:04x}/{protect_size} bytes"
            )
        offset += protect_size
    magic, total = TLV_INFO.unpack_from(data, offset)
    if magic != TLV_INFO_MAGIC:
        raise BadImage(
            f"no TLV area after the image (offset {offset}): magic 0x{magic:04x}, expected "
            f"0x{TLV_INFO_MAGIC:04x}"
        )
    if offset + total != len(data):
        raise BadImage(
            f"the TLV area ends at {offset + total}, but the file has {len(data)} bytes"
        )
    digest = _tlv(data, offset + TLV_INFO.size, offset + total, TLV_SHA256)
    if digest is None:
        raise BadImage("the TLV area has no SHA-256 (type 0x10): MCUboot would not boot it")
    computed = hashlib.sha256(data[: end + protect_size]).digest()
    if digest != computed:
        raise BadImage(
            f"the SHA-256 TLV {digest.hex()[:16]}… does not match the image "
            f"({computed.hex()[:16]}…): corrupted or modified after signing"
        )
    return ImageInfo(version_text(major, minor, rev, build), digest, len(data))


def _tlv(data: bytes, start: int, stop: int, wanted: int) -> bytes | None:
    offset = start
    while offset + TLV.size <= stop:
        kind, length = TLV.unpack_from(data, offset)
        value_at = offset + TLV.size
        if value_at + length > stop:
            raise BadImage(f"TLV 0x{kind:02x} at {offset} runs past the end of the TLV area")
        if kind == wanted:
            return data[value_at : value_at + length]
        offset = value_at + length
    return None
