"""The driver's settings, parsed from a Component's ``interface_args``.

The serial device is named as esptool names it: ``--port=/dev/ttyUSB0``, or ``--instance=ID``
with ``--device-map=FILE`` (lines ``ID=PORT``, ``#`` comments), which keeps the Topology the
same on every vehicle while the ports differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    ConfigError,
    InterfaceArgs,
    absolute_path,
    host_record_directory,
    integer,
    seconds,
    size,
)

BEFORE = ("default-reset", "no-reset")
AFTER = ("hard-reset", "soft-reset", "watchdog-reset")
# what starts the app on each chip, as esptool offers it: the ESP32 is flashed by its ROM,
# whose run command (soft-reset) works; the later chips through esptool's stub, which has none,
# but the S2, S3, C3 and C2 have an RTC watchdog esptool fires (watchdog-reset); esptool does
# not on the C6 and H2 (a reset by it loses their USB-Serial/JTAG port), so only RTS does there
CHIPS = {
    "esp32": ("hard-reset", "soft-reset"),
    "esp32s2": ("hard-reset", "watchdog-reset"),
    "esp32s3": ("hard-reset", "watchdog-reset"),
    "esp32c3": ("hard-reset", "watchdog-reset"),
    "esp32c2": ("hard-reset", "watchdog-reset"),
    "esp32c6": ("hard-reset",),
    "esp32h2": ("hard-reset",),
}


def _parser() -> InterfaceArgs:
    parser = InterfaceArgs(
        "esp32",
        description="Update an ESP32 through its ROM serial loader (esptool as a library): the "
        "app goes to the inactive OTA partition, otadata switches to it, ESP-IDF's app "
        "rollback states confirm or revert it.",
    )
    parser.add_argument("--port", help="the serial device, as esptool names it (/dev/ttyUSB0)")
    parser.add_argument("--instance", help="this chip's entry in --device-map")
    parser.add_argument(
        "--device-map", type=absolute_path, help="file of ID=PORT lines, one per chip"
    )
    parser.add_argument(
        "--baud", type=integer(9600, 5_000_000), default=460800,
        help="baud rate after the connection at 115200 (default 460800, as idf.py flash)",
    )  # fmt: skip
    parser.add_argument(
        "--chip", default="esp32", choices=list(CHIPS),
        help="the chip expected (default esp32; another answering is an error); any but the "
        "esp32 is flashed through esptool's stub, which its ROM loader needs to read flash",
    )  # fmt: skip
    parser.add_argument(
        "--before", default="default-reset", choices=BEFORE,
        help="how to enter the download mode: DTR/RTS, or the board is already in it",
    )  # fmt: skip
    parser.add_argument(
        "--after", default="hard-reset", choices=AFTER,
        help="how to start the application: an RTS pulse on EN; the ROM loader's run command "
        "(esp32); the RTC watchdog (esp32s2, esp32s3, esp32c3, esp32c2)",
    )  # fmt: skip
    parser.add_argument(
        "--flash-size", type=size, default=4 * 1024 * 1024, help="SPI flash size (default 4M)"
    )
    parser.add_argument(
        "--connect-attempts", type=integer(1, 100), default=7,
        help="reset-and-sync rounds before giving up (default 7, as esptool)",
    )  # fmt: skip
    parser.add_argument(
        "--command-timeout", type=seconds(60), default=3.0,
        help="seconds one loader command may take, erases excepted (default 3, as esptool)",
    )  # fmt: skip
    parser.add_argument(
        "--state-dir", type=absolute_path,
        help="host directory where the driver records what the chip runs, for the queries "
        "(default: esp32/ in the orchestrator's datastore)",
    )  # fmt: skip
    return parser


# built once: parsing does not change it, and `mender-orchestrator drivers esp32` shows it
PARSER = _parser()


@dataclass(frozen=True)
class Settings:
    port: str
    baud: int = 460800
    chip: str = "esp32"
    before: str = "default-reset"
    after: str = "hard-reset"
    flash_size: int = 4 * 1024 * 1024
    connect_attempts: int = 7
    command_timeout: float = 3.0
    state_dir: Path = Path("/var/lib/mender-orchestrator", "esp32")


def parse(component: Component) -> Settings:
    ns = PARSER.parse(component)
    if ns.port is not None and (ns.instance is not None or ns.device_map is not None):
        raise PARSER.invalid(component, "give either --port or --instance with --device-map")
    if ns.port is None:
        if ns.instance is None or ns.device_map is None:
            raise PARSER.invalid(
                component, "the serial port is missing: give --port, or --instance and --device-map"
            )
        port = _look_up(component, ns.device_map, ns.instance)
    else:
        port = ns.port
    if ns.after not in CHIPS[ns.chip]:
        raise PARSER.invalid(
            component,
            f"argument --after={ns.after} does not start an app on --chip={ns.chip}: "
            f"use {' or '.join(CHIPS[ns.chip])}",
        )
    if ns.flash_size < 0x10000 or ns.flash_size % 0x10000:
        raise PARSER.invalid(
            component, f"argument --flash-size: expected a multiple of 64K, got {ns.flash_size}"
        )
    return Settings(
        port=port,
        baud=ns.baud,
        chip=ns.chip,
        before=ns.before,
        after=ns.after,
        flash_size=ns.flash_size,
        connect_attempts=ns.connect_attempts,
        command_timeout=ns.command_timeout,
        state_dir=default_state_dir() if ns.state_dir is None else ns.state_dir,
    )


def default_state_dir() -> Path:
    return host_record_directory("esp32")


def _look_up(component: Component, path: Path, instance: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PARSER.invalid(component, f"--device-map {path} cannot be read: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, port = line.partition("=")
        if not sep or not name.strip() or not port.strip():
            raise ConfigError(
                f"{component.label}: --device-map {path} line {number}: expected ID=PORT, "
                f"got {line[:80]!r}"
            )
        if name.strip() == instance:
            return port.strip()
    raise PARSER.invalid(component, f"--device-map {path} has no entry for --instance={instance}")
