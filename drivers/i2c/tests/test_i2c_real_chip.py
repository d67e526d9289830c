"""The i2c driver against what real STM32s do (issue 14): bootloader v1.2 and its Get
Checksum, Get replies of another length, applications that must keep running during queries
or that answer at the bootloader's address, readout protection, rollback by reinstalling the
previous Artifact, and power cuts at every step of an install."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from i2c_helpers import (
    NORMAL_PATH,
    ROLLBACK_AFTER_INSTALL,
    Runner,
    Sim,
    artifact_for,
    component_args,
    fast_chip,
    make_image,
)
from orchestrator_core.context import Component, InterfaceContext
from orchestrator_core.errors import InterfaceError
from orchestrator_core.hookspecs import hookimpl
from test_i2c_driver import VERSION_KEY, BoardReset, WireRecorder

from mender_orchestrator_i2c import protocol
from mender_orchestrator_i2c.driver import bootable
from mender_orchestrator_i2c.record import VersionRecord
from mender_orchestrator_i2c.settings import Settings
from mender_orchestrator_i2c.simulator import Device, side_file

GET_CHECKSUM = bytes([0xA1, 0x5E])
READ_MEMORY = bytes([0x11, 0xEE])


class ApplicationAnswers:
    """A vendor plugin that asks the running firmware over its own protocol (here: it knows
    what the simulated application would say)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.calls = 0

    @hookimpl
    def i2c_query_application(
        self, ctx: InterfaceContext, bus: Any, address: int
    ) -> dict[str, str]:
        self.calls += 1
        return {"version": self.version, "pid": "460", "uid": "00112233445566778899aabb"}


class NrstWired:
    """A board whose NRST the host drives (BOOT0 low): reboots by reset, not Go."""

    def __init__(self) -> None:
        self.resets = 0

    @hookimpl
    def i2c_reset_mcu(self, ctx: InterfaceContext, bus: Any, address: int) -> bool:
        self.resets += 1
        getattr(bus, "inner", bus).reset_to_application()  # the simulator, wrapped or not
        return True


def test_bootloader_v12_get_reply_is_read_at_its_length_and_checksums_verify(
    sim: Sim, runner_for: Any
) -> None:
    sim.chip(bootloader_version="0x12")
    recorder = WireRecorder()
    runner = runner_for(sim, plugins=[recorder])
    image = make_image(9001, seed=2)
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.failure is None, outcome.failure
    assert outcome.states == NORMAL_PATH
    replies = [data for kind, data in recorder.transfers if kind == "r" and len(data) > 5]
    get_replies = [data for data in replies if data[:2] == bytes([0x12, 0x12])]
    assert get_replies and all(len(reply) == 20 for reply in get_replies)  # 18 commands
    assert get_replies[0].endswith(bytes([0xA1]))
    writes = recorder.writes()
    assert writes.count(GET_CHECKSUM) >= 11  # each page written, then the image after the reboot
    # no page is read back: only the backup of this first deployment (64 reads of 256
    # bytes), the protection probes, the vector table and version records
    reads = [writes[i + 1] for i, data in enumerate(writes) if data == READ_MEMORY]
    assert len(reads) <= 64 + 8
    assert sim.flash()[: len(image)] == image
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}


def test_a_get_reply_longer_than_the_version_lists_is_resynchronised(
    sim: Sim, runner_for: Any
) -> None:
    sim.chip(extra_commands=["0x50"])  # a v1.1 ROM listing one command more than AN4221's
    recorder = WireRecorder()
    image = make_image(3000, seed=3)
    outcome = runner_for(sim, plugins=[recorder]).deploy(image, artifact_for(image, "1.0.0"))
    assert outcome.failure is None, outcome.failure
    writes = recorder.writes()
    assert bytes([0xFF, 0xFF]) in writes  # the invalid command that puts it back in step
    replies = [data for kind, data in recorder.transfers if kind == "r" and data[:1] == b"\x12"]
    assert {len(reply) for reply in replies} == {19, 20}  # read short once, then in full
    assert sim.flash()[: len(image)] == image


