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

from orchestrator_core.driver_api import (
    Component,
    ConfigError,
    InterfaceArgs,
    absolute_path,
    expecting,
    host_record_directory,
    seconds,
    size,
)

T = TypeVar("T")

ARGUMENTS = {
    "bus": "N for /dev/i2c-N, or sim:/absolute/path for the simulator",
    "address": "the bootloader's 7-bit I2C address, e.g. 0x48",
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
    "state-dir": "host directory where the driver records what it installed, for the queries "
    "(default: i2c/ in the orchestrator's datastore)",
    "readout-protection": "refuse or cycle: what to do with an MCU under readout protection "
    "level 1 (default refuse; cycle: remove it, which mass-erases the whole flash, and set it "
    "again after the install)",
    "write-unprotect": "no or yes: remove write protection before erasing (default no)",
    "bank-swap": "no or yes: on a dual-bank part (STM32L47x/48x, G47x/48x), write the bank the MCU "
    "does not boot and swap banks with the BFB2 option bit; a rollback swaps back. The area "
    "(--flash-base/--flash-size) is given as linked, in bank 1; needs NRST (default no)",
    "nrst-gpio": "CHIP:LINE of the GPIO driving NRST (libgpiod), to reboot by reset instead of Go "
    "(default: none)",
    "boot0-gpio": "CHIP:LINE of the GPIO driving BOOT0 (libgpiod, with --nrst-gpio): enter the "
    "bootloader by reset (default: none)",
}
SIZES = ("flash-size", "page-size")
SECONDS = ("busy-timeout", "connect-timeout")
TEXTS = (
    "bus", "no-stretch", "readout-protection", "write-unprotect", "bank-swap", "nrst-gpio",
    "boot0-gpio",
)  # fmt: skip


def _parser() -> InterfaceArgs:
    parser = InterfaceArgs(
        "i2c",
        description="Update an STM32 MCU through its I2C system bootloader (ST AN4221). "
        "Numbers take 0x hexadecimal; sizes a K or M suffix.",
    )
    for name, meaning in ARGUMENTS.items():
        kind: Callable[[str], object]
        if name in SIZES:
            kind = size
        elif name in SECONDS:
            kind = seconds(maximum=None)
        elif name in TEXTS:
            kind = str
        elif name == "state-dir":
            kind = absolute_path
        else:
            kind = expecting(_int, meaning.partition(" (default")[0])
        parser.add_argument(
            f"--{name}", type=kind, required=name in ("bus", "address"), help=meaning
        )
    return parser


def _int(text: str) -> int:
    return int(text, 0)


# built once: parsing does not change it, and `mender-orchestrator drivers i2c` shows it
PARSER = _parser()


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
    state_dir: Path = Path("/var/lib/mender-orchestrator", "i2c")
    readout_protection: str = "refuse"
    write_unprotect: bool = False
    bank_swap: bool = False
    nrst_gpio: tuple[str, int] | None = None
    boot0_gpio: tuple[str, int] | None = None
    # given in interface_args, rather than defaults: a part in the family table then takes
    # its own erase units (and its area's last unit for the record) where these are not given
    page_size_given: bool = False
    version_record_given: bool = False

    @property
    def image_limit(self) -> int:
        """Bytes available to the image: from the flash base up to the version record."""
        return self.version_record - self.flash_base

    @property
    def where(self) -> str:
        return f"STM32 bootloader at 0x{self.address:02x} on I2C bus {self.bus}"


