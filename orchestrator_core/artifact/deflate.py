"""The deflate (gzip) implementation the Artifact reader and writer use.

ISA-L, through the optional ``isal`` package (``pip install mender-orchestrator-py[fast]``),
when it is installed: it compresses incompressible data about 15 times as fast as the
standard library's zlib and compressible data faster and smaller, and inflates about twice
as fast. Without it, the standard library's ``zlib``: same format, same API, slower.

Both are imported on first use: most commands never touch a gzip section.
"""

from __future__ import annotations

import functools
import zlib
from types import ModuleType

GZIP_WBITS = 16 + zlib.MAX_WBITS
# ISA-L's level 2 is both faster and smaller than zlib's default level 6 on firmware-like
# data; its level 3 is slower than level 2 (measured with bench/artifact_write.py)
_LEVELS = {"isal": 2, "zlib": 6}
# the library may be forced to the fallback (for tests and benchmarks of the fallback)
FORCE_STDLIB = False


@functools.cache
def _isal() -> ModuleType | None:
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def backend() -> ModuleType:
    """The zlib-compatible module in use: ``isal.isal_zlib``, else ``zlib``."""
    fast = None if FORCE_STDLIB else _isal()
    return fast if fast is not None else zlib


def backend_name() -> str:
    return "zlib" if backend() is zlib else "isal"


def level() -> int:
    """The compression level of the writer: its library's best trade-off of speed and size."""
    return _LEVELS[backend_name()]


def error() -> type[Exception]:
    """What a decompressor raises for corrupt data (ISA-L has an error class of its own)."""
    error_class: type[Exception] = backend().error
    return error_class