def test_queries_leave_a_running_application_alone(sim: Sim, runner_for: Any) -> None:
    sim.chip(application_answers=True)
    sim.install_factory(make_image(6000, seed=1), "1.0.0", mode="application")
    app = ApplicationAnswers("1.0.0")
    runner = runner_for(sim, plugins=[app])
    for _ in range(3):  # an inventory poll, again and again
        assert runner.query("identity") == "stm32-460-00112233445566778899aabb"
        assert runner.query("provides") == {VERSION_KEY: "1.0.0"}
        assert runner.query("inventory")[:3] == [
            ("i2c_bus", f"sim:{sim.path}"),
            ("i2c_address", "0x48"),
            ("stm32_pid", "0x460"),
        ]
    assert app.calls > 0
    state = sim.state()
    assert (state["mode"], state["resets"], state["last_go"]) == ("application", 0, None)


def test_queries_without_a_hook_answer_from_the_last_install(sim: Sim, runner_for: Any) -> None:
    runner = runner_for(sim)
    image = make_image(3000, seed=3)
    assert runner.deploy(image, artifact_for(image, "3.0.0")).failure is None
    before = sim.state()
    assert before["mode"] == "application"
    assert runner.query("provides") == {VERSION_KEY: "3.0.0"}
    assert ("stm32_bootloader_version", "1.1") in runner.query("inventory")
    assert runner.query("identity") == "stm32-460-00112233445566778899aabb"
    assert sim.state() == before  # no reset, no Go


def test_an_application_answering_at_the_bootloader_address_does_not_block_entry(
    sim: Sim, runner_for: Any
) -> None:
    sim.chip(application_answers=True)
    sim.install_factory(make_image(6000, seed=1), "1.0.0", mode="application")
    board = BoardReset()
    runner = runner_for(sim, plugins=[WireRecorder(resettable=False), board])
    image = make_image(3000, seed=3)
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.failure is None, outcome.failure
    assert board.calls  # the application's answer was told from the bootloader's
    assert sim.flash()[: len(image)] == image
    assert sim.state()["mode"] == "application"


def _protect(sim: Sim) -> None:
    side = sim.side()
    side["state"]["rdp_level"] = 1
    side_file(sim.path).write_text(json.dumps(side))


def test_readout_protection_is_refused_by_default_with_the_way_out(
    sim: Sim, runner_for: Any
) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    _protect(sim)
    image = make_image(3000, seed=3)
    # NRST wired: under readout protection only a reset restarts the application
    outcome = runner_for(sim, plugins=[NrstWired()]).deploy(image, artifact_for(image, "2.0.0"))
    assert "the MCU has readout protection (level 1)" in str(outcome.failure)
    assert "--readout-protection=cycle" in str(outcome.failure)
    assert "mass-erases the whole flash" in str(outcome.failure)
    assert outcome.rollback_errors == []
    assert sim.flash() == before


