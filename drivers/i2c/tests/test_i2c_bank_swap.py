"""--bank-swap on a dual-bank STM32 (G47x, BFB2): A/B installs through the real hook path
against the simulator, which boots bank 2 only when BFB2 is set and bank 2's vector table is
valid (else bank 1), and maps nothing differently for the bootloader entered by BOOT0."""

from __future__ import annotations

from typing import Any

import pytest
from i2c_helpers import (
    FLASH_BASE,
    NORMAL_PATH,
    ROLLBACK_AFTER_INSTALL,
    Sim,
    artifact_for,
    fast_chip,
    make_image,
)
from orchestrator_core.context import InterfaceContext
from orchestrator_core.hookspecs import hookimpl
from test_i2c_driver import VERSION_KEY
from test_i2c_real_chip import NrstWired

from mender_orchestrator_i2c.record import VersionRecord, decode
from mender_orchestrator_i2c.simulator import Device

K = 1024
BANK = 256 * K  # half of the G47x's 512 KiB
AREA = 16 * K  # the managed area: 8 pages of 2 KiB at the start of each bank
RECORD = AREA - 2 * K  # the area's last page
WRITE_MEMORY = (bytes([0x31, 0xCE]), bytes([0x32, 0xCD]))  # stretching, no-stretch
OPTR = (0x1FFF_7800).to_bytes(4, "big")


@pytest.fixture
def dual(tmp_path: Any) -> Sim:
    path = tmp_path / "g474.bin"
    Device.create(path, fast_chip(pid=0x469, flash_size=512 * K, page_size=2 * K, dual_bank=True))
    return Sim(path)


def bank_args(*extra: str) -> tuple[str, ...]:
    return ("--flash-size=16K", "--page-size=2K", "--bank-swap=yes", *extra)


def record_in(sim: Sim, bank: int) -> VersionRecord | None:
    at = (bank - 1) * BANK + RECORD
    return decode(sim.flash()[at : at + VersionRecord.size_limit()])


def factory(sim: Sim, image: bytes, version: str) -> None:
    device = sim.device()
    device.flash[: len(image)] = image
    record = VersionRecord.for_image(version, image).encode()
    device.flash[RECORD : RECORD + len(record)] = record
    device.save_flash()


class NewFirmwareDoesNotStart(NrstWired):
    """NRST wired; the first reset finds bank ``bank`` without a valid vector table (the
    new firmware's start-up is broken), so the dual-bank boot falls back to the other bank."""

    def __init__(self, sim: Sim, bank: int) -> None:
        super().__init__()
        self.sim, self.bank = sim, bank

    @hookimpl
    def i2c_reset_mcu(self, ctx: InterfaceContext, bus: Any, address: int) -> bool:
        if self.resets == 0:
            device = self.sim.device()
            at = (self.bank - 1) * BANK
            device.flash[at : at + 8] = b"\x00" * 8
            device.save_flash()
        return super().i2c_reset_mcu(ctx, bus, address)


def test_installs_write_the_other_bank_and_swap_with_bfb2(dual: Sim, runner_for: Any) -> None:
    v1, v2, v3 = (make_image(5000 + i, seed=i) for i in range(3))
    factory(dual, v1, "1.0.0")
    nrst = NrstWired()
    runner = runner_for(dual, *bank_args(), plugins=[nrst])

    outcome = runner.deploy(v2, artifact_for(v2, "2.0.0"))
    assert outcome.failure is None, outcome.failure
    assert outcome.states == NORMAL_PATH
    flash = dual.flash()
    assert flash[: len(v1)] == v1 and record_in(dual, 1) == VersionRecord.for_image("1.0.0", v1)
    assert flash[BANK : BANK + len(v2)] == v2  # linked for 0x08000000, stored in bank 2
    assert record_in(dual, 2) == VersionRecord.for_image("2.0.0", v2)
    state = dual.state()
    assert (state["bfb2"], state["mode"], state["running_bank"]) == (True, "application", 2)
    assert state["last_go"] is None  # started by NRST only: Go would not map bank 2
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}

    outcome = runner.deploy(v3, artifact_for(v3, "3.0.0"))
    assert outcome.failure is None, outcome.failure
    assert dual.flash()[: len(v3)] == v3  # back in bank 1, bank 2 keeps 2.0.0
    assert record_in(dual, 2) == VersionRecord.for_image("2.0.0", v2)
    state = dual.state()
    assert (state["bfb2"], state["running_bank"]) == (False, 1)
    assert runner.query("provides") == {VERSION_KEY: "3.0.0"}


