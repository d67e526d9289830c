"""The byte-stream layers the reader stacks: the source, then the decompressors.

Every layer is a read-only ``io.RawIOBase`` whose ``readinto`` fills the caller's buffer,
so uncompressed payload bytes travel from the source into the consumer's buffer without a
copy, and every layer reads at most one bounded chunk ahead: memory does not grow with the
size of the Artifact.

gzip and xz are driven through decompressor objects (``zlib`` or ISA-L's, see deflate.py;
``lzma``) rather than ``gzip.GzipFile``/``lzma.LZMAFile``: those pull 8 KiB at a time from
the layer below (each pull going through the tar layer: 128 times as many calls as with
1 MiB chunks),
``LZMAFile`` takes no memory limit (a hostile xz header may ask for gigabytes), and
both report a cut stream as a bare ``EOFError``; here each says which section and whether it
was empty or cut short. zstd's own ``stream_reader`` has none of these problems and is used.

Errors are reported through a ``Fail`` callable supplied by the reader, which turns a
problem description into an ``ArtifactError`` naming the Artifact.
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, BinaryIO, NoReturn, Protocol, cast

from orchestrator_core.artifact import deflate
from orchestrator_core.errors import ArtifactError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Fail = Callable[[str], NoReturn]

CHUNK = 1 << 20
FEED = 64 << 10  # compressed bytes given to a decompressor at a time (see _GzipLayer, _XzLayer)
DRAIN_CHUNK = 1 << 16
# Beyond these a compressed section is refused rather than given the memory it asks for:
# xz -9 needs 64 MiB, zstd's default levels 8 MiB and its --long mode 128 MiB.
XZ_MEMORY_LIMIT = 256 << 20
# Output asked of liblzma per call. Each call returns a new bytes object: at 1 MiB, the heap
# went back to the kernel after most calls and was faulted in again (51,000 page faults instead
# of 20,000 for a 64 MiB payload from mender-artifact, 16% of `artifact inspect`'s time); under
# glibc's 128 KiB mmap threshold the memory is reused. gzip is left as it is: there, smaller
# pieces saved the faults but cost more in calls.
XZ_PIECE = 64 << 10
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAX_WINDOW = 1 << 27

COMPRESSION_SUFFIXES = ("", ".gz", ".xz", ".zst")  # of header.tar... and data/0000.tar...


class Readable(Protocol):
    """What a layer reads from: another layer, or an ``io.BytesIO`` holding a section."""

    def read(self, size: int = ..., /) -> bytes | None: ...

    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


def as_bytes_view(buffer: WriteableBuffer) -> memoryview:
    view = memoryview(buffer)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def readinto_from(stream: BinaryIO, view: memoryview) -> int:
    """``stream.readinto`` where it has one (files, sockets), else ``read`` and a copy."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        count = readinto(view)
        if count is None:
            raise OSError("the stream is non-blocking and had no data; a blocking one is needed")
        return int(count)
    data = stream.read(len(view))
    view[: len(data)] = data
    return len(data)


