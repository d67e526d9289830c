"""The driver API version, and the check that a driver was written for it.

``DRIVER_API_VERSION`` is MAJOR.MINOR: the minor number grows when ``driver_api`` gains
something (a driver written for 1.0 works with 1.3), the major number when something a driver
may rely on changes or goes. A driver declares the versions it works with as a range, the
attribute ``driver_api`` on its factory (e.g. ``driver_api = ">=1.0,<2"``); the loader refuses
it when this core's version is outside the range, naming both.

The range syntax is a small part of PEP 440's: comma-separated clauses ``OP VERSION`` with
OP one of ``>= > <= < == !=`` and VERSION dotted numbers; all clauses must hold. Missing
numbers count as 0 (``<2`` is ``<2.0``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from orchestrator_core.errors import ConfigError

DRIVER_API_VERSION = "1.2"
ATTRIBUTE = "driver_api"

_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")
_COMPARE: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class IncompatibleDriver(ConfigError):
    """A driver declares a range of driver API versions that excludes this core's."""


def _numbers(version: str, width: int) -> tuple[int, ...]:
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (width - len(parts))


def parse_range(spec: str) -> list[tuple[str, str]]:
    """The ``(operator, version)`` clauses of ``spec``; ``ValueError`` if it is not a range."""
    clauses = []
    for text in spec.split(","):
        match = _CLAUSE.fullmatch(text)
        if match is None:
            raise ValueError(f"{text.strip()!r} is not OP VERSION (OP one of >= > <= < == !=)")
        clauses.append((match[1], match[2]))
    return clauses


def in_range(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies every clause of ``spec``; ``ValueError`` for a bad spec."""
    clauses = parse_range(spec)
    width = max(len(v.split(".")) for v in [version, *(v for _, v in clauses)])
    have = _numbers(version, width)
    return all(_COMPARE[op](have, _numbers(v, width)) for op, v in clauses)


def check_driver(declared: object, driver: str, component: str | None = None) -> None:
    """Raise ``IncompatibleDriver`` unless ``declared`` (a driver's ``driver_api``, or None when
    it declares none) admits ``DRIVER_API_VERSION``. ``driver`` names it in the message, after
    the ``component`` (its label) being loaded, if any."""
    try:
        _check(declared, driver)
    except IncompatibleDriver as exc:
        if component is None:
            raise
        raise IncompatibleDriver(f"{component}: {exc.message}") from None


def _check(declared: object, driver: str) -> None:
    if declared is None:
        return  # written before versions existed, i.e. for 1.0
    if not isinstance(declared, str):
        raise IncompatibleDriver(
            f"driver {driver}: {ATTRIBUTE} is {declared!r}; expected a version range string "
            f"such as '>=1.0,<2'"
        )
    try:
        admitted = in_range(DRIVER_API_VERSION, declared)
    except ValueError as exc:
        raise IncompatibleDriver(
            f"driver {driver}: {ATTRIBUTE} {declared!r} is not a version range ({exc}); "
            f"expected e.g. '>=1.0,<2'"
        ) from None
    if not admitted:
        raise IncompatibleDriver(
            f"driver {driver} supports driver API {declared} but this mender-orchestrator "
            f"provides driver API {DRIVER_API_VERSION}: install a release of the driver made "
            f"for driver API {DRIVER_API_VERSION}, or a mender-orchestrator whose driver API "
            f"is in {declared}"
        )
