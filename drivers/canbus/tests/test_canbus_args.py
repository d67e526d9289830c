"""interface_args: every mistake is a ConfigError naming the argument; every link variant works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from canbus_helpers import OLD_VERSION, QUICK_ECU, SERIAL, Harness, SimEcu
from orchestrator_core.context import Component
from orchestrator_core.drivers import load
from orchestrator_core.errors import ConfigError, InterfaceError

from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import EcuConfig


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["front", "15:22:aa:33:ff"], "unrecognized arguments: front 15:22:aa:33:ff"),
        (["--tx-id=0xZZ"], "argument --tx-id: expected an integer (decimal or 0x-prefixed hex), got '0xZZ'"),
        (["--tx-id=0x800"], "--tx-id=0x800 does not fit the 11-bit CAN identifiers of --addressing=normal"),
        (["--rx-id=0x7E0"], "--tx-id and --rx-id must differ (both are 0x7e0)"),
        (["--interface=nope"], "--interface='nope' is not a python-can interface; known: "),
        (["--addressing=extended"], "--addressing=extended needs --target-address and --source-address"),
        (["--addressing=sideways"], "argument --addressing: invalid choice: 'sideways'"),
        (["--security-level=2"], "argument --security-level: expected the odd requestSeed sub-function"),
        (["--p2-timeout=0"], "argument --p2-timeout: expected a number of seconds above 0 and at most 86400, got '0'"),
        (["--p2-timeout=inf"], "argument --p2-timeout: expected a number of seconds above 0 and at most 86400, got 'inf'"),
        (["--reset-wait=1e308"], "argument --reset-wait: expected a number of seconds above 0 and at most 86400, got '1e308'"),
        (["--channel="], "argument --channel: expected a channel name (can0, 127.0.0.1:PORT, ...)"),
        (["--banks=3"], "argument --banks: invalid choice: 3"),
        (["--version-did=0x10000"], "argument --version-did: expected a value from 0x0 to 0xffff"),
        (["--memory-size=0x100", "--memorysize-format=8"], "argument --memory-size: 0x100 does not fit --memorysize-format=8 bits"),
        (["--channel"], "argument --channel: expected one argument"),
        (["--help"], "unrecognized arguments: --help"),
    ],
)  # fmt: skip
def test_bad_interface_args_are_a_config_error_naming_the_argument(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    component = Component("ecu_brake", "canbus", tuple(args), position=3)
    with pytest.raises(ConfigError) as caught:
        load(component, tmp_path)
    message = caught.value.message
    assert message.startswith(f"ecu_brake[3] (interface canbus): invalid interface_args {args}: ")
    assert expected in message
    assert "\n" not in message


def link_args(link: LinkSettings) -> list[str]:
    args = [
        f"--addressing={link.addressing}",
        f"--tx-id={link.tx_id:#x}",
        f"--rx-id={link.rx_id:#x}",
    ]
    for name in ("target_address", "source_address", "address_extension", "padding"):
        value = getattr(link, name)
        if value is not None:
            args.append(f"--{name.replace('_', '-')}={value:#x}")
    if link.fd:
        args.append("--fd")
    return args


VARIANTS = {
    "normal-29": LinkSettings(addressing="normal-29", tx_id=0x18DA10F1, rx_id=0x18DAF110),
    "normal-fixed-29": LinkSettings(addressing="normal-fixed-29", target_address=0x10, source_address=0xF1),
    "extended": LinkSettings(addressing="extended", target_address=0x10, source_address=0xF1),
    "mixed-29": LinkSettings(
        addressing="mixed-29", target_address=0x10, source_address=0xF1, address_extension=0x55
    ),
    "fd-padded": LinkSettings(fd=True, padding=0xAA),
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_link_variants_reach_the_ecu(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], variant: str
) -> None:
    link = VARIANTS[variant]
    ecu = start_ecu(link=replace(link, interface="virtual", channel=f"variant-{variant}"))
    h = harness(ecu, *link_args(link))
    assert h.query("identity") == SERIAL
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


def test_an_update_over_extended_addressing_survives_a_dropped_frame(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # the fault has to find the ISO-TP header behind the address byte
    link = VARIANTS["extended"]
    ecu = start_ecu(
        banks=2,
        faults=("drop-frames=1",),
        link=replace(link, interface="virtual", channel="extended-drop"),
    )
    outcome = harness(ecu, "--banks=2", *link_args(link)).deploy(b"\x5a" * 9000, "brake-2.1.0")
    assert outcome.failure is None
    assert ecu.ecu.stats["frames_dropped"] == 1
    assert ecu.layout().banks[1].version == "brake-2.1.0"


def test_the_dids_are_configurable(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    config = EcuConfig(version_did=0xF195, serial_did=0xF18A, erase_time=QUICK_ECU.erase_time)
    ecu = start_ecu(config=config)
    h = harness(ecu, "--version-did=0xF195", "--serial-did=0xF18A")
    assert h.query("identity") == SERIAL
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}
    with pytest.raises(
        InterfaceError,
        match=r"ReadDataByIdentifier 0xf189 \(0x22\) failed: the ECU "
        r"answered NRC 0x31 RequestOutOfRange",
    ):
        harness(ecu).query("provides")


def test_a_bus_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    component = Component(
        "ecu_brake", "canbus", ("--interface=remote", f"--channel=127.0.0.1:{port}")
    )
    harness = Harness(component, tmp_path)
    with pytest.raises(InterfaceError) as caught:
        harness.query("identity")
    assert caught.value.message.startswith(
        f"ecu_brake[0] (interface canbus): cannot open the CAN bus (interface remote, channel "
        f"127.0.0.1:{port}, tx 0x7e0 / rx 0x7e8): "
    )


CLI = Path(sys.executable).with_name("mender-orchestrator")


@pytest.mark.skipif(not CLI.exists(), reason="needs the mender-orchestrator command")
@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--p2-timeout=inf", "argument --p2-timeout: expected a number of seconds above 0 and at most 86400, got 'inf'"),
        ("--tx-id=0xZZ", "argument --tx-id: expected an integer (decimal or 0x-prefixed hex), got '0xZZ'"),
    ],
)  # fmt: skip
def test_the_command_line_reports_a_bad_argument_without_a_traceback(
    tmp_path: Path, arg: str, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MENDER_ORCHESTRATOR_")}
    for name, sub in (("CONF_DIR", "etc"), ("DATA_DIR", "usr-share"), ("DATASTORE_DIR", "var")):
        (tmp_path / sub).mkdir()
        env[f"MENDER_ORCHESTRATOR_{name}"] = str(tmp_path / sub)
    (tmp_path / "var" / "topology.yaml").write_text(
        'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "car"\ncomponents:\n'
        "  - component_type: ecu_brake\n    interface: canbus\n"
        f'    interface_args: ["--interface=virtual", "--channel=nobody", "{arg}"]\n'
    )

    result = subprocess.run(
        [str(CLI), "show-provides"], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip

    assert result.returncode != 0
    assert "ecu_brake[0] (interface canbus): invalid interface_args " in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (LinkSettings(), "interface socketcan, channel can0, tx 0x7e0 / rx 0x7e8"),
        (VARIANTS["extended"], "interface socketcan, channel can0, extended addressing, tx 0x7e0 / rx 0x7e8"),
        # these modes build the identifiers from the addresses, so those are what to look at
        (VARIANTS["normal-fixed-29"], "interface socketcan, channel can0, normal-fixed-29 addressing, target 0x10 / source 0xf1"),
        (VARIANTS["mixed-29"], "interface socketcan, channel can0, mixed-29 addressing, target 0x10 / source 0xf1"),
    ],
)  # fmt: skip
def test_messages_describe_the_link_by_what_identifies_the_ecu(
    link: LinkSettings, expected: str
) -> None:
    assert link.describe() == expected