class Layer(io.RawIOBase):
    """A readable stream layer; ``readinto`` may return fewer bytes than asked, 0 at the end."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        raise NotImplementedError


class SourceLayer(Layer):
    """The Artifact's bytes as they come from the file, pipe or download.

    ``tap``, when set, sees every chunk read (a view valid only during the call): it is how
    the whole ``.mender`` is handed on verbatim while the layers above verify it.
    """

    def __init__(self, stream: BinaryIO, fail: Fail) -> None:
        super().__init__()
        self._stream = stream
        self._fail = fail
        self.position = 0
        self.tap: Callable[[memoryview], None] | None = None
        self.failed = False  # the stream itself failed (a download), not what it holds

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = as_bytes_view(buffer)
        try:
            count = readinto_from(self._stream, view)
        except OSError as exc:
            self.failed = True
            self._fail(f"reading failed after {self.position} bytes: {exc}")
        except ArtifactError:
            self.failed = True
            raise
        if count and self.tap is not None:
            self.tap(view[:count])
        self.position += count
        return count


def read_exactly(layer: Readable, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only where the layer ends."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = layer.readinto(view[filled:])
        if not count:  # 0, or None from a non-blocking stream: either way nothing more now
            break
        filled += count
    del view
    if filled < size:
        del buffer[filled:]
    return bytes(buffer)


def drain(layer: Readable, limit: int) -> int | None:
    """Read ``layer`` to its end; the byte count, or ``None`` if more than ``limit`` came."""
    # what is drained is small (padding, a trailer): a big zeroed buffer would cost more
    scratch = bytearray(min(limit + 1, DRAIN_CHUNK))
    total = 0
    while count := layer.readinto(scratch):
        total += count
        if total > limit:
            return None
    return total


class _InputLayer(Layer):
    """A decompressor's side of the compressed bytes: read into one reused buffer."""

    _piece_size = CHUNK  # at most this many bytes come from one call of ``_piece``

    def __init__(self, inner: Readable, input_size: int = CHUNK) -> None:
        super().__init__()
        self._inner = inner
        self._input = bytearray(input_size)
        self._rest = memoryview(b"")  # the part of the input buffer not yet fed

    def _feed(self) -> memoryview:
        """The next compressed bytes, at most ``FEED`` of them (a view valid until the input
        buffer is read into again); empty at the end."""
        if not self._rest:
            count = self._inner.readinto(self._input) or 0
            self._rest = memoryview(self._input)[:count]
        feed, self._rest = self._rest[:FEED], self._rest[FEED:]
        return feed

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        # One call fills the buffer from several pieces, so the layers above (and the hash
        # thread) take about as many calls per MiB as without compression; the source is read
        # again only while nothing has been filled.
        view = as_bytes_view(buffer)
        filled = 0
        while filled < len(view):
            if filled and not self._in_hand():
                break
            count = self._piece(view[filled : filled + self._piece_size])
            if not count:
                break
            filled += count
        return filled

    def _in_hand(self) -> bool:
        """Whether more output can come without reading the source."""
        raise NotImplementedError

    def _piece(self, view: memoryview) -> int:
        """Some bytes into ``view`` (not empty); 0 at the end of the last stream."""
        raise NotImplementedError


class _GzipLayer(_InputLayer):
    """gzip (several members one after the other, as Go's reader accepts).

    The input buffer is handed to the decompressor ``FEED`` bytes at a time: what it has not
    consumed when the caller's buffer is full, it copies (``unconsumed_tail``), so a whole
    chunk at once would be copied again on every call.
    """

    def __init__(self, inner: Readable, what: str, fail: Fail, input_size: int = CHUNK) -> None:
        super().__init__(inner, input_size)
        self._what, self._fail = what, fail
        self._zlib = deflate.backend()
        self._error = deflate.error()
        self._decompressor = self._zlib.decompressobj(deflate.GZIP_WBITS)
        self._pending: bytes | memoryview = b""  # fed, not yet consumed
        self._started = False

    def _next_member(self) -> bool:
        """Start the member that follows the one just ended; ``False`` at the end of input."""
        rest = bytes(self._decompressor.unused_data)
        while len(rest) < 2 and (more := self._feed()):
            rest += more
        if not rest:
            return False
        if not rest.startswith(b"\x1f\x8b"):
            self._fail(f"{self._what} has data after the end of its gzip stream")
        self._decompressor = self._zlib.decompressobj(deflate.GZIP_WBITS)
        self._pending = rest
        return True

    def _in_hand(self) -> bool:
        return bool(self._pending or self._rest or self._decompressor.unused_data)

    def _piece(self, view: memoryview) -> int:
        while True:
            if self._decompressor.eof and not self._next_member():
                return 0
            if not self._pending:
                self._pending = self._feed()
                if not self._pending:
                    what = "is truncated" if self._started else "is empty"
                    self._fail(f"{self._what} {what}: its gzip stream does not end properly")
            self._started = True
            try:
                out = self._decompressor.decompress(self._pending, len(view))
            except self._error as exc:
                self._fail(f"{self._what} is not valid gzip data ({exc})")
            self._pending = self._decompressor.unconsumed_tail
            if out:
                view[: len(out)] = out
                return len(out)


