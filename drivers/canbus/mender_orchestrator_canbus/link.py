"""The CAN link shared by the driver and the simulator: which python-can bus, which ISO-TP
addresses, and how both are opened.

Both ends describe the link with the same options; the simulator answers on the mirror image
of the tester's addresses (``LinkSettings.mirrored``), so one set of defaults fits both.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from typing import Any

import can
import isotp
from orchestrator_core.driver_api import integer

ADDRESSING_MODES: dict[str, isotp.AddressingMode] = {
    "normal": isotp.AddressingMode.Normal_11bits,
    "normal-29": isotp.AddressingMode.Normal_29bits,
    "normal-fixed-29": isotp.AddressingMode.NormalFixed_29bits,
    "extended": isotp.AddressingMode.Extended_11bits,
    "extended-29": isotp.AddressingMode.Extended_29bits,
    "mixed": isotp.AddressingMode.Mixed_11bits,
    "mixed-29": isotp.AddressingMode.Mixed_29bits,
}

# Which of the optional address parts each mode needs, so a missing one is named up front
# instead of surfacing as a can-isotp error about its constructor parameters.
_MODE_NEEDS: dict[str, tuple[str, ...]] = {
    "normal-fixed-29": ("target_address", "source_address"),
    "extended": ("target_address", "source_address"),
    "extended-29": ("target_address", "source_address"),
    "mixed": ("address_extension",),
    "mixed-29": ("target_address", "source_address", "address_extension"),
}


# Modes whose CAN identifiers ISO 15765-2 derives from the target and source addresses
# (0x18DA.... / 0x18CE....): --tx-id and --rx-id play no part in them.
_IDS_FROM_ADDRESSES = ("normal-fixed-29", "mixed-29")


# the functional request ids of ISO 15765-4 for 11-bit and 29-bit normal addressing
FUNCTIONAL_IDS = {"normal": 0x7DF, "normal-29": 0x18DB33F1}


MAX_SECONDS = 86400.0  # a day: longer is a typo, and can-isotp needs a finite millisecond count


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a duration in seconds, above zero and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_SECONDS:g}, got {text!r}"
        )
    return value


def channel_name(text: str) -> str:
    """An argparse ``type`` for ``--channel``: an empty one would make socketcan listen on every
    CAN interface of the machine."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a channel name (can0, 127.0.0.1:PORT, ...)")
    return text


@dataclass(frozen=True)
class LinkSettings:
    """One end of a UDS-over-ISO-TP link on a python-can bus."""

    interface: str = "socketcan"
    channel: str = "can0"
    bitrate: int | None = None
    data_bitrate: int | None = None
    fd: bool = False
    addressing: str = "normal"
    tx_id: int = 0x7E0
    rx_id: int = 0x7E8
    target_address: int | None = None
    source_address: int | None = None
    address_extension: int | None = None
    padding: int | None = None

    def mirrored(self) -> LinkSettings:
        """The settings of the peer: what one end sends on, the other receives on."""
        return replace(
            self,
            tx_id=self.rx_id,
            rx_id=self.tx_id,
            target_address=self.source_address,
            source_address=self.target_address,
        )

    def describe(self) -> str:
        if self.addressing in _IDS_FROM_ADDRESSES:
            ids = f"target {self.target_address:#04x} / source {self.source_address:#04x}"
        else:
            ids = f"tx {self.tx_id:#05x} / rx {self.rx_id:#05x}"
        if self.addressing != "normal":
            ids = f"{self.addressing} addressing, {ids}"
        return f"interface {self.interface}, channel {self.channel}, {ids}"

    def check(self) -> None:
        """Raise ``ValueError`` naming the option when the addressing is inconsistent."""
        missing = [
            "--" + name.replace("_", "-")
            for name in _MODE_NEEDS.get(self.addressing, ())
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"--addressing={self.addressing} needs {' and '.join(missing)}")
        limit = 0x7FF if self.addressing in ("normal", "extended", "mixed") else 0x1FFFFFFF
        for option, value in (("--tx-id", self.tx_id), ("--rx-id", self.rx_id)):
            if value > limit:
                raise ValueError(
                    f"{option}={value:#x} does not fit the {limit.bit_length()}-bit CAN "
                    f"identifiers of --addressing={self.addressing}"
                )
        if self.tx_id == self.rx_id:
            raise ValueError(f"--tx-id and --rx-id must differ (both are {self.tx_id:#x})")
        self.isotp_address()  # let can-isotp reject anything left

    def isotp_address(self) -> isotp.Address:
        return isotp.Address(
            ADDRESSING_MODES[self.addressing],
            txid=self.tx_id,
            rxid=self.rx_id,
            target_address=self.target_address,
            source_address=self.source_address,
            address_extension=self.address_extension,
        )

    def open_bus(self) -> can.BusABC:
        kwargs: dict[str, Any] = {"interface": self.interface, "channel": self.channel}
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        if self.fd:
            kwargs["fd"] = True
        if self.data_bitrate is not None:
            kwargs["data_bitrate"] = self.data_bitrate
        return can.Bus(**kwargs)

    def isotp_params(self, *, timeout: float, max_frame_size: int, logger: str) -> dict[str, Any]:
        """can-isotp parameters: no flow-control pauses asked of the peer (block size 0,
        STmin 0) and blocking sends, so a UDS timeout only starts once a request is out;
        can-isotp logs under ``logger``."""
        timeout_ms = max(1, round(timeout * 1000))
        params: dict[str, Any] = {
            "blocksize": 0,
            "stmin": 0,
            "blocking_send": True,
            "rx_flowcontrol_timeout": timeout_ms,
            "rx_consecutive_frame_timeout": timeout_ms,
            "max_frame_size": max_frame_size,
            "tx_padding": self.padding,
            "logger_name": logger,
        }
        if self.fd:
            params.update(
                can_fd=True, tx_data_length=64, bitrate_switch=self.data_bitrate is not None
            )
        return params


