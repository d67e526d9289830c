"""Tar archives read front to back from a stream that cannot seek.

The stdlib parses each 512-byte header (``tarfile.TarInfo.frombuf``: checksum, ustar prefix,
base-256 sizes); the walk from header to header is here, not ``tarfile.open(mode="r|")``,
because an Artifact is hostile input and ``tarfile``'s stream mode is lenient where we must
not be: after the first member it takes a damaged or cut-off header, or a missing
end-of-archive marker, for a clean end of the archive (so a cut download could pass for a
shorter one), and it reads pax and GNU long-name headers into memory whatever their size.
Here extended headers are read only up to a small bound, every member that is not a regular
file is refused by name, a stream that ends early is reported as truncated (naming the member
and how far it got), and a member's bytes are read straight into the caller's buffer, so the
decompressor and hash layers above copy nothing.
"""

from __future__ import annotations

import tarfile
from typing import TYPE_CHECKING, NamedTuple

from orchestrator_core.artifact.layers import Fail, Layer, Readable, as_bytes_view, read_exactly

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_EXTENDED_HEADER = 64 << 10  # pax records and GNU long names: paths, never data
MAX_DIGITS = 20  # of a size or length field: 10**20 bytes is beyond any Artifact

_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_KINDS = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "named pipe",
    tarfile.DIRTYPE: "directory",
    tarfile.GNUTYPE_SPARSE: "sparse file",
}


def ascii_number(text: str) -> int | None:
    """``text`` as a whole number if it is 1 to MAX_DIGITS ASCII digits, else ``None``.

    ``str.isdigit`` and ``int`` also take other scripts' digits ('²', '٣'), and ``int`` refuses
    very long numbers with a ValueError; a size field of hostile input is neither.
    """
    if not 0 < len(text) <= MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


class TarMember(NamedTuple):
    name: str
    size: int


class TarReader:
    """Members of one tar archive; ``what`` names the archive in messages."""

    def __init__(self, stream: Readable, what: str, fail: Fail) -> None:
        self._stream = stream
        self.what = what
        self.fail = fail
        self._member: TarMember | None = None
        self._remaining = 0  # unread bytes of the current member
        self._padding = 0  # zero bytes that round the current member up to a block
        self._last_name: str | None = None

    def next(self) -> TarMember | None:
        """The next member (the previous one's unread bytes are skipped); ``None`` at the end."""
        self._skip_rest()
        pax: dict[str, str] = {}
        long_name: str | None = None
        while True:
            block = read_exactly(self._stream, BLOCK)
            if len(block) < BLOCK:
                after = f" after {self._last_name!r}" if self._last_name else ""
                if block:
                    self.fail(f"truncated: {self.what} ends inside a tar header{after}")
                self.fail(
                    f"truncated: {self.what} ends{after or ' at its start'} without the tar "
                    f"end-of-archive marker"
                )
            if block == ZERO_BLOCK:
                self._member = None
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                after = f" after {self._last_name!r}" if self._last_name else ""
                self.fail(f"{self.what} has a damaged tar header{after} ({exc})")
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME):
                data = self._extended_header(info)
                if info.type == tarfile.XHDTYPE:
                    pax.update(self._pax_records(data))
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            name = pax.get("path") or long_name or info.name
            size = info.size
            if "size" in pax:
                pax_size = ascii_number(pax["size"])
                if pax_size is None:
                    self.fail(
                        f"{self.what}: member {name[:200]!r} has a bad pax size "
                        f"{pax['size'][:40]!r}; expected at most {MAX_DIGITS} ASCII digits"
                    )
                size = pax_size
            if info.type not in _REGULAR:
                kind = _KINDS.get(info.type, f"member of tar type {info.type!r}")
                self.fail(
                    f"{self.what}: member {name!r} is a {kind}; only regular files are allowed"
                )
            self._member = TarMember(name, size)
            self._last_name = name
            self._remaining = size
            self._padding = -size % BLOCK
            return self._member

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Bytes of the current member; 0 at its end. A stream ending early is an error."""
        if self._remaining == 0:
            return 0
        view = as_bytes_view(buffer)
        if len(view) > self._remaining:
            view = view[: self._remaining]
        count = self._stream.readinto(view)
        if not count:
            assert self._member is not None
            got = self._member.size - self._remaining
            self.fail(
                f"truncated: {self.what} ends inside {self._member.name!r} after {got} of "
                f"{self._member.size} bytes"
            )
        self._remaining -= count
        return count

    def member_stream(self) -> Layer:
        """The current member as a stream of its own, for a decompressor to read."""
        return _MemberLayer(self)

    def _skip_rest(self) -> None:
        scratch = bytearray(min(self._remaining, 1 << 20) or 1)
        while self._remaining:
            self.readinto(scratch)
        if self._padding:
            if len(read_exactly(self._stream, self._padding)) < self._padding:
                self.fail(f"truncated: {self.what} ends inside the padding of a member")
            self._padding = 0

    def _extended_header(self, info: tarfile.TarInfo) -> bytes:
        if info.size > MAX_EXTENDED_HEADER:
            self.fail(
                f"{self.what} has an extended tar header of {info.size} bytes; at most "
                f"{MAX_EXTENDED_HEADER} are accepted"
            )
        padded = info.size + (-info.size % BLOCK)
        data = read_exactly(self._stream, padded)
        if len(data) < padded:
            self.fail(f"truncated: {self.what} ends inside an extended tar header")
        return data[: info.size]

    def _pax_records(self, data: bytes) -> dict[str, str]:
        # each record is "<length> <key>=<value>\n", the length counting the whole record
        records: dict[str, str] = {}
        position = 0
        while position < len(data):
            space = data.find(b" ", position)
            length = ascii_number(data[position:space].decode("ascii", "replace"))
            if space < 0 or not length:
                self.fail(f"{self.what} has a malformed pax extended header")
            end = position + length
            record = data[space + 1 : end]
            if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
                self.fail(f"{self.what} has a malformed pax extended header")
            key, value = record[:-1].split(b"=", 1)
            records[key.decode("utf-8", "surrogateescape")] = value.decode(
                "utf-8", "surrogateescape"
            )
            position = end
        return records


class _MemberLayer(Layer):
    def __init__(self, tar: TarReader) -> None:
        super().__init__()
        self._tar = tar

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        return self._tar.readinto(buffer)