def parse(component: Component) -> Settings:
    ns = PARSER.parse(component)

    def bad(name: str, why: str) -> ConfigError:
        given = PARSER.given(component, f"--{name}") or "(default)"
        return PARSER.invalid(component, f"argument --{name}={given}: {why}")

    bus: str = ns.bus
    if bus.startswith("sim:"):
        if not Path(bus[4:]).is_absolute():
            raise bad("bus", "the simulator's path must be absolute (sim:/path/to/flash.bin)")
    elif not (bus.isascii() and bus.isdigit()):
        raise bad("bus", f"expected {ARGUMENTS['bus']}")
    address: int = ns.address
    if not 0x08 <= address <= 0x77:
        raise bad("address", "a 7-bit I2C address is between 0x08 and 0x77")
    base: int = _or(ns.flash_base, Settings.flash_base)
    size: int = _or(ns.flash_size, Settings.flash_size)
    page: int = _or(ns.page_size, Settings.page_size)
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
    record: int = _or(ns.version_record, base + size - page)
    if (record - base) % page or not base < record < base + size:
        raise bad(
            "version-record",
            f"expected the start of a page inside the area, after its first page "
            f"(0x{base + page:08x} .. 0x{base + size - page:08x}, step {page})",
        )
    uid_address: int | None = ns.uid_address
    if uid_address is not None and not 0 <= uid_address < 1 << 32:
        raise bad("uid-address", "expected a 32-bit address")
    uid_length: int = _or(ns.uid_length, Settings.uid_length)
    if not 1 <= uid_length <= 16:
        raise bad("uid-length", "expected 1 to 16 bytes")
    no_stretch: str = _or(ns.no_stretch, Settings.no_stretch)
    if no_stretch not in ("auto", "yes", "no"):
        raise bad("no-stretch", "expected auto, yes or no")
    protection: str = _or(ns.readout_protection, Settings.readout_protection)
    if protection not in ("refuse", "cycle"):
        raise bad("readout-protection", "expected refuse or cycle")
    unprotect: str = _or(ns.write_unprotect, "no")
    if unprotect not in ("no", "yes"):
        raise bad("write-unprotect", "expected no or yes")
    swap: str = _or(ns.bank_swap, "no")
    if swap not in ("no", "yes"):
        raise bad("bank-swap", "expected no or yes")
    if swap == "yes" and protection == "cycle":
        raise bad(
            "bank-swap",
            "removing readout protection mass-erases both banks: give "
            "--readout-protection=refuse with --bank-swap=yes",
        )
    nrst = _gpio_line(ns.nrst_gpio, lambda: bad("nrst-gpio", GPIO_EXPECTED))
    boot0 = _gpio_line(ns.boot0_gpio, lambda: bad("boot0-gpio", GPIO_EXPECTED))
    if boot0 is not None and nrst is None:
        raise bad("boot0-gpio", "BOOT0 takes effect at a reset: give --nrst-gpio too")
    retries: int = _or(ns.write_retries, Settings.write_retries)
    if not 0 <= retries <= 10:
        raise bad("write-retries", "expected 0 to 10")
    return Settings(
        bus=bus,
        address=address,
        flash_base=base,
        flash_size=size,
        page_size=page,
        version_record=record,
        uid_address=uid_address,
        uid_length=uid_length,
        busy_timeout=_or(ns.busy_timeout, Settings.busy_timeout),
        connect_timeout=_or(ns.connect_timeout, Settings.connect_timeout),
        write_retries=retries,
        no_stretch=no_stretch,
        state_dir=_or(ns.state_dir, default_state_dir()),
        readout_protection=protection,
        write_unprotect=unprotect == "yes",
        bank_swap=swap == "yes",
        nrst_gpio=nrst,
        boot0_gpio=boot0,
        page_size_given=ns.page_size is not None,
        version_record_given=ns.version_record is not None,
    )


GPIO_EXPECTED = "expected CHIP:LINE, e.g. /dev/gpiochip0:17"


def _gpio_line(text: str | None, bad: Callable[[], ConfigError]) -> tuple[str, int] | None:
    if text is None:
        return None
    chip, _, line = text.rpartition(":")
    if not chip or not line.isdigit():
        raise bad()
    return chip, int(line)


def default_state_dir() -> Path:
    return host_record_directory("i2c")


def _or(value: T | None, default: T) -> T:
    """The value given, else the default (computed defaults depend on other arguments)."""
    return default if value is None else value
