"""The image check the driver makes before an upload: what MCUboot would refuse is refused
with a message in the terms of the image format."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mender_orchestrator_mcuboot.image import BadImage, parse
from mender_orchestrator_mcuboot.simulator import make_image

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
IMAGE = make_image(b"\x5a" * 3000, "1.2.3.4", KEY)


def test_a_signed_image_gives_its_version_and_hash() -> None:
    info = parse(IMAGE)

    assert info.version == "1.2.3.4"
    assert info.sha256 == hashlib.sha256(IMAGE[: 0x200 + 3000]).digest()
    assert info.size == len(IMAGE)
    assert parse(make_image(b"x" * 100, "2.0.0", KEY)).version == "2.0.0"


def flags(value: int) -> bytes:
    return IMAGE[:16] + struct.pack("<I", value) + IMAGE[20:]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (IMAGE[:20], "20 bytes is shorter than an MCUboot image header (32 bytes)"),
        (b"\x00\x20\x00\x20" + IMAGE[4:],
         "no MCUboot image header: magic 0x20002000, expected 0x96f3b83d"),
        (IMAGE[:3000], "header says 512 + 3000 bytes of image and 0 of protected TLVs, but the "
         "file has 3000 bytes in all: truncated"),
        (IMAGE[:-1], "the TLV area ends at 3656, but the file has 3655 bytes"),
        (IMAGE[:600] + b"\xa5" + IMAGE[601:],
         "does not match the image"),
        (flags(0x10), "the header flags 0x00000010 mark the image non-bootable"),
        (IMAGE[: 0x200 + 3000] + b"\x08\x69" + IMAGE[0x200 + 3002 :],
         "no TLV area after the image (offset 3512): magic 0x6908, expected 0x6907"),
    ],
)  # fmt: skip
def test_what_mcuboot_would_refuse_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(BadImage) as raised:
        parse(data)

    assert problem in str(raised.value)
