"""Updates that succeed, and explicit rollbacks, through the engine's call sequence."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from canbus_helpers import (
    BANK,
    OLD_VERSION,
    SERIAL,
    Harness,
    Outcome,
    SimEcu,
    pseudo_random,
    services,
)
from orchestrator_core.context import RebootNeed
from orchestrator_core.errors import InterfaceTimeout
from orchestrator_core.hookspecs import hookimpl

from mender_orchestrator_canbus.security import simulator_key
from mender_orchestrator_canbus.simulator import EcuConfig

NEW_VERSION = "brake-2.0.0"
IMAGE = pseudo_random("brake-2.0.0", 40000)  # 10 TransferData blocks of up to 4093 bytes
INSTALL_PATH = [
    "download",
    "artifact_install",
    "artifact_reboot",
    "artifact_verify_reboot",
    "artifact_commit",
    "cleanup",
]


def padded(image: bytes) -> bytes:
    return image + b"\xff" * (BANK - len(image))


def test_single_bank_update_saves_the_bank_then_flashes_and_verifies(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu()
    h = harness(ecu)
    assert h.query("identity") == SERIAL
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}
    assert h.query("needs_artifact_reboot") is RebootNeed.YES
    assert h.query("supports_rollback") is True
    ecu.ecu.trace.clear()

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is None
    assert outcome.states == INSTALL_PATH
    assert services(ecu.ecu.trace) == [
        "22f18c", "22f189",  # Identity, Provides
        "22f189", "1001", "1003",  # install: version; pre-programming in the extended session
        "f:8582", "f:2883",  # ControlDTCSetting off, CommunicationControl off (functional)
        "1002", "2701", "2702",  # programming session, unlock
        "35", "36*17", "37",  # no previous Artifact kept: upload the 64 KiB bank for rollback
        "2ef189",  # the version, written before the erase
        "3101ff00", "34", "36*10", "37", "3101ff01",  # erase, download 40000 bytes, check
        "1101",  # ArtifactReboot
        "22f189",  # ArtifactVerifyReboot: the version, then post-programming:
        "1003", "f:2880", "f:8581", "1001", "14",  # communication and DTCs on, DTCs cleared
        "22f186",  # default session
    ]  # fmt: skip
    assert ecu.bank(0) == padded(IMAGE)
    assert ecu.layout().banks[0].version == NEW_VERSION
    assert h.query("provides") == {"rootfs-image.canbus.version": NEW_VERSION}
    assert not (h.work_dir / "tmp" / "canbus").exists()  # Cleanup removed the rollback copy


def test_dual_bank_update_leaves_the_old_bank_and_a_late_rollback_switches_back(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(banks=2)
    h = harness(ecu, "--banks=2")
    ecu.ecu.trace.clear()
    outcome = Outcome()
    h.component_id = h.query("identity")
    install(h, outcome)  # stops after ArtifactCommit, like --stop-before Cleanup

    assert services(ecu.ecu.trace)[:9] == [
        "22f18c", "22f189", "22fd00", "1001", "1003", "f:8582", "f:2883", "1002", "2701"
    ]  # fmt: skip
    assert "35" not in ecu.ecu.trace  # nothing to save: the running bank is not touched
    assert ecu.layout().boot_bank == 1
    assert ecu.bank(1) == padded(IMAGE)
    assert ecu.bank(0) == padded(ecu.initial_image)

    # another Component failed later: the whole System rolls back, committed ones too
    h.roll_back(outcome)
    assert outcome.rollback_verified, outcome.rollback_errors
    assert services(ecu.ecu.trace)[-17:] == [
        "1001", "1003", "f:8582", "f:2883", "1002", "2701", "2702",
        "3101f001",  # ArtifactRollback: select bank 0
        "1101",  # ArtifactRollbackReboot
        "22f189", "1003", "f:2880", "f:8581", "1001", "14", "22f186",  # verify, post-programming
        "22fd00",  # the bank
    ]  # fmt: skip
    assert ecu.layout().boot_bank == 0
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}
    assert ecu.bank(0) == padded(ecu.initial_image)


def install(h: Harness, outcome: Outcome) -> None:
    h.stage(IMAGE, NEW_VERSION)
    for state in (
        "artifact_install",
        "artifact_reboot",
        "artifact_verify_reboot",
        "artifact_commit",
    ):
        h.state(state, outcome)


def test_single_bank_rollback_after_commit_restores_the_previous_bytes(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu()
    h = harness(ecu)
    outcome = Outcome()
    install(h, outcome)
    assert ecu.bank(0) == padded(IMAGE)

    h.roll_back(outcome)

    assert outcome.rollback_verified, outcome.rollback_errors
    assert ecu.bank(0) == padded(ecu.initial_image)
    assert ecu.layout().banks[0].version == OLD_VERSION
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


def test_a_slow_erase_is_carried_by_response_pending(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # the erase takes longer than P2 (0.3 s): only NRC 0x78 keeps the tester waiting
    ecu = start_ecu(banks=2, config=EcuConfig(erase_time=0.8, check_time=0.01, boot_time=0.05))
    h = harness(ecu, "--banks=2")
    outcome = h.deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None
    assert ecu.ecu.stats["responses_pending"] >= 2  # erase and check each sent at least one
    assert ecu.layout().banks[1].version == NEW_VERSION


def test_the_interface_timeout_cuts_a_long_erase_short(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(banks=2, config=EcuConfig(erase_time=1.0, boot_time=0.05))
    h = harness(ecu, "--banks=2", timeout=0.6)
    outcome = Outcome()
    h.component_id = h.query("identity")
    started = time.monotonic()
    with pytest.raises(
        InterfaceTimeout, match=r"timeout expired during RoutineControl eraseMemory"
    ):
        install(h, outcome)
    assert time.monotonic() - started < 0.9
    time.sleep(0.6)  # let the ECU finish the erase it was asked for
    h.timeout = 30
    h.roll_back(outcome)
    assert outcome.rollback_verified, outcome.rollback_errors
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


class VendorKeys:
    """A vendor plugin: this ECU's secret differs from the published default."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    @hookimpl
    def canbus_security_key(self, ctx: Any, level: int, seed: bytes) -> bytes:
        self.calls.append((ctx.component.component_type, level, seed))
        return simulator_key(seed, b"WRNG")


def test_a_vendor_plugin_supplies_the_security_key(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(banks=2, faults=("wrong-key",))  # the ECU expects the "WRNG" secret
    h = harness(ecu, "--banks=2")
    vendor = VendorKeys()
    h.plugins.append(vendor)
    outcome = h.deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None
    assert [(kind, level, len(seed)) for kind, level, seed in vendor.calls] == [("ecu_brake", 1, 4)]


def test_flash_and_version_survive_a_simulator_restart(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    first = start_ecu()
    assert harness(first).deploy(IMAGE, NEW_VERSION).failure is None
    first.server.stop()
    second = start_ecu(state=first.state)
    h = harness(second)
    assert h.query("identity") == SERIAL
    assert h.query("provides") == {"rootfs-image.canbus.version": NEW_VERSION}
    assert second.bank(0) == padded(IMAGE)


def test_the_download_reports_bytes_flashed_per_block(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    h = harness(start_ecu())

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is None
    size = len(IMAGE)
    assert len(h.progress) == 10  # one per TransferData block of the download
    assert {(total, what) for _done, total, what in h.progress} == {(size, "bytes flashed")}
    done = [d for d, _total, _what in h.progress]
    assert done == sorted(done) and done[0] > 0 and done[-1] == size
