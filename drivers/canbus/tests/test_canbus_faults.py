"""Every fault the simulator injects ends in a clear failure and, where the ECU can still be
reached, a verified rollback to the bytes and version it had before."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from canbus_helpers import BANK, OLD_VERSION, SERIAL, Harness, SimEcu, pseudo_random
from orchestrator_core.errors import InterfaceError

IMAGE = pseudo_random("brake-2.0.0", 40000)  # 10 TransferData blocks of up to 4093 bytes
NEW_VERSION = "brake-2.0.0"
INSTALL_FAILED = ["download", "artifact_install", "artifact_rollback", "artifact_rollback_reboot",
                  "artifact_verify_rollback_reboot", "artifact_failure", "cleanup"]  # fmt: skip


def assert_restored(ecu: SimEcu, h: Harness, banks: int) -> None:
    layout = ecu.layout()
    assert layout.boot_bank == 0
    assert layout.banks[0].version == OLD_VERSION
    assert ecu.bank(0) == ecu.initial_image + b"\xff" * (BANK - len(ecu.initial_image))
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}
    if banks == 2:
        assert not layout.banks[1].valid


@pytest.mark.parametrize(
    ("fault", "banks", "expected"),
    [
        ("drop-frames=3", 1, [
            "TransferData (0x36) block 1 of 10, counter 0x01: no answer from the ECU",
            "(sent 3 times)"]),
        ("corrupt-block=2", 1, [
            "RoutineControl checkProgrammingDependencies (RID 0xff01) rejected the image",
            "status record 01"]),
        ("corrupt-block=7", 2, ["checkProgrammingDependencies", "status record 01"]),
        ("wrong-key", 1, [
            "SecurityAccess sendKey (0x27 0x02) failed: the ECU answered NRC 0x35 InvalidKey",
            "without a vendor plugin"]),
        ("refuse-erase", 1, [
            "RoutineControl eraseMemory (0x31 0x01 RID 0xff00) failed: the ECU answered "
            "NRC 0x22 ConditionsNotCorrect"]),
        ("fail-after=3", 1, [
            "TransferData (0x36) block 4 of 10, counter 0x04 failed: the ECU answered NRC 0x72 "
            "GeneralProgrammingFailure"]),
        ("fail-after=9", 2, ["block 10 of 10", "NRC 0x72"]),
        ("reset-mid-transfer=2", 1, [
            "TransferData (0x36) block 3 of 10, counter 0x03 failed: the ECU answered NRC 0x7f "
            "ServiceNotSupportedInActiveSession", "did it reset?"]),
        ("reset-mid-transfer=5", 2, ["block 6 of 10", "NRC 0x7f"]),
    ],
)  # fmt: skip
def test_fault_fails_clearly_and_rolls_back(
    start_ecu: Callable[..., SimEcu],
    harness: Callable[..., Harness],
    fault: str,
    banks: int,
    expected: list[str],
) -> None:
    ecu = start_ecu(banks=banks, faults=(fault,))
    h = harness(ecu, f"--banks={banks}")

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is not None
    assert outcome.failure.startswith(f"ecu_brake/{SERIAL} (interface canbus): ")
    for fragment in expected:
        assert fragment in outcome.failure
    assert outcome.states == INSTALL_FAILED
    assert outcome.rollback_verified, outcome.rollback_errors
    assert outcome.rollback_errors == []
    assert_restored(ecu, h, banks)


@pytest.mark.parametrize("fault", ["wrong-key", "refuse-erase"])
def test_a_refusal_before_erasing_leaves_the_flash_alone(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], fault: str
) -> None:
    ecu = start_ecu(faults=(fault,))
    outcome = harness(ecu).deploy(IMAGE, NEW_VERSION)
    assert outcome.rollback_verified
    assert ecu.ecu.stats["erases"] == 0  # neither the install nor the rollback erased anything
    assert ecu.ecu.stats["blocks_written"] == 0


def test_a_dropped_frame_costs_one_retry_and_the_update_still_lands(
    start_ecu: Callable[..., SimEcu],
    harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecu = start_ecu(banks=2, faults=("drop-frames=1",))
    with caplog.at_level(logging.WARNING, logger="canbus-test"):
        outcome = harness(ecu, "--banks=2").deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None
    assert ecu.ecu.stats["frames_dropped"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "canbus-test"] == [
        "TransferData (0x36) block 1 of 10, counter 0x01: no answer, sending it again"
    ]
    assert ecu.ecu.trace.count("36") == 10  # the lost attempt never reached the ECU
    assert ecu.bank(1)[: len(IMAGE)] == IMAGE
    assert ecu.layout().banks[1].version == NEW_VERSION


@pytest.mark.parametrize("blocks", [(2,), (10,), (6, 7)])
def test_late_answers_to_repeated_blocks_are_skipped(
    start_ecu: Callable[..., SimEcu],
    harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
    blocks: tuple[int, ...],
) -> None:
    # a block's first answer comes after P2 and after the answer to its repeat, when the
    # tester already waits for the answer to the next block (or to RequestTransferExit): it is
    # stale, not a wrong block sequence counter; (6, 7): both come after block 7 was repeated
    ecu = start_ecu(banks=2, faults=tuple(f"late-answer={block}" for block in blocks))
    with caplog.at_level(logging.WARNING, logger="canbus-test"):
        outcome = harness(ecu, "--banks=2").deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None
    assert ecu.ecu.stats["late_answers"] == len(blocks)
    assert ecu.ecu.stats["repeated_blocks"] == len(blocks)
    assert [r.getMessage() for r in caplog.records if r.name == "canbus-test"] == [
        f"TransferData (0x36) block {block} of 10, counter {block:#04x}: no answer, "
        "sending it again"
        for block in blocks
    ]
    assert ecu.ecu.trace.count("36") == 10 + len(blocks)  # only the late blocks went twice
    assert ecu.bank(1)[: len(IMAGE)] == IMAGE
    assert ecu.layout().banks[1].version == NEW_VERSION


def test_an_ecu_that_never_answers_fails_the_identity_query(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(faults=("never-answer",))
    with pytest.raises(InterfaceError) as caught:
        harness(ecu).query("identity")
    assert caught.value.message.startswith(
        "ecu_brake[0] (interface canbus): ReadDataByIdentifier 0xf18c (0x22): no answer from the "
        f"ECU (interface virtual, channel {ecu.link.channel}, tx 0x7e0 / rx 0x7e8)"
    )


def test_an_ecu_dead_after_its_reset_is_reported_and_cannot_be_rolled_back(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(faults=("never-answer=after-reset",))
    h = harness(ecu, "--reset-wait=0.4", "--p2-timeout=0.15")

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is not None
    assert "ReadDataByIdentifier 0xf189 (0x22): no answer from the ECU" in outcome.failure
    assert "(waited 0.4 s for the ECU to come back from its reset)" in outcome.failure
    assert not outcome.rollback_verified
    assert outcome.states.count("artifact_verify_rollback_reboot") == 4  # 1 + 3 retries
    assert outcome.rollback_errors[0].startswith(
        "artifact_rollback: ecu_brake/SIM-BRAKE-0042 (interface canbus): ReadDataByIdentifier "
        "0xf189 (0x22): no answer from the ECU"
    )
    # the flash itself holds the update: only the ECU's silence failed it
    assert ecu.layout().banks[0].version == NEW_VERSION
