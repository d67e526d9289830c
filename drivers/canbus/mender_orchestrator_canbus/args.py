"""The driver's ``interface_args``: parsed once, in the factory, into frozen settings.

Every problem becomes a ``ConfigError`` naming the Component, the argument and what was
expected, so a Topology mistake is reported before any deployment touches an ECU.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import NoReturn

from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError

from mender_orchestrator_canbus.link import (
    LinkSettings,
    add_link_arguments,
    int_value,
    link_from_namespace,
    positive_seconds,
)

DID = int_value(0, 0xFFFF)
ROUTINE = int_value(0, 0xFFFF)


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


class _Rejected(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print usage and exit the whole orchestrator
        raise _Rejected(message)


def _parser() -> _Parser:
    parser = _Parser(prog="canbus", add_help=False, allow_abbrev=False)
    add_link_arguments(parser, LinkSettings())
    uds = parser.add_argument_group("UDS")
    uds.add_argument("--p2-timeout", type=positive_seconds, default=1.0)
    uds.add_argument("--p2-star-timeout", type=positive_seconds, default=5.0)
    uds.add_argument("--reset-wait", type=positive_seconds, default=10.0)
    uds.add_argument("--retries", type=int_value(0, 100), default=3)
    uds.add_argument("--memory-address", type=int_value(0, 2**40 - 1), default=0)
    uds.add_argument("--memory-size", type=int_value(1, 2**32 - 1), default=0x80000)
    uds.add_argument("--address-format", type=int, choices=(8, 16, 24, 32, 40), default=32)
    uds.add_argument("--memorysize-format", type=int, choices=(8, 16, 24, 32), default=32)
    uds.add_argument("--version-did", type=DID, default=0xF189)
    uds.add_argument("--version-write-did", type=DID, default=None)
    uds.add_argument("--serial-did", type=DID, default=0xF18C)
    uds.add_argument("--bank-did", type=DID, default=0xFD00)
    uds.add_argument("--banks", type=int, choices=(1, 2), default=1)
    uds.add_argument("--security-level", type=int_value(1, 0x7D), default=1)
    uds.add_argument("--erase-routine", type=ROUTINE, default=0xFF00)
    uds.add_argument("--check-routine", type=ROUTINE, default=0xFF01)
    uds.add_argument("--bank-routine", type=ROUTINE, default=0xF001)
    return parser


def parse_interface_args(component: Component) -> DriverSettings:
    """Settings from ``component.interface_args``, or a ``ConfigError`` naming the problem."""
    try:
        ns = _parser().parse_args(list(component.interface_args))
        link = link_from_namespace(ns)
        if ns.security_level % 2 == 0:
            raise _Rejected(
                f"argument --security-level: expected the odd requestSeed sub-function "
                f"(0x01, 0x03, ...), got {ns.security_level:#04x}"
            )
        if ns.memory_address >= 2**ns.address_format:
            raise _Rejected(
                f"argument --memory-address: {ns.memory_address:#x} does not fit "
                f"--address-format={ns.address_format} bits"
            )
        if ns.memory_size >= 2**ns.memorysize_format:
            raise _Rejected(
                f"argument --memory-size: {ns.memory_size:#x} does not fit "
                f"--memorysize-format={ns.memorysize_format} bits"
            )
    except (_Rejected, ValueError) as exc:
        raise ConfigError(
            f"{component.label}: invalid interface_args {list(component.interface_args)}: "
            f"{exc}. The canbus driver takes --option=value arguments only (see the "
            f"mender-orchestrator-canbus README for the list)."
        ) from None
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
    )