def add_link_arguments(parser: argparse.ArgumentParser, defaults: LinkSettings) -> None:
    """The options of ``LinkSettings``, shared by the driver's ``interface_args`` and the
    simulator's command line."""
    group = parser.add_argument_group("CAN link")
    group.add_argument(
        "--interface",
        default=defaults.interface,
        help="python-can interface (socketcan, virtual, remote, pcan, ...)",
    )
    group.add_argument(
        "--channel",
        type=channel_name,
        default=defaults.channel,
        help="python-can channel (can0; a virtual bus name; 127.0.0.1:PORT for remote)",
    )
    group.add_argument("--bitrate", type=integer(1, 10_000_000), default=defaults.bitrate)
    group.add_argument(
        "--data-bitrate",
        type=integer(1, 20_000_000),
        default=defaults.data_bitrate,
        help="CAN FD data-phase bitrate (enables bit-rate switching)",
    )
    group.add_argument(
        "--fd",
        action="store_true",
        default=defaults.fd,
        help="use CAN FD frames (64-byte payloads)",
    )
    group.add_argument(
        "--addressing",
        choices=sorted(ADDRESSING_MODES),
        default=defaults.addressing,
        help="ISO-TP addressing mode",
    )
    group.add_argument(
        "--tx-id",
        type=integer(0, 0x1FFFFFFF),
        default=defaults.tx_id,
        help="CAN identifier this end sends on",
    )
    group.add_argument(
        "--rx-id",
        type=integer(0, 0x1FFFFFFF),
        default=defaults.rx_id,
        help="CAN identifier this end listens on",
    )
    group.add_argument("--target-address", type=integer(0, 0xFF), default=defaults.target_address)
    group.add_argument("--source-address", type=integer(0, 0xFF), default=defaults.source_address)
    group.add_argument(
        "--address-extension", type=integer(0, 0xFF), default=defaults.address_extension
    )
    group.add_argument(
        "--padding",
        type=integer(0, 0xFF),
        default=defaults.padding,
        help="pad every CAN frame to full length with this byte",
    )


def link_from_namespace(ns: argparse.Namespace) -> LinkSettings:
    """Build ``LinkSettings`` from parsed ``add_link_arguments`` options; ``ValueError`` if
    they are inconsistent or name an interface python-can does not know."""
    if ns.interface not in can.VALID_INTERFACES:
        raise ValueError(
            f"--interface={ns.interface!r} is not a python-can interface; known: "
            f"{', '.join(sorted(can.VALID_INTERFACES))}"
        )
    settings = LinkSettings(
        interface=ns.interface,
        channel=ns.channel,
        bitrate=ns.bitrate,
        data_bitrate=ns.data_bitrate,
        fd=ns.fd or ns.data_bitrate is not None,
        addressing=ns.addressing,
        tx_id=ns.tx_id,
        rx_id=ns.rx_id,
        target_address=ns.target_address,
        source_address=ns.source_address,
        address_extension=ns.address_extension,
        padding=ns.padding,
    )
    settings.check()
    return settings
