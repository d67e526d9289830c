"""The ``HttpTimeouts`` option: how long and how slowly an HTTP(S) source may answer.

Without these bounds a server sending one byte every half second held ``plan`` and
``install`` (and the lock) for ever: a socket timeout only bounds each wait for a byte.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

OPTION = "HttpTimeouts"
FIELDS = ("ConnectSeconds", "StallSeconds", "MinBytesPerSecond")
MAX_SECONDS = 3600.0


class HttpLimits(NamedTuple):
    # connecting (TCP and TLS) to a server
    connect_seconds: float = 15.0
    # the longest wait for any byte, and the window the minimum rate is averaged over; the
    # answer's headers must be complete within connect_seconds + stall_seconds
    stall_seconds: float = 60.0
    # 0: no minimum; the time the reader spends elsewhere (the Interface writing) not counted
    min_bytes_per_second: int = 1024


def _seconds(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_SECONDS
    ):
        raise ValueError(
            f"{name}: expected a number of seconds > 0 and <= {MAX_SECONDS:g}, "
            f"got {json.dumps(value)[:40]}"
        )
    return float(value)


def parse_http_limits(_: object, value: Any) -> HttpLimits:
    """The option's value (a JSON object), checked; raises ``ValueError`` saying why not."""
    if not isinstance(value, dict):
        raise ValueError(
            f"expected an object with {', '.join(FIELDS)}, got {json.dumps(value)[:40]}"
        )
    # a field it does not know is ignored here: the config's unknown-field check warns of it
    default = HttpLimits()
    rate = value.get("MinBytesPerSecond", default.min_bytes_per_second)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= 1 << 40:
        raise ValueError(
            f"MinBytesPerSecond: expected a whole number >= 0, got {json.dumps(rate)[:40]}"
        )
    return HttpLimits(
        connect_seconds=_seconds(
            "ConnectSeconds", value.get("ConnectSeconds", default.connect_seconds)
        ),
        stall_seconds=_seconds("StallSeconds", value.get("StallSeconds", default.stall_seconds)),
        min_bytes_per_second=rate,
    )
