"""Command line of the ECU simulator: ``python -m mender_orchestrator_canbus.simulator``."""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from orchestrator_core.driver_api import integer

from mender_orchestrator_canbus.link import (
    LinkSettings,
    add_link_arguments,
    link_from_namespace,
    positive_seconds,
)
from mender_orchestrator_canbus.simulator.ecu import FAULT_NAMES, Ecu, EcuConfig, Faults
from mender_orchestrator_canbus.simulator.flash import SECTOR, FlashStore
from mender_orchestrator_canbus.simulator.server import EcuServer

HEX16 = integer(0, 0xFFFF)


def sectors(text: str) -> int:
    """An argparse ``type`` for a bank size: whole flash sectors, up to 64 MiB."""
    value = integer(SECTOR, 1 << 26)(text)
    if value % SECTOR:
        raise argparse.ArgumentTypeError(f"expected a multiple of {SECTOR}, got {text!r}")
    return value


def did_text(text: str) -> str:
    """An argparse ``type`` for a serial number or version: what the ECU's DIDs can hold (the
    same rule its WriteDataByIdentifier applies)."""
    if not 1 <= len(text) <= 64 or not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"expected 1 to 64 printable ASCII characters, got {text!r}"
        )
    return text


def integer_list(
    parse: Callable[[str], int], count: int | None = None
) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type`` for comma-separated integers (``count`` of them, if given)."""

    def parse_list(text: str) -> tuple[int, ...]:
        values = tuple(parse(part) for part in text.split(","))
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} values, got {text!r}")
        return values

    return parse_list


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mender_orchestrator_canbus.simulator",
        # the full usage of 35 options would bury the one-line error message below it
        usage="%(prog)s --state FILE [options]   (--help lists them)",
        description="A UDS (ISO 14229-1) ECU on a python-can bus, for the canbus driver.",
    )
    # the ECU listens where the driver sends: its defaults mirror the driver's
    add_link_arguments(parser, LinkSettings().mirrored())
    ecu = parser.add_argument_group("ECU")
    ecu.add_argument(
        "--state",
        type=Path,
        required=True,
        help="state file (JSON; banks stored beside it as STATE.bank0, STATE.bank1); "
        "created on first use",
    )
    ecu.add_argument(
        "--banks",
        type=int,
        choices=(1, 2),
        default=1,
        help="single bank (re-flashed in place) or A/B banks (new state only)",
    )
    ecu.add_argument(
        "--bank-size",
        type=sectors,
        default=0x80000,
        help=f"bytes per bank, a multiple of {SECTOR} (new state only)",
    )
    ecu.add_argument(
        "--serial", type=did_text, default="SIM-ECU-0001", help="ECU serial number (new state only)"
    )
    ecu.add_argument(
        "--initial-version",
        type=did_text,
        default="ecu-1.0.0",
        help="version of the image bank 0 starts with (new state only)",
    )
    ecu.add_argument(
        "--initial-size",
        type=integer(1, 1 << 26),
        default=16384,
        help="size of that image (new state only)",
    )
    ecu.add_argument("--memory-address", type=integer(0, 2**40 - 1), default=0)
    ecu.add_argument(
        "--max-block-length",
        type=integer(3, 0xFFFF),
        default=4095,
        help="maxNumberOfBlockLength announced by RequestDownload",
    )
    ecu.add_argument(
        "--bank-addresses",
        type=integer_list(integer(0, 2**40 - 1), 2),
        default=(),
        metavar="A,B",
        help="(dual bank) where bank 0 and bank 1 appear (default: both at --memory-address)",
    )
    ecu.add_argument(
        "--security-levels",
        type=integer_list(integer(1, 0x7D)),
        default=(0x01,),
        metavar="L1,L2",
        help="requestSeed levels, all needed to program (default 0x01)",
    )
    ecu.add_argument(
        "--data-formats",
        type=integer_list(integer(0, 0xFF)),
        default=(0x00,),
        metavar="F1,F2",
        help="RequestDownload dataFormatIdentifiers accepted, data stored as sent (default 0)",
    )
    ecu.add_argument(
        "--require-dtc-off",
        action="store_true",
        help="refuse eraseMemory (NRC 0x22) unless ControlDTCSetting is off",
    )
    ecu.add_argument(
        "--functional-id",
        type=integer(0, 0x1FFFFFFF),
        default=None,
        help="functional request id (default 0x7DF, 0x18DB33F1 with normal-29 addressing)",
    )
    ecu.add_argument("--erase-time", type=positive_seconds, default=0.05)
    ecu.add_argument("--check-time", type=positive_seconds, default=0.02)
    ecu.add_argument("--boot-time", type=positive_seconds, default=0.1)
    ecu.add_argument("--s3-timeout", type=positive_seconds, default=5.0)
    ecu.add_argument("--lockout-time", type=positive_seconds, default=10.0)
    ecu.add_argument("--version-did", type=HEX16, default=0xF189)
    ecu.add_argument("--serial-did", type=HEX16, default=0xF18C)
    ecu.add_argument("--bank-did", type=HEX16, default=0xFD00)
    ecu.add_argument("--erase-routine", type=HEX16, default=0xFF00)
    ecu.add_argument("--check-routine", type=HEX16, default=0xFF01)
    ecu.add_argument("--bank-routine", type=HEX16, default=0xF001)
    ecu.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help=f"inject a fault (repeatable): {', '.join(FAULT_NAMES)}",
    )
    bus = parser.add_argument_group("bus behaviour")
    bus.add_argument("--fc-wait", type=integer(0, 255), default=0,
                     help="flow-control WAIT frames sent before each clear-to-send")  # fmt: skip
    bus.add_argument("--fc-wait-gap", type=positive_seconds, default=0.1,
                     help="seconds between those WAIT frames (default 0.1)")  # fmt: skip
    ecu.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="on exit, write the requests the ECU handled to this file, one label a line",
    )
    ecu.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    return parser


def _new_ecu(parser: argparse.ArgumentParser, args: argparse.Namespace) -> FlashStore:
    """The state of a factory-fresh ECU, from the options that describe one."""
    if args.initial_size > args.bank_size:
        parser.error(
            f"--initial-size={args.initial_size} does not fit --bank-size={args.bank_size}"
        )
    if not args.state.parent.is_dir():
        parser.error(f"--state {args.state}: directory {args.state.parent} does not exist")
    seed = f"{args.serial}/{args.initial_version}".encode()
    return FlashStore.create(
        args.state,
        banks=args.banks,
        bank_size=args.bank_size,
        serial=args.serial,
        version=args.initial_version,
        image=hashlib.shake_256(seed).digest(args.initial_size),
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if any(level % 2 == 0 for level in args.security_levels):
        parser.error("--security-levels: expected odd requestSeed sub-functions (1, 3, 0x11, ...)")
    try:
        link = link_from_namespace(args)
        faults = Faults.parse(args.fault)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if args.log_level != "debug":
        # can-isotp warns about every frame an injected fault or a reset leaves dangling
        logging.getLogger("mender_orchestrator_canbus.simulator.isotp").setLevel(logging.ERROR)
    state: Path = args.state
    try:
        flash = FlashStore(state) if state.exists() else _new_ecu(parser, args)
    except (OSError, ValueError) as exc:
        parser.error(f"--state: {exc}")
    config = EcuConfig(
        version_did=args.version_did,
        serial_did=args.serial_did,
        bank_did=args.bank_did,
        erase_routine=args.erase_routine,
        check_routine=args.check_routine,
        bank_routine=args.bank_routine,
        memory_address=args.memory_address,
        bank_addresses=args.bank_addresses,
        security_levels=args.security_levels,
        require_dtc_off=args.require_dtc_off,
        data_formats=args.data_formats,
        functional_id=args.functional_id,
        max_block_length=args.max_block_length,
        erase_time=args.erase_time,
        check_time=args.check_time,
        boot_time=args.boot_time,
        s3_timeout=args.s3_timeout,
        lockout_time=args.lockout_time,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = EcuServer(link, Ecu(flash, config, faults), args.fc_wait, args.fc_wait_gap)
    except Exception as exc:  # python-can raises backend-specific errors
        print(f"ECU simulator: cannot open the CAN bus ({link.describe()}): {exc}", file=sys.stderr)
        return 1
    with server:
        if args.trace is not None:
            args.trace.write_text("")  # the file exists (empty) from the start
        print(
            f"ECU simulator {flash.layout.serial} ready: {len(flash.layout.banks)} bank(s), "
            f"{link.describe()}, state {state}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            if server.failure is not None:
                print(f"ECU simulator stopped: {server.failure}", file=sys.stderr)
                return 1
    if args.trace is not None:
        args.trace.write_text("".join(f"{label}\n" for label in server.ecu.trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
