"""The writer's xz (``--compression xz``/``lzma``): one xz stream for compressible data, and
incompressible MiBs stored in streams of their own instead of compressed.

liblzma compresses random bytes (an image compressed already, encrypted data) at about
2 MiB/s for no gain at all; its LZMA2 format can hold such data uncompressed, but Python's
``lzma`` offers no way to ask for that. So a MiB whose start does not shrink (the test
deflate.py uses for gzip) ends the current stream and goes into an xz stream built here whose
LZMA2 chunks are the "uncompressed" kind: about as fast as a copy. xz streams one after the other
are one valid xz file (xz format 1.0.4, section 2: concatenated streams); liblzma, Go's reader
in ``mender-artifact`` and the Mender client, and ours read them as one. Firmware-like data
stays in one stream, compressed as ``xz -6`` with a 1 MiB dictionary would (its compressor
needs about 18 MiB, where the 8 MiB dictionary of ``xz -6`` needs 94: peak RSS under 64 MiB).
"""

from __future__ import annotations

import lzma
import struct
import zlib
from typing import IO

from orchestrator_core.artifact import deflate

CHUNK = 1 << 20  # input bytes judged at a time: compressed, or stored
XZ_FILTERS = ({"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20},)

_MAGIC = b"\xfd7zXZ\x00"
# stream flags of the stored streams: no check of their own. Every payload file is checked
# against the sha256 in the (signed) manifest by every reader anyway, and a CRC32 would cost
# more than the rest of storing and reading together (zlib's runs at about 1.8 GB/s)
_CHECK_NONE = b"\x00\x00"
_LZMA2_MAX_STORED = 1 << 16  # bytes in one uncompressed LZMA2 chunk
_LZMA2_STORED_RESET = b"\x01"  # uncompressed chunk that resets the dictionary: the first
_LZMA2_STORED = b"\x02"  # uncompressed chunk, dictionary kept
_LZMA2_END = b"\x00"
# Block header: its size / 4 - 1 (12 bytes), no flags (one filter, no size fields), the
# LZMA2 filter (id 0x21) with one property byte, 16 = a dictionary of 2^(16 / 2 + 12) =
# 1 MiB, padding to a multiple of 4; then its CRC32
_BLOCK_HEADER_FIELDS = b"\x02\x00\x21\x01\x10\x00\x00\x00"


def _crc32(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


def _varint(value: int) -> bytes:
    """xz's multibyte integer: 7 bits a byte, least significant first."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _pad4(size: int) -> bytes:
    return bytes(-size % 4)


STREAM_HEADER = _MAGIC + _CHECK_NONE + _crc32(_CHECK_NONE)
BLOCK_HEADER = _BLOCK_HEADER_FIELDS + _crc32(_BLOCK_HEADER_FIELDS)


def stored_stream(data: bytes | memoryview) -> bytes:
    """``data`` (not empty) as one xz stream of one block of uncompressed LZMA2 chunks."""
    data = memoryview(data)  # slices of it are not copies: the join below is the one copy
    pieces: list[bytes | memoryview] = [STREAM_HEADER, BLOCK_HEADER]
    lzma2_size = 1
    for offset in range(0, len(data), _LZMA2_MAX_STORED):
        piece = data[offset : offset + _LZMA2_MAX_STORED]
        control = _LZMA2_STORED if offset else _LZMA2_STORED_RESET
        pieces += [control, struct.pack(">H", len(piece) - 1), piece]
        lzma2_size += 3 + len(piece)
    pieces += [_LZMA2_END, _pad4(len(BLOCK_HEADER) + lzma2_size)]
    unpadded = len(BLOCK_HEADER) + lzma2_size
    index = b"\x00" + _varint(1) + _varint(unpadded) + _varint(len(data))
    index += _pad4(len(index))
    index += _crc32(index)
    backward = struct.pack("<I", len(index) // 4 - 1) + _CHECK_NONE
    pieces += [index, _crc32(backward), backward, b"YZ"]
    return b"".join(pieces)


class XzWriter:
    """xz into ``out``: compressible MiBs through one running compressor, the others stored.

    The output depends only on the input, so it is reproducible.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._buffer = bytearray()
        self._compressor: lzma.LZMACompressor | None = None
        self._streams = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            with memoryview(self._buffer) as view:
                self._chunk(view[:CHUNK])
            del self._buffer[:CHUNK]
        return len(data)

    def _chunk(self, chunk: memoryview) -> None:
        if deflate.incompressible(chunk):
            self._end_stream()
            self._out.write(stored_stream(chunk))
            self._streams += 1
            return
        compressor = self._compressor or self._start_stream()
        self._out.write(compressor.compress(chunk))

    def _start_stream(self) -> lzma.LZMACompressor:
        self._compressor = lzma.LZMACompressor(
            format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=XZ_FILTERS
        )
        self._streams += 1
        return self._compressor

    def _end_stream(self) -> None:
        if self._compressor is not None:
            self._out.write(self._compressor.flush())
            self._compressor = None

    def close(self) -> None:
        """Write what is left; an empty input still gets one (empty) stream."""
        if self._buffer:
            with memoryview(self._buffer) as view:
                self._chunk(view)
            self._buffer.clear()
        if not self._streams:
            self._start_stream()
        self._end_stream()
