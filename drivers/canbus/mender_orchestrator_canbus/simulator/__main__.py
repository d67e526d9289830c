"""Command line of the ECU simulator: ``python -m mender_orchestrator_canbus.simulator``."""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
import threading
from pathlib import Path

from mender_orchestrator_canbus.link import (
    LinkSettings,
    add_link_arguments,
    int_value,
    link_from_namespace,
    positive_seconds,
)
from mender_orchestrator_canbus.simulator.ecu import FAULT_NAMES, Ecu, EcuConfig, Faults
from mender_orchestrator_canbus.simulator.flash import FlashStore
from mender_orchestrator_canbus.simulator.server import EcuServer

HEX16 = int_value(0, 0xFFFF)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mender_orchestrator_canbus.simulator",
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
        type=int_value(4096, 1 << 26),
        default=0x80000,
        help="bytes per bank (new state only)",
    )
    ecu.add_argument("--serial", default="SIM-ECU-0001", help="ECU serial number (new state only)")
    ecu.add_argument(
        "--initial-version",
        default="ecu-1.0.0",
        help="version of the image bank 0 starts with (new state only)",
    )
    ecu.add_argument(
        "--initial-size",
        type=int_value(1, 1 << 26),
        default=16384,
        help="size of that image (new state only)",
    )
    ecu.add_argument("--memory-address", type=int_value(0, 2**40 - 1), default=0)
    ecu.add_argument(
        "--max-block-length",
        type=int_value(3, 0xFFFF),
        default=4095,
        help="maxNumberOfBlockLength announced by RequestDownload",
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
    ecu.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
        if state.exists():
            flash = FlashStore(state)
        else:
            seed = f"{args.serial}/{args.initial_version}".encode()
            flash = FlashStore.create(
                state,
                banks=args.banks,
                bank_size=args.bank_size,
                serial=args.serial,
                version=args.initial_version,
                image=hashlib.shake_256(seed).digest(args.initial_size),
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--state {state}: cannot use it as the ECU's state file: {exc!r}")
    config = EcuConfig(
        version_did=args.version_did,
        serial_did=args.serial_did,
        bank_did=args.bank_did,
        erase_routine=args.erase_routine,
        check_routine=args.check_routine,
        bank_routine=args.bank_routine,
        memory_address=args.memory_address,
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
        server = EcuServer(link, Ecu(flash, config, faults))
    except Exception as exc:  # python-can raises backend-specific errors
        print(f"ECU simulator: cannot open the CAN bus ({link.describe()}): {exc}", file=sys.stderr)
        return 1
    with server:
        print(
            f"ECU simulator {flash.layout.serial} ready: {len(flash.layout.banks)} bank(s), "
            f"{link.describe()}, state {state}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
