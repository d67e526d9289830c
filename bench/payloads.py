"""Payloads the benchmarks share: random bytes, and firmware-like bytes.

Firmware-like is real machine code: the shared libraries under /usr/lib of this machine,
concatenated in a fixed order (and repeated if they are fewer than the size asked for).
gzip -6 shrinks it to about 40%, as it does a firmware image; a synthetic pattern is either
far more compressible or compressible in ways real code is not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

LIBRARIES = Path("/usr/lib")
MIB = 1 << 20


def _machine_code() -> Iterator[bytes]:
    """The libraries' bytes, a MiB at a time: a benchmark's children inherit its peak RSS
    (Linux keeps it across exec), so it must not hold a whole library in memory."""
    files = sorted(
        path
        for path in LIBRARIES.rglob("*.so*")
        if path.is_file() and not path.is_symlink() and path.stat().st_size >= 64 << 10
    )
    if not files:
        raise SystemExit(f"no shared libraries under {LIBRARIES} to build a firmware-like payload")
    while True:
        for path in files:
            try:
                with path.open("rb") as library:
                    while piece := library.read(MIB):
                        yield piece
            except OSError:
                continue


def write_firmware_like(path: Path, size: int) -> None:
    """``size`` bytes of machine code into ``path``."""
    with path.open("wb") as out:
        left = size
        for data in _machine_code():
            piece = data[:left]
            out.write(piece)
            left -= len(piece)
            if not left:
                return


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            out.write(piece)
            left -= len(piece)
