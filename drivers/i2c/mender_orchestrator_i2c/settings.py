"""The driver's settings, parsed from a Component's ``interface_args``.

Every argument is ``--name=value`` (or ``--name value``). Numbers take ``0x`` hexadecimal;
sizes also take a ``K`` or ``M`` suffix (KiB, MiB). Anything wrong is a ``ConfigError`` naming
the Component, the argument and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError

T = TypeVar("T")

ARGUMENTS = {
    "bus": "N for /dev/i2c-N, or sim:/absolute/path for the simulator (required)",
    "address": "the bootloader's 7-bit I2C address, e.g. 0x48 (required)",
    "flash-base": "first address of the flash area the driver manages (default 0x08000000)",
    "flash-size": "size of that area, a multiple of the page size (default 64K)",
    "page-size": "flash page (erase unit) size, a power of two (default 2K)",
    "version-record": "page-aligned address of the version record (default: the area's last page)",
    "uid-address": "address of the MCU's unique ID, read into the Identity (default: none)",
    "uid-length": "bytes of unique ID to read (default 12)",
    "busy-timeout": "seconds a flash operation may stay BUSY (default 10)",
    "connect-timeout": "seconds to wait for the bootloader to answer (default 5)",
    "write-retries": "times a page that reads back wrong is erased and written again (default 1)",
    "no-stretch": "auto, yes or no: use the no-stretch commands (default auto: when listed)",
}


@dataclass(frozen=True)
class Settings:
    bus: str
    address: int
    flash_base: int = 0x0800_0000
    flash_size: int = 64 * 1024
    page_size: int = 2048
    version_record: int = 0  # set from the others when not given
    uid_address: int | None = None
    uid_length: int = 12
    busy_timeout: float = 10.0
    connect_timeout: float = 5.0
    write_retries: int = 1
    no_stretch: str = "auto"

    @property
    def image_limit(self) -> int:
        """Bytes available to the image: from the flash base up to the version record."""
        return self.version_record - self.flash_base

    @property
    def pages(self) -> range:
        """Page numbers (as the Erase command counts them, from the flash base) of the area."""
        return range(self.flash_size // self.page_size)

    @property
    def where(self) -> str:
        return f"STM32 bootloader at 0x{self.address:02x} on I2C bus {self.bus}"


def _int(text: str) -> int:
    return int(text, 0)


def parse_size(text: str) -> int:
    """``2048``, ``0x800``, ``2K`` or ``1M``; ``ValueError`` otherwise."""
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text, 0) * scale


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _split(component: Component) -> dict[str, str]:
    """``--name=value`` / ``--name value`` pairs, with errors naming the offending argument."""
    values: dict[str, str] = {}
    args = list(component.interface_args)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise _error(component, f"argument {arg!r} is not of the form --name=value")
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise _error(component, f"--{name} needs a value (--{name}=VALUE)")
            value = args[i + 1]
            i += 1
        if name not in ARGUMENTS:
            known = ", ".join(f"--{n}" for n in ARGUMENTS)
            raise _error(component, f"unknown argument --{name}; the i2c driver takes {known}")
        if name in values:
            raise _error(component, f"--{name} is given twice")
        values[name] = value
        i += 1
    return values


def _error(component: Component, problem: str) -> ConfigError:
    return ConfigError(f"{component.label}: interface_args: {problem}")


def parse(component: Component) -> Settings:
    values = _split(component)

    def get(name: str, convert: Callable[[str], T], default: T | None = None) -> T:
        if name not in values:
            if default is None:
                raise _error(component, f"--{name} is missing: {ARGUMENTS[name]}")
            return default
        try:
            return convert(values[name])
        except ValueError:
            raise _error(
                component, f"--{name}={values[name]!r} is not valid: expected {ARGUMENTS[name]}"
            ) from None

    def bad(name: str, why: str) -> ConfigError:
        return _error(component, f"--{name}={values.get(name, '(default)')}: {why}")

    bus = get("bus", str)
    if bus.startswith("sim:"):
        if not Path(bus[4:]).is_absolute():
            raise bad("bus", "the simulator's path must be absolute (sim:/path/to/flash.bin)")
    elif not (bus.isascii() and bus.isdigit()):
        raise bad("bus", f"expected {ARGUMENTS['bus']}")
    address = get("address", _int)
    if not 0x08 <= address <= 0x77:
        raise bad("address", "a 7-bit I2C address is between 0x08 and 0x77")
    base = get("flash-base", _int, Settings.flash_base)
    size = get("flash-size", parse_size, Settings.flash_size)
    page = get("page-size", parse_size, Settings.page_size)
    if not 0 <= base < 1 << 32 or base % 4:
        raise bad("flash-base", "expected a word-aligned 32-bit address")
    if base + size > 1 << 32:
        raise bad(
            "flash-size", f"the area would end past the 32-bit address space (from 0x{base:08x})"
        )
    if page < 256 or page & (page - 1):
        raise bad("page-size", "expected a power of two of at least 256 bytes")
    if size < 2 * page or size % page:
        raise bad(
            "flash-size", f"expected a multiple of the page size ({page}), at least two pages"
        )
    record = get("version-record", _int, base + size - page)
    if (record - base) % page or not base < record < base + size:
        raise bad(
            "version-record",
            f"expected the start of a page inside the area, after its first page "
            f"(0x{base + page:08x} .. 0x{base + size - page:08x}, step {page})",
        )
    uid_address = get("uid-address", _int, -1)
    if "uid-address" in values and not 0 <= uid_address < 1 << 32:
        raise bad("uid-address", "expected a 32-bit address")
    uid_length = get("uid-length", _int, 12)
    if not 1 <= uid_length <= 16:
        raise bad("uid-length", "expected 1 to 16 bytes")
    no_stretch = get("no-stretch", str, "auto")
    if no_stretch not in ("auto", "yes", "no"):
        raise bad("no-stretch", "expected auto, yes or no")
    retries = get("write-retries", _int, 1)
    if not 0 <= retries <= 10:
        raise bad("write-retries", "expected 0 to 10")
    return Settings(
        bus=bus,
        address=address,
        flash_base=base,
        flash_size=size,
        page_size=page,
        version_record=record,
        uid_address=None if uid_address < 0 else uid_address,
        uid_length=uid_length,
        busy_timeout=get("busy-timeout", _seconds, 10.0),
        connect_timeout=get("connect-timeout", _seconds, 5.0),
        write_retries=retries,
        no_stretch=no_stretch,
    )