def test_a_new_bank_that_does_not_boot_is_rolled_back_by_swapping_back(
    dual: Sim, runner_for: Any
) -> None:
    v1, v2 = make_image(5000, seed=1), make_image(7000, seed=2)
    factory(dual, v1, "1.0.0")
    broken = NewFirmwareDoesNotStart(dual, bank=2)
    runner = runner_for(dual, *bank_args(), plugins=[broken])

    outcome = runner.deploy(v2, artifact_for(v2, "2.0.0"))

    assert "the MCU boots bank 1, not bank 2" in str(outcome.failure)
    assert outcome.states == [
        "download", "artifact_install", "artifact_reboot", "artifact_verify_reboot",
        "artifact_rollback", "artifact_rollback_reboot", "artifact_verify_rollback_reboot",
        "artifact_failure", "cleanup",
    ]  # fmt: skip
    assert outcome.rollback_errors == [] and not outcome.inconsistent
    assert dual.flash()[: len(v1)] == v1  # never written: no backup, no previous Artifact
    state = dual.state()
    assert (state["bfb2"], state["mode"], state["running_bank"]) == (False, "application", 1)
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


def test_a_query_reads_the_record_of_the_bank_the_mcu_boots(
    dual: Sim, runner_for: Any, tmp_path: Any
) -> None:
    v1, v2 = make_image(5000, seed=1), make_image(7000, seed=2)
    factory(dual, v1, "1.0.0")
    device = dual.device()
    device.flash[BANK : BANK + len(v2)] = v2
    record = VersionRecord.for_image("2.0.0", v2).encode()
    device.flash[BANK + RECORD : BANK + RECORD + len(record)] = record
    device.state.bfb2 = True
    device.save_flash()
    device.save_side()
    # nothing recorded on the host: the MCU waits in its bootloader, so the query reads it
    assert runner_for(dual, *bank_args()).query("provides") == {VERSION_KEY: "2.0.0"}
    device = dual.device()
    device.flash[BANK : BANK + 8] = b"\xff" * 8  # bank 2 no longer boots: bank 1 does
    device.save_flash()
    (tmp_path / "other").mkdir()
    fresh = runner_for(dual, *bank_args(f"--state-dir={tmp_path / 'other'}"))
    assert fresh.query("provides") == {VERSION_KEY: "1.0.0"}


def test_an_install_that_fails_leaves_bfb2_and_the_running_bank_alone(
    dual: Sim, runner_for: Any
) -> None:
    v1, v2 = make_image(5000, seed=1), make_image(7000, seed=2)
    factory(dual, v1, "1.0.0")
    dual.faults({"kind": "nack", "command": "write", "page": 128 + 2, "times": 5})
    runner = runner_for(dual, *bank_args(), plugins=[NrstWired()])

    outcome = runner.deploy(v2, artifact_for(v2, "2.0.0"))

    assert outcome.failure is not None and outcome.states == ROLLBACK_AFTER_INSTALL
    assert outcome.rollback_errors == []
    assert dual.flash()[: len(v1)] == v1
    state = dual.state()
    assert (state["bfb2"], state["mode"], state["running_bank"]) == (False, "application", 1)


def test_the_option_word_is_written_with_its_complement(dual: Sim, runner_for: Any) -> None:
    from test_i2c_driver import WireRecorder

    factory(dual, make_image(5000, seed=1), "1.0.0")
    recorder = WireRecorder()
    v2 = make_image(6000, seed=2)
    runner = runner_for(dual, *bank_args(), plugins=[NrstWired(), recorder])
    assert runner.deploy(v2, artifact_for(v2, "2.0.0")).failure is None
    writes = recorder.writes()
    at = next(
        i for i, data in enumerate(writes) if data[:4] == OPTR and writes[i - 1] in WRITE_MEMORY
    )
    word = 0xFFEF_F8AA | 1 << 20  # as shipped (RDP level 0), BFB2 set
    block = word.to_bytes(4, "little") + (word ^ 0xFFFF_FFFF).to_bytes(4, "little")
    assert writes[at + 1][1:9] == block


def test_bank_swap_needs_nrst(dual: Sim, runner_for: Any) -> None:
    factory(dual, make_image(5000, seed=1), "1.0.0")
    v2 = make_image(6000, seed=2)
    outcome = runner_for(dual, *bank_args()).deploy(v2, artifact_for(v2, "2.0.0"))
    assert "--bank-swap=yes: the MCU must be restarted by NRST (--nrst-gpio or the " in str(
        outcome.failure
    )


def test_bank_swap_on_a_single_bank_part_is_refused_before_writing(
    sim: Sim, runner_for: Any
) -> None:
    before = sim.flash()
    image = make_image(3000, seed=3)
    runner = runner_for(sim, "--bank-swap=yes", plugins=[NrstWired()])
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))
    assert (
        "--bank-swap=yes: the STM32G07x/08x (product ID 0x460) has no bank swap the driver "
        "drives (parts with one: STM32G47x/48x, STM32L47x/48x)"
    ) in str(outcome.failure)
    assert sim.flash() == before
    assert FLASH_BASE == 0x0800_0000