class _XzLayer(_InputLayer):
    """xz (what ``mender-artifact --compression lzma`` writes), several streams one after the
    other as ``xz`` itself reads them.

    Like gzip, the input is handed over ``FEED`` bytes at a time: what liblzma has not
    consumed when an output piece is full, ``LZMADecompressor`` copies into a buffer of its
    own, and with a whole chunk that was most of every chunk, in a buffer freed and allocated
    again above glibc's mmap threshold (a 1 GiB random xz verify: 1.12 s and 118,000 page
    faults, now 0.68 to 0.81 s; docs/artifact.md).
    """

    def __init__(self, inner: Readable, what: str, fail: Fail, input_size: int = CHUNK) -> None:
        super().__init__(inner, input_size)
        self._what, self._fail = what, fail
        self._decompressor = self._new()
        self._started = False

    @staticmethod
    def _new() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)

    _piece_size = XZ_PIECE

    def _in_hand(self) -> bool:
        return bool(self._rest) or not (self._decompressor.needs_input or self._decompressor.eof)

    def _piece(self, view: memoryview) -> int:
        while True:
            data: bytes | memoryview = b""
            if self._decompressor.eof:
                data = self._next_stream()
                if not data:
                    return 0
            elif self._decompressor.needs_input:
                data = self._feed()
                if not data:
                    what = "is truncated" if self._started else "is empty"
                    self._fail(f"{self._what} {what}: its xz stream does not end properly")
            self._started = True
            try:
                out = self._decompressor.decompress(data, len(view))
            except lzma.LZMAError as exc:
                self._fail(f"{self._what} is not valid xz data, or needs too much memory ({exc})")
            if out:
                view[: len(out)] = out
                return len(out)

    def _next_stream(self) -> bytes:
        """The first bytes of the stream that follows the one just ended, with a new
        decompressor for it; empty at the end of the input."""
        rest = self._decompressor.unused_data
        while len(rest) < len(XZ_MAGIC) and (more := self._feed()):
            rest += more
        if rest and not rest.startswith(XZ_MAGIC):
            self._fail(f"{self._what} has data after the end of its xz stream")
        self._decompressor = self._new()
        return rest


class _ZstdLayer(Layer):
    """zstd (newer writers). A stream cut short just ends early here; the tar structure
    on top (sizes, end-of-archive marker) is what reports the truncation."""

    def __init__(self, inner: Readable, what: str, fail: Fail) -> None:
        super().__init__()
        self._what, self._fail = what, fail
        # imported here: few Artifacts have a zstd section, and importing it is ~4 ms of
        # every install's fixed cost
        import zstandard

        self._zstd_error: type[Exception] = zstandard.ZstdError
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._reader = decompressor.stream_reader(
            cast("IO[bytes]", inner), read_size=CHUNK, read_across_frames=True, closefd=False
        )

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        try:
            return int(self._reader.readinto(buffer))
        except self._zstd_error as exc:
            self._fail(f"{self._what} is not valid zstd data, or needs too much memory ({exc})")


def decompressing(
    inner: Readable, suffix: str, what: str, fail: Fail, input_size: int = CHUNK
) -> Readable:
    """``inner`` seen through the decompressor named by the file-name ``suffix``;
    ``input_size`` bounds the compressed bytes taken at a time (a header is small)."""
    if suffix == "":
        return inner
    if suffix == ".gz":
        return _GzipLayer(inner, what, fail, input_size)
    if suffix == ".xz":
        return _XzLayer(inner, what, fail, input_size)
    if suffix == ".zst":
        return _ZstdLayer(inner, what, fail)
    raise ValueError(f"unknown compression suffix {suffix!r}")
