"""The driver's ``interface_args``: parsed once, in the factory, into frozen settings.

Every problem becomes a ``ConfigError`` naming the Component, the argument and what was
expected, so a Topology mistake is reported before any deployment touches an ECU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_core.driver_api import Component, InterfaceArgs, absolute_path, integer

from mender_orchestrator_canbus.link import (
    LinkSettings,
    add_link_arguments,
    link_from_namespace,
    positive_seconds,
)
from mender_orchestrator_canbus.profile import FlashProfile, ProfileError, load_profile
from mender_orchestrator_canbus.transport import (
    TransportSettings,
    add_transport_arguments,
    transport_from_namespace,
)

DID = integer(0, 0xFFFF)
ROUTINE = integer(0, 0xFFFF)


@dataclass(frozen=True)
class DriverSettings:
    link: LinkSettings
    p2_timeout: float
    p2_star_timeout: float
    reset_wait: float
    retries: int
    memory_address: int
    memory_size: int
    address_format: int
    memorysize_format: int
    version_did: int
    version_write_did: int
    serial_did: int
    bank_did: int
    banks: int
    security_level: int
    erase_routine: int
    check_routine: int
    bank_routine: int
    # the flash sequence (--profile and the arguments above) and how to roll back
    profile: FlashProfile = field(default_factory=FlashProfile)
    rollback: str = "reinstall"
    version_source: str = "did"
    version_record: Path | None = None
    transport: TransportSettings = field(default_factory=TransportSettings)


ROLLBACKS = ("reinstall", "upload", "bank")


def _parser() -> InterfaceArgs:
    parser = InterfaceArgs(
        "canbus",
        description="Flash an ECU with UDS (ISO 14229) over ISO-TP on a python-can bus. "
        "Numbers take 0x hexadecimal.",
    )
    add_link_arguments(parser, LinkSettings())
    add_transport_arguments(parser)
    uds = parser.add_argument_group("UDS")
    uds.add_argument(
        "--p2-timeout",
        type=positive_seconds,
        default=1.0,
        help="seconds to wait for an answer, UDS P2 (default 1)",
    )
    uds.add_argument(
        "--p2-star-timeout",
        type=positive_seconds,
        default=5.0,
        help="seconds to wait after each NRC 0x78 (default 5)",
    )
    uds.add_argument(
        "--reset-wait",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for the ECU after ECUReset (default 10)",
    )
    uds.add_argument(
        "--retries",
        type=integer(0, 100),
        default=3,
        help="times an unanswered TransferData block is sent again (default 3)",
    )
    uds.add_argument(
        "--memory-address",
        type=integer(0, 2**40 - 1),
        default=0,
        help="where the application image goes (default 0)",
    )
    uds.add_argument(
        "--memory-size",
        type=integer(1, 2**32 - 1),
        default=0x80000,
        help="size of the application bank (default 0x80000)",
    )
    uds.add_argument("--address-format", type=int, choices=(8, 16, 24, 32, 40), default=32)
    uds.add_argument("--memorysize-format", type=int, choices=(8, 16, 24, 32), default=32)
    uds.add_argument(
        "--version-did", type=DID, default=0xF189, help="DID read for Provides (default 0xF189)"
    )
    uds.add_argument(
        "--version-write-did",
        type=DID,
        default=None,
        help="DID the new version is written to (default: --version-did)",
    )
    uds.add_argument(
        "--serial-did", type=DID, default=0xF18C, help="DID read for Identity (default 0xF18C)"
    )
    uds.add_argument(
        "--bank-did",
        type=DID,
        default=0xFD00,
        help="(dual bank) DID of the running bank (default 0xFD00)",
    )
    uds.add_argument(
        "--banks",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: re-flashed in place; 2: A/B banks (default 1)",
    )
    uds.add_argument(
        "--security-level",
        type=integer(1, 0x7D),
        default=1,
        help="SecurityAccess requestSeed sub-function, odd (default 1)",
    )
    uds.add_argument("--erase-routine", type=ROUTINE, default=0xFF00)
    uds.add_argument("--check-routine", type=ROUTINE, default=0xFF01)
    uds.add_argument("--bank-routine", type=ROUTINE, default=0xF001)
    flash = parser.add_argument_group("flash sequence")
    flash.add_argument(
        "--profile",
        type=absolute_path,
        default=None,
        help="YAML flash profile the ECU's vendor ships (see the driver's README)",
    )
    flash.add_argument(
        "--rollback",
        choices=ROLLBACKS,
        default=None,
        help="reinstall: flash the previous Artifact (single bank default; RequestUpload "
        "while none is kept); upload: RequestUpload backup; bank: switch back (--banks=2)",
    )
    flash.add_argument(
        "--version-source",
        choices=("did", "record"),
        default="did",
        help="did: read --version-did; record: the version the driver recorded in "
        "--version-record after each verified install",
    )
    flash.add_argument(
        "--version-record",
        type=absolute_path,
        default=None,
        help="(--version-source=record) JSON file of the installed version per ECU serial",
    )
    return parser


# built once: parsing does not change it, and `mender-orchestrator drivers canbus` shows it
PARSER = _parser()


def parse_interface_args(component: Component) -> DriverSettings:
    """Settings from ``component.interface_args``, or a ``ConfigError`` naming the problem."""
    ns = PARSER.parse(component)
    try:
        link = link_from_namespace(ns)
        transport = transport_from_namespace(ns, link)
    except ValueError as exc:
        raise PARSER.invalid(component, str(exc)) from None
    if ns.security_level % 2 == 0:
        raise PARSER.invalid(
            component,
            f"argument --security-level: expected the odd requestSeed sub-function "
            f"(0x01, 0x03, ...), got {ns.security_level:#04x}",
        )
    if ns.memory_address >= 2**ns.address_format:
        raise PARSER.invalid(
            component,
            f"argument --memory-address: {ns.memory_address:#x} does not fit "
            f"--address-format={ns.address_format} bits",
        )
    if ns.memory_size >= 2**ns.memorysize_format:
        raise PARSER.invalid(
            component,
            f"argument --memory-size: {ns.memory_size:#x} does not fit "
            f"--memorysize-format={ns.memorysize_format} bits",
        )
    defaults = FlashProfile(
        security_levels=(ns.security_level,),
        erase_routine=ns.erase_routine,
        check_routine=ns.check_routine,
        bank_routine=ns.bank_routine,
        version_write_did=ns.version_did if ns.version_write_did is None else ns.version_write_did,
    )
    try:
        profile = defaults if ns.profile is None else load_profile(Path(ns.profile), defaults)
    except ProfileError as exc:
        raise PARSER.invalid(component, f"argument --profile: {exc}") from None
    rollback = ns.rollback or ("bank" if ns.banks == 2 else "reinstall")
    if (rollback == "bank") != (ns.banks == 2):
        raise PARSER.invalid(
            component, f"argument --rollback={rollback} does not fit --banks={ns.banks}"
        )
    if ns.version_source == "record" and ns.version_record is None:
        raise PARSER.invalid(component, "argument --version-source=record needs --version-record")
    return DriverSettings(
        link=link,
        p2_timeout=ns.p2_timeout,
        p2_star_timeout=ns.p2_star_timeout,
        reset_wait=ns.reset_wait,
        retries=ns.retries,
        memory_address=ns.memory_address,
        memory_size=ns.memory_size,
        address_format=ns.address_format,
        memorysize_format=ns.memorysize_format,
        version_did=ns.version_did,
        version_write_did=ns.version_did if ns.version_write_did is None else ns.version_write_did,
        serial_did=ns.serial_did,
        bank_did=ns.bank_did,
        banks=ns.banks,
        security_level=ns.security_level,
        erase_routine=ns.erase_routine,
        check_routine=ns.check_routine,
        bank_routine=ns.bank_routine,
        profile=profile,
        rollback=rollback,
        version_source=ns.version_source,
        version_record=None if ns.version_record is None else Path(ns.version_record),
        transport=transport,
    )
