"""ECU images as they are built: Intel HEX, Motorola S-record, or raw binary at an address.

An Artifact may carry several payload files; together they describe the memory to program.
``load_image`` merges them (with ``bincopy``) into contiguous segments: each segment is erased,
downloaded and checked on its own, and the gaps between segments are never transferred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import bincopy  # type: ignore[import-untyped]

# the first bytes of the text formats bincopy reads: an Intel HEX record starts with ':', an
# S-record with 'S' and its type digit; anything else is taken as a raw binary image
_TEXT_STARTS = (b":", *(b"S" + bytes((digit,)) for digit in b"0123456789"))


class ImageError(ValueError):
    """A payload file that cannot be turned into memory segments; the message names it."""


@dataclass(frozen=True)
class Segment:
    """One contiguous range of memory to program."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)

    def describe(self) -> str:
        return f"{len(self.data)} bytes at {self.address:#x}"


def file_format(path: Path) -> str:
    """``ihex``, ``srec`` or ``binary``, from the file's first bytes."""
    with path.open("rb") as stream:
        head = stream.read(2)
    if head[:1] == b":":
        return "ihex"
    if head in _TEXT_STARTS:
        return "srec"
    return "binary"


def load_image(
    files: Sequence[Path],
    *,
    base_address: int,
    load_addresses: Mapping[str, int],
) -> list[Segment]:
    """The segments the payload ``files`` fill, in address order. A raw binary goes to its
    entry in ``load_addresses`` (by file name), else to ``base_address``; two files that
    claim the same bytes are refused."""
    memory = bincopy.BinFile()
    raw_at_base: list[str] = []
    for path in files:
        kind = file_format(path)
        try:
            if kind == "binary":
                address = load_addresses.get(path.name)
                if address is None:
                    raw_at_base.append(path.name)
                    address = base_address
                if len(raw_at_base) > 1:
                    raise ImageError(
                        f"raw binary payload files {raw_at_base} would all go to "
                        f"{base_address:#x}: give each its address (profile load_addresses)"
                    )
                memory.add_binary(path.read_bytes(), address=address)
            elif kind == "ihex":
                memory.add_ihex(path.read_text(encoding="ascii"))
            else:
                memory.add_srec(path.read_text(encoding="ascii"))
        except ImageError:
            raise
        except bincopy.AddDataError as exc:
            raise ImageError(f"payload file {path.name}: overlaps another file: {exc}") from None
        except (bincopy.Error, UnicodeDecodeError, ValueError) as exc:
            raise ImageError(f"payload file {path.name}: not a valid {kind} image: {exc}") from None
    segments = [Segment(s.minimum_address, bytes(s.data)) for s in memory.segments]
    if not segments:
        raise ImageError(f"the payload files {[p.name for p in files]} hold no data")
    return segments
