"""The driver's settings, parsed from a Component's ``interface_args``.

``--transport=udp --host=H [--port=N]`` or ``--transport=serial --device=PATH
[--baudrate=N]``; another ``--transport`` name is opened by a plugin implementing the
``mcuboot_transport`` hook (``--address`` is then handed to it). Anything wrong is a
``ConfigError`` naming the Component and the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    InterfaceArgs,
    absolute_path,
    integer,
    seconds,
)

BUILT_IN = ("udp", "serial")

PARSER = InterfaceArgs(
    "mcuboot",
    description="Update a Zephyr/MCUboot device through SMP (mcumgr) over UDP or a serial line: "
    "upload to the secondary slot, test, reset, confirm; a reset without confirming rolls back.",
)
PARSER.add_argument(
    "--transport", required=True,
    help="udp or serial (or a transport a plugin adds through the mcuboot_transport hook)",
)  # fmt: skip
PARSER.add_argument("--host", help="udp: the device's IP address or host name")
PARSER.add_argument(
    "--port", type=integer(1, 65535), default=1337, help="udp: the SMP port (default 1337)"
)
PARSER.add_argument(
    "--mtu", type=integer(128, 65535), default=1500,
    help="udp: the link MTU; datagrams stay below it (default 1500)",
)  # fmt: skip
PARSER.add_argument("--device", type=absolute_path, help="serial: the port, e.g. /dev/ttyACM0")
PARSER.add_argument(
    "--baudrate", type=integer(300, 12_000_000), default=115200,
    help="serial: the line speed (default 115200)",
)  # fmt: skip
PARSER.add_argument("--address", help="a plugin transport's device address")
PARSER.add_argument(
    "--request-timeout", type=seconds(600), default=5.0,
    help="seconds to wait for the answer to one SMP request (default 5)",
)  # fmt: skip
PARSER.add_argument(
    "--retries", type=integer(0, 100), default=3,
    help="times a request that got no answer is sent again (default 3)",
)  # fmt: skip
PARSER.add_argument(
    "--reset-timeout", type=seconds(3600), default=60.0,
    help="seconds the device may take to answer again after a reset, swap included (default 60)",
)  # fmt: skip
PARSER.add_argument(
    "--reset-delay", type=seconds(60), default=0.5,
    help="seconds to let the device act on a reset before asking it again (Zephyr resets "
    "250 ms after answering; default 0.5)",
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    transport: str
    host: str | None
    port: int
    mtu: int
    device: Path | None
    baudrate: int
    address: str | None
    request_timeout: float
    retries: int
    reset_timeout: float
    reset_delay: float

    @property
    def where(self) -> str:
        """The device as messages name it."""
        if self.transport == "udp":
            return f"SMP over UDP {self.host}:{self.port}"
        if self.transport == "serial":
            return f"SMP over serial {self.device} at {self.baudrate} baud"
        return f"SMP over {self.transport} {self.address or ''}".rstrip()


def parse(component: Component) -> Settings:
    args = PARSER.parse(component)
    transport = str(args.transport)
    if transport == "udp":
        _needs(component, args.host, "--host", "udp", "the device's IP address")
        _refuse(component, args, "udp", ("device",))
    elif transport == "serial":
        _needs(component, args.device, "--device", "serial", "the serial port, e.g. /dev/ttyACM0")
        _refuse(component, args, "serial", ("host",))
    elif not transport or not transport.replace("-", "").replace("_", "").isalnum():
        raise PARSER.invalid(
            component, f"argument --transport: expected udp, serial or a plugin's transport "
            f"name, got {transport!r}",
        )  # fmt: skip
    return Settings(
        transport=transport, host=args.host, port=args.port, mtu=args.mtu, device=args.device,
        baudrate=args.baudrate, address=args.address, request_timeout=args.request_timeout,
        retries=args.retries, reset_timeout=args.reset_timeout, reset_delay=args.reset_delay,
    )  # fmt: skip


def _needs(component: Component, value: object, option: str, transport: str, what: str) -> None:
    if value is None:
        raise PARSER.invalid(
            component, f"argument {option} is missing: --transport={transport} needs {what}"
        )


def _refuse(component: Component, args: object, transport: str, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(args, name) is not None:
            raise PARSER.invalid(
                component, f"argument --{name} does not apply to --transport={transport}"
            )
