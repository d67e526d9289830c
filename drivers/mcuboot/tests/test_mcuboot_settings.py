"""interface_args: every mistake is one line naming the Component, the argument and what was
expected, before anything is sent; transports the driver does not have name the hook."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_core.driver_api import Component, ConfigError, InterfaceContext, InterfaceError

from mender_orchestrator_mcuboot.driver import McubootDriver
from mender_orchestrator_mcuboot.settings import parse


def component(*args: str) -> Component:
    return Component("sensor_mcu", "mcuboot", args)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--transport=udp",),
         "argument --host is missing: --transport=udp needs the device's IP address"),
        (("--host=10.0.0.1",), "argument --transport is missing: udp or serial"),
        (("--transport=serial",),
         "argument --device is missing: --transport=serial needs the serial port, e.g. "
         "/dev/ttyACM0"),
        (("--transport=serial", "--device=dev/ttyACM0"),
         "argument --device: expected an absolute path, got 'dev/ttyACM0'"),
        (("--transport=udp", "--host=h", "--device=/dev/ttyACM0"),
         "argument --device does not apply to --transport=udp"),
        (("--transport=serial", "--device=/dev/ttyACM0", "--host=h"),
         "argument --host does not apply to --transport=serial"),
        (("--transport=serial", "--device=/dev/ttyACM0", "--baudrate=fast"),
         "argument --baudrate: expected an integer (decimal or 0x-prefixed hex), got 'fast'"),
        (("--transport=udp", "--host=h", "--reset-timeout=0"),
         "argument --reset-timeout: expected a number of seconds above 0 and at most 3600, "
         "got '0'"),
        (("--transport=udp", "--host=h", "--host=i"), "argument --host: given twice"),
        (("--transport=udp", "--host=h", "--speed=9"), "unrecognized arguments: --speed=9"),
        (("--transport=u d p",),
         "argument --transport: expected udp, serial or a plugin's transport name, "
         "got 'u d p'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_config_errors(args: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(component(*args))

    text = str(raised.value)
    label = "sensor_mcu[0] (interface mcuboot)"
    assert text.startswith(f"{label}: invalid interface_args {list(args)}: ")
    assert problem in text
    assert "\n" not in text


def test_defaults() -> None:
    settings = parse(component("--transport=serial", "--device=/dev/ttyACM0"))

    assert (settings.baudrate, settings.request_timeout, settings.retries) == (115200, 5.0, 3)
    assert settings.where == "SMP over serial /dev/ttyACM0 at 115200 baud"
    udp = parse(component("--transport", "udp", "--host", "192.0.2.7"))
    assert (udp.port, udp.mtu, udp.where) == (1337, 1500, "SMP over UDP 192.0.2.7:1337")


def _ctx(args: tuple[str, ...]) -> InterfaceContext:
    import logging

    return InterfaceContext(component(*args), logging.getLogger("test"), timeout_seconds=5)


def test_a_transport_nobody_provides_is_named(tmp_path: Path) -> None:
    args = ("--transport=ble", "--address=C0:FF:EE:00:00:01")

    with pytest.raises(InterfaceError) as raised:
        McubootDriver(component(*args)).identity(_ctx(args))

    assert str(raised.value) == (
        "sensor_mcu[0] (interface mcuboot): no SMP transport 'ble': built in are udp and "
        "serial; a plugin implementing the mcuboot_transport hook may add others"
    )


def test_a_missing_serial_port_is_named_in_bounded_time(tmp_path: Path) -> None:
    args = ("--transport=serial", f"--device={tmp_path}/ttyACM9", "--request-timeout=0.2")

    with pytest.raises(InterfaceError) as raised:
        McubootDriver(component(*args)).provides(_ctx(args))

    assert str(raised.value).startswith(
        f"sensor_mcu[0] (interface mcuboot): cannot open SMP over serial {tmp_path}/ttyACM9 at "
        "115200 baud: "
    )
