"""Bad ``interface_args`` are refused when the driver is loaded, naming the argument."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_core import drivers
from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError

from mender_orchestrator_i2c.driver import I2CDriver

BUS = "--bus=sim:/srv/stm32.bin"
PREFIX = "seat_heating[2] (interface i2c): invalid interface_args "


def load(tmp_path: Path, *args: str) -> drivers.ComponentDriver:
    return drivers.load(Component("seat_heating", "i2c", args, position=2), tmp_path)


OK = (BUS, "--address=0x48")
CASES = [
    (("--address=0x48",), "argument --bus is missing: N for /dev/i2c-N, or sim:/absolute/path"),
    ((BUS,), "argument --address is missing: the bootloader's 7-bit I2C address"),
    (("--bus=i2c-1", "--address=0x48"), "--bus=i2c-1: expected N for /dev/i2c-N"),
    (
        ("--bus=sim:dev.bin", "--address=0x48"),
        "--bus=sim:dev.bin: the simulator's path must be absolute",
    ),
    ((BUS, "--address=0x99"), "--address=0x99: a 7-bit I2C address is between 0x08 and 0x77"),
    (
        (BUS, "--address=forty"),
        "argument --address: expected the bootloader's 7-bit I2C address, e.g. 0x48, got 'forty'",
    ),
    ((*OK, "--page-size=1000"), "--page-size=1000: expected a power of two"),
    ((*OK, "--flash-size=3000"), "--flash-size=3000: expected a multiple of the page size (2048)"),
    (
        (*OK, "--flash-size=12K", "--version-record=0x08000100"),
        "--version-record=0x08000100: expected the start of a page inside the area",
    ),
    (
        (*OK, "--version-record=0x08000000"),
        "--version-record=0x08000000: expected the start of a page inside the area, after its "
        "first page (0x08000800 .. 0x0800f800, step 2048)",
    ),
    ((*OK, "--flash-base=0x08000002"), "--flash-base=0x08000002: expected a word-aligned"),
    (
        (*OK, "--flash-size=0x10000000000"),
        "--flash-size=0x10000000000: the area would end past the 32-bit address space "
        "(from 0x08000000)",
    ),
    (("--bus=\u0661", "--address=0x48"), "--bus=\u0661: expected N for /dev/i2c-N"),
    (
        (*OK, "--busy-timeout=-1"),
        "argument --busy-timeout: expected a positive number of seconds, got '-1'",
    ),
    ((*OK, "--no-stretch=maybe"), "--no-stretch=maybe: expected auto, yes or no"),
    ((*OK, "--write-retries=99"), "--write-retries=99: expected 0 to 10"),
    ((*OK, "--readout-protection=remove"), "--readout-protection=remove: expected refuse or cycle"),
    ((*OK, "--write-unprotect=1"), "--write-unprotect=1: expected no or yes"),
    ((*OK, "--bank-swap=on"), "--bank-swap=on: expected no or yes"),
    (
        (*OK, "--bank-swap=yes", "--readout-protection=cycle"),
        "--bank-swap=yes: removing readout protection mass-erases both banks",
    ),
    ((*OK, "--nrst-gpio=17"), "--nrst-gpio=17: expected CHIP:LINE, e.g. /dev/gpiochip0:17"),
    ((*OK, "--boot0-gpio=/dev/gpiochip0:4"), "BOOT0 takes effect at a reset: give --nrst-gpio"),
    ((*OK, "--state-dir=state"), "argument --state-dir: expected an absolute path, got 'state'"),
    ((*OK, "--uid-length=40"), "--uid-length=40: expected 1 to 16 bytes"),
    (
        (*OK, "--speed=400k"),
        "unrecognized arguments: --speed=400k; the i2c driver takes --bus, --address,",
    ),
    ((*OK, "--address=0x49"), "argument --address: given twice"),
    ((BUS, "--address"), "argument --address: expected one argument"),
    ((BUS, "0x48"), "unrecognized arguments: 0x48; the i2c driver takes --bus,"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_bad_argument_is_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, *args)
    assert str(caught.value).startswith(f"{PREFIX}{list(args)}: ")
    assert message in str(caught.value)
    assert str(caught.value).endswith("(`mender-orchestrator drivers i2c` lists the arguments)")


def test_values_take_both_spellings_and_units(tmp_path: Path) -> None:
    driver = load(
        tmp_path, "--bus", "3", "--address", "0x38", "--flash-size=128K", "--page-size", "2K"
    )
    plugin = driver.pm.get_plugin("driver")
    assert isinstance(plugin, I2CDriver)
    settings = plugin.settings
    assert (settings.bus, settings.address) == ("3", 0x38)
    assert (settings.flash_size, settings.page_size) == (128 * 1024, 2048)
    assert settings.version_record == 0x0801_F800  # the area's last page by default
    assert settings.no_stretch == "auto"
