"""xz data sections read in small feeds.

The reader hands liblzma FEED bytes at a time from a larger input buffer (layers.py says why).
A section made of several xz streams one after the other (as ``xz`` reads them) must read
the same wherever a stream ends: inside a feed, on a feed's last byte, or with the next
stream's magic split between two feeds; what follows the last stream must be another stream.
"""

from __future__ import annotations

import lzma
import os

import pytest

from orchestrator_core.artifact.layers import FEED
from orchestrator_core.errors import ArtifactError

from . import artifact_builder as ab
from .support import read_payload

FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 0}]


def xz_stream_of_size(data: bytes, size: int) -> tuple[bytes, int]:
    """An xz stream exactly ``size`` bytes long holding the start of ``data`` (random bytes:
    LZMA2 stores them, so the stream grows with its input); it and how much of ``data``."""
    for length in range(size - 100, size):
        stream = lzma.compress(data[:length], lzma.FORMAT_XZ, lzma.CHECK_CRC64, filters=FILTERS)
        if len(stream) == size:
            return stream, length
    raise AssertionError(f"no xz stream of {size} bytes")


def with_data_section(files: dict[str, bytes], section: bytes) -> bytes:
    return ab.build(files, compression=".xz", data=b"").replace(
        "data/0000.tar.xz", section
    ).assemble()


# a stream's length is a multiple of 4, so the next magic (6 bytes) can straddle two feeds
# only as 4 + 2 (FEED - 4); FEED: the magic is the next feed's start
@pytest.mark.parametrize("first_stream", [FEED - 4, FEED, FEED + 4, 3 * FEED - 4])
@pytest.mark.parametrize("buffer_size", [1 << 20, 4093])
def test_streams_may_end_anywhere_in_a_feed(first_stream: int, buffer_size: int) -> None:
    files = {"firmware.bin": os.urandom(4 * FEED), "notes.txt": b"release notes\n" * 100}
    data_tar = ab.tar(files.items())
    head, taken = xz_stream_of_size(data_tar, first_stream)
    rest = data_tar[taken:]
    section = head + lzma.compress(rest[:1000], lzma.FORMAT_XZ) + lzma.compress(rest[1000:])
    assert read_payload(with_data_section(files, section), buffer_size) == files


@pytest.mark.parametrize(
    "after",
    [b"\x00\x00\x00\x00", b"PK", b"\xfd7zXZ", b"not xz at all" * 10_000],
    ids=["stream-padding", "two-bytes", "part-of-a-magic", "120-KiB"],
)
def test_what_follows_the_last_stream_must_be_another_stream(after: bytes) -> None:
    files = {"firmware.bin": os.urandom(FEED)}
    data_tar = ab.tar(files.items())
    head, taken = xz_stream_of_size(data_tar, FEED - 4)
    section = head + lzma.compress(data_tar[taken:]) + after
    with pytest.raises(ArtifactError, match=r"data/0000\.tar\.xz has data after the end of its "
                       r"xz stream"):
        read_payload(with_data_section(files, section), 1 << 20)


def test_a_cut_stream_is_reported_truncated() -> None:
    files = {"firmware.bin": os.urandom(3 * FEED)}
    whole = lzma.compress(ab.tar(files.items()), lzma.FORMAT_XZ, filters=FILTERS)
    with pytest.raises(ArtifactError, match=r"data/0000\.tar\.xz is truncated: its xz stream "
                       r"does not end properly"):
        read_payload(with_data_section(files, whole[: 2 * FEED + 17]), 1 << 20)