def test_readout_protection_cycle_installs_and_rolls_back_by_reinstalling(
    sim: Sim, runner_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim.chip(bootloader_version="0x12")
    nrst = NrstWired()
    runner = runner_for(sim, "--readout-protection=cycle", plugins=[WireRecorder(), nrst])
    first = make_image(3000, seed=3)
    with caplog.at_level(logging.WARNING):
        _protect(sim)
        outcome = runner.deploy(first, artifact_for(first, "1.0.0"))
    assert outcome.failure is None, outcome.failure
    assert "no rollback possible for this install" in caplog.text  # first, and protected
    assert sim.state()["rdp_level"] == 1  # set again
    assert sim.state()["mode"] == "application"  # started by NRST: Go is refused under RDP
    assert nrst.resets == 1
    flash = sim.flash()
    assert flash[: len(first)] == first

    sim.faults({"kind": "nack", "command": "write", "page": 2})
    second = make_image(5000, seed=4)
    outcome = runner.deploy(second, artifact_for(second, "2.0.0"))
    assert outcome.states == ROLLBACK_AFTER_INSTALL
    assert outcome.rollback_errors == [] and not outcome.inconsistent
    assert sim.flash()[: len(first)] == first  # the previous Artifact, written again
    assert sim.state()["rdp_level"] == 1
    assert sim.state()["mode"] == "application"
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


def test_rollback_reinstalls_the_previous_artifact_without_reading_the_flash(
    sim: Sim, runner_for: Any
) -> None:
    sim.chip(bootloader_version="0x12")
    recorder = WireRecorder()
    runner = runner_for(sim, plugins=[recorder])
    first = make_image(6000, seed=1)
    assert runner.deploy(first, artifact_for(first, "1.0.0")).failure is None
    recorder.transfers.clear()
    sim.faults({"kind": "nack", "command": "write", "page": 3})
    second = make_image(9001, seed=2)
    outcome = runner.deploy(second, artifact_for(second, "2.0.0"))
    assert outcome.states == ROLLBACK_AFTER_INSTALL
    assert outcome.rollback_errors == [] and not outcome.inconsistent
    writes = recorder.writes()
    reads = [writes[i + 1] for i, data in enumerate(writes) if data == READ_MEMORY]
    # version records, protection probes and vector tables; never the area's pages
    assert len(reads) < 16
    assert sim.flash()[: len(first)] == first
    assert sim.record() == VersionRecord.for_image("1.0.0", first)
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


CUTS = [
    *({"kind": "power_loss", "command": "erase", "after_pages": n} for n in range(5)),
    *({"kind": "power_loss", "command": "write", "page": p} for p in (0, 1, 2, 15)),
    *({"kind": "power_loss", "command": "write", "page": 1, "skip": 2, "after_bytes": 64},),
    # the last write of page 0, its 8-byte vector table: cut after the stack pointer
    *({"kind": "power_loss", "command": "write", "page": 0, "skip": 4, "after_bytes": 4},),
]


@pytest.mark.parametrize("cut", CUTS, ids=lambda cut: "-".join(f"{v}" for v in cut.values()))
def test_a_power_cut_never_leaves_a_bootable_partial_image(
    tmp_path: Path, runner_for: Any, cut: dict[str, Any]
) -> None:
    """The flash as the cut leaves it, before any rollback: page 0 (the vector table) is
    erased first and written after the whole body, the record after it, so at every point
    either Go finds no vector table or a whole image (old or new) is in place."""
    sim = Sim(tmp_path / "stm32.bin")
    Device.create(sim.path, fast_chip())
    old = make_image(2500, seed=1)
    sim.install_factory(old, "1.0.0")
    new = make_image(3000, seed=2)
    sim.faults(cut)
    runner = runner_for(sim)
    driver = runner.driver()
    work = tmp_path / "work"
    (work / "files").mkdir(parents=True)
    (work / "files" / "fw.bin").write_bytes(new)
    ctx = runner.ctx(driver, work_dir=work, artifact=artifact_for(new, "2.0.0", "fw.bin"))
    with pytest.raises(InterfaceError, match="no device answers"):
        driver.run_state("artifact_install", ctx)
    assert sim.side()["faults"] == []  # the cut happened
    flash = Device.load(sim.path).flash
    settings = Settings(bus="sim:x", address=0x48, flash_size=16 * 1024, page_size=1024)
    if bootable(bytes(flash[:8]), settings):
        assert flash[: len(old)] == old or flash[: len(new)] == new
    record = sim.record()
    if record is not None:
        assert record == VersionRecord.for_image("1.0.0", old) and flash[: len(old)] == old


F4_SECTORS = [16 * 1024] * 4 + [64 * 1024, 128 * 1024]


def _f4(tmp_path: Path) -> Sim:
    """An STM32F401xC (product ID 0x423): 256 KiB in sectors of 16, 64 and 128 KiB."""
    sim = Sim(tmp_path / "f407.bin")
    Device.create(sim.path, fast_chip(pid=0x423, flash_size=256 * 1024, sectors=F4_SECTORS))
    return sim


def _f4_runner(sim: Sim, tmp_path: Path, *extra: str, plugins: Any = ()) -> Runner:
    # no --page-size: the driver takes the part's sectors from its family table
    args = [a for a in component_args(sim, "--flash-size=128K", *extra) if a != "--page-size=1K"]
    component = Component("engine", "i2c", tuple(args))
    return Runner(component, tmp_path / "data", tmp_path / "work", plugins)


def test_sectors_of_an_f4_are_erased_by_number_and_the_record_has_its_own(
    tmp_path: Path,
) -> None:
    sim = _f4(tmp_path)
    device = sim.device()  # a factory image in sectors 0 and 1, its record in sector 4
    factory = make_image(20 * 1024, seed=6)
    device.flash[: len(factory)] = factory
    record = VersionRecord.for_image("0.9.0", factory).encode()
    device.flash[64 * 1024 : 64 * 1024 + len(record)] = record
    device.save_flash()
    recorder = WireRecorder()
    runner = _f4_runner(sim, tmp_path, plugins=[recorder])
    assert runner.query("provides") == {VERSION_KEY: "0.9.0"}  # found at 0x08010000
    image = make_image(40 * 1024, seed=7)  # sectors 0, 1 and 2
    outcome = runner.deploy(image, artifact_for(image, "1.0.0"))
    assert outcome.failure is None, outcome.failure
    writes = recorder.writes()
    erase = writes.index(bytes([0x45, 0xBA]))
    # the record's sector (4, the area's last: 0x08010000) first, then the vector table's;
    # sector 2 was blank, sector 3 is neither needed nor used
    assert writes[erase + 1] == bytes([0x00, 0x02, 0x02])
    assert writes[erase + 2][:-1] == bytes([0, 4, 0, 0, 0, 1])
    flash = sim.flash()
    assert flash[: len(image)] == image
    record_at = 64 * 1024
    record = VersionRecord.for_image("1.0.0", image).encode()
    assert flash[record_at : record_at + len(record)] == record
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--flash-size=100K",), "must start and end on the STM32F401xB/C's erase-unit"),
        (("--page-size=2K",), "has sectors of different sizes (4 x 16 KiB, 1 x 64 KiB, 1 x 128"),
        (("--version-record=0x08006000",), "expected the start of one of the area's erase units"),
    ],
)
def test_an_area_that_does_not_fit_the_sectors_is_named(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    sim = _f4(tmp_path)
    image = make_image(3000, seed=3)
    outcome = _f4_runner(sim, tmp_path, *extra).deploy(image, artifact_for(image, "1.0.0"))
    assert message in str(outcome.failure)
    assert outcome.rollback_errors == []
    assert sim.flash() == b"\xff" * (256 * 1024)


def test_nrst_gpio_without_libgpiod_is_a_clear_error(sim: Sim, runner_for: Any) -> None:
    try:
        import gpiod  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("libgpiod's bindings are installed: the test would drive a real GPIO")
    image = make_image(3000, seed=3)
    runner = runner_for(sim, "--nrst-gpio=/dev/gpiochip0:17")
    outcome = runner.deploy(image, artifact_for(image, "1.0.0"))
    assert "--nrst-gpio needs libgpiod's Python bindings" in str(outcome.failure)
    assert outcome.states[:3] == ["download", "artifact_install", "artifact_reboot"]


def test_a_failure_after_protection_was_set_again_rolls_back_through_it(
    sim: Sim, runner_for: Any
) -> None:
    sim.chip(bootloader_version="0x12", application_answers=True)
    app = ApplicationAnswers("1.0.0")  # the firmware that runs keeps saying 1.0.0
    runner = runner_for(
        sim, "--readout-protection=cycle", plugins=[WireRecorder(), NrstWired(), app]
    )
    first = make_image(3000, seed=3)
    _protect(sim)
    assert runner.deploy(first, artifact_for(first, "1.0.0")).failure is None
    second = make_image(5000, seed=4)
    outcome = runner.deploy(second, artifact_for(second, "2.0.0"))
    assert "the application reports version '1.0.0', expected '2.0.0'" in str(outcome.failure)
    assert outcome.states[:4] == ["download", "artifact_install", "artifact_reboot",
                                  "artifact_verify_reboot"]  # fmt: skip
    assert outcome.rollback_errors == [] and not outcome.inconsistent
    state = sim.state()
    assert (state["rdp_level"], state["mode"]) == (1, "application")
    assert sim.flash()[: len(first)] == first


@pytest.mark.parametrize("unprotect", [False, True])
def test_write_protected_pages_are_named_or_unprotected(
    sim: Sim, runner_for: Any, unprotect: bool
) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    side = sim.side()
    side["state"]["wrp_pages"] = [1]
    side_file(sim.path).write_text(json.dumps(side))
    extra = ("--write-unprotect=yes",) if unprotect else ()
    image = make_image(3000, seed=3)
    outcome = runner_for(sim, *extra).deploy(image, artifact_for(image, "2.0.0"))
    if unprotect:
        assert outcome.failure is None, outcome.failure
        assert sim.state()["wrp_pages"] == []  # write protection stays off
        assert sim.flash()[: len(image)] == image
    else:
        assert "of page(s) 15, 0, 1, 2, 3, 4, 5: the bootloader answered NACK (a write-" in (
            str(outcome.failure)
        )
        assert "--write-unprotect=yes removes write protection" in str(outcome.failure)
        assert outcome.rollback_errors == []
        assert sim.flash() == before  # the erase was refused as a whole


def test_a_get_reply_shorter_than_expected_is_resynchronised(
    sim: Sim, runner_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the driver expects v1.2's 18 commands from this v1.1 ROM, as it does for a version it
    # does not know: it reads past the reply, the chip holds the clock, the adapter gives up
    table = dict(protocol.COMMANDS_BY_VERSION)
    monkeypatch.setattr(protocol, "COMMANDS_BY_VERSION", {**table, 0x11: table[0x12]})
    recorder = WireRecorder()
    image = make_image(3000, seed=3)
    outcome = runner_for(sim, plugins=[recorder]).deploy(image, artifact_for(image, "1.0.0"))
    assert outcome.failure is None, outcome.failure
    assert bytes([0xFF, 0xFF]) in recorder.writes()
    replies = [data for kind, data in recorder.transfers if kind == "r" and data[:2] == b"\x11\x11"]
    assert {len(reply) for reply in replies} == {2, 19}  # its length learnt, then read in full
    assert sim.flash()[: len(image)] == image


def test_the_identity_once_given_stays_when_more_becomes_known(sim: Sim, runner_for: Any) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0", mode="application")
    runner = runner_for(sim, plugins=[WireRecorder(resettable=False), BoardReset()])
    first = runner.query("identity")  # the application runs: no part number, no unique ID
    assert first == "stm32-sim-stm32.bin-0x48"
    assert runner.query("provides") == {VERSION_KEY: "unknown"}
    image = make_image(3000, seed=3)
    assert runner.deploy(image, artifact_for(image, "2.0.0")).failure is None
    assert runner.query("identity") == first  # it names the Component's directories
    assert runner.query("inventory")[2:] == [  # learnt at the install
        ("stm32_pid", "0x460"),
        ("stm32_bootloader_version", "1.1"),
    ]
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}
