"""The ``i2c`` driver through the engine's hook path, against the simulated STM32."""

from __future__ import annotations

import logging
import operator
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from i2c_helpers import (
    FLASH_BASE,
    NORMAL_PATH,
    RECORD_AT,
    ROLLBACK_AFTER_INSTALL,
    Sim,
    artifact_for,
    make_image,
)
from orchestrator_core import drivers
from orchestrator_core.context import Component, InterfaceContext
from orchestrator_core.errors import InterfaceError, InterfaceTimeout
from orchestrator_core.hookspecs import hookimpl

from mender_orchestrator_i2c.record import VersionRecord
from mender_orchestrator_i2c.simulator import Device, SimulatedBus

VERSION_KEY = "rootfs-image.i2c.version"


class RecordingBus:
    """Wraps the simulator and keeps every transfer: ("w" | "r", bytes)."""

    def __init__(self, inner: SimulatedBus, transfers: list[tuple[str, bytes]]) -> None:
        self.inner = inner
        self.transfers = transfers

    def i2c_rdwr(self, *msgs: Any) -> None:
        self.inner.i2c_rdwr(*msgs)
        for msg in msgs:
            self.transfers.append(("r" if msg.flags & 1 else "w", bytes(msg)))

    def close(self) -> None:
        self.inner.close()


class ResettableRecordingBus(RecordingBus):
    def reset_to_bootloader(self) -> None:
        self.inner.reset_to_bootloader()


class WireRecorder:
    """A vendor-style plugin supplying the bus through the driver's ``i2c_open_bus`` hook."""

    def __init__(self, resettable: bool = True) -> None:
        self.transfers: list[tuple[str, bytes]] = []
        self.resettable = resettable

    @hookimpl
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> RecordingBus:
        kind = ResettableRecordingBus if self.resettable else RecordingBus
        return kind(SimulatedBus(Path(bus.removeprefix("sim:"))), self.transfers)

    def writes(self) -> list[bytes]:
        return [data for kind, data in self.transfers if kind == "w"]


def checksum(data: bytes) -> int:
    return reduce(operator.xor, data, 0)


def test_driver_resolves_through_its_entry_point(tmp_path: Path) -> None:
    found = drivers.resolve("i2c", tmp_path)
    assert (found.kind, found.target) == ("driver", "mender_orchestrator_i2c.driver:I2CDriver")


def test_update_writes_image_and_record_then_starts_the_application(
    sim: Sim, runner_for: Any, tmp_path: Path
) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0")
    runner = runner_for(sim)
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}
    assert sim.state()["mode"] == "bootloader"  # the query left the MCU as it found it

    image = make_image(9001, seed=2)
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))

    assert outcome.failure is None, outcome.failure
    assert outcome.states == NORMAL_PATH
    flash = sim.flash()
    assert flash[: len(image)] == image
    assert flash[len(image) : RECORD_AT - FLASH_BASE] == b"\xff" * (
        RECORD_AT - FLASH_BASE - len(image)
    )
    assert sim.record() == VersionRecord.for_image("2.0.0", image)
    assert sim.state()["mode"] == "application"
    assert sim.state()["last_go"] == "0x08000000"
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}
    assert not (tmp_path / "work" / "tmp" / "i2c-driver").exists()  # Cleanup removed it


def test_blank_device_reports_unknown_and_takes_a_first_image(sim: Sim, runner_for: Any) -> None:
    runner = runner_for(sim)
    assert runner.query("provides") == {VERSION_KEY: "unknown"}
    image = make_image(3000, seed=3)
    outcome = runner.deploy(image, artifact_for(image, "1.0.0"))
    assert outcome.failure is None, outcome.failure
    assert sim.flash()[: len(image)] == image
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


def test_identity_is_part_number_and_unique_id(sim: Sim, runner_for: Any) -> None:
    assert runner_for(sim).query("identity") == "stm32-460-00112233445566778899aabb"


def test_identity_without_unique_id_names_bus_and_address(sim: Sim, tmp_path: Path) -> None:
    component = Component(
        "seat_heating", "i2c", (f"--bus=sim:{sim.path}", "--address=0x48", "--flash-size=16K")
    )
    driver = drivers.load(component, tmp_path)
    ctx = driver.context(log=logging.getLogger("t"), timeout_seconds=10)
    assert driver.identity(ctx) == "stm32-460-sim-stm32.bin-0x48"


def test_inventory_reports_part_and_bootloader(sim: Sim, runner_for: Any) -> None:
    runner = runner_for(sim)
    runner.query("identity")  # found in its bootloader: the driver records what it read
    assert runner.query("inventory") == [
        ("i2c_bus", f"sim:{sim.path}"),
        ("i2c_address", "0x48"),
        ("stm32_pid", "0x460"),
        ("stm32_bootloader_version", "1.1"),
    ]


def test_frames_on_the_wire_follow_an4221(sim: Sim, runner_for: Any) -> None:
    sim.install_factory(make_image(2100, seed=1), "1.0.0")
    recorder = WireRecorder()
    # a slow first write makes the chip answer BUSY, which the driver must poll through
    sim.faults({"kind": "busy", "command": "write", "page": 0, "seconds": 0.2})
    image = make_image(601, seed=4)
    outcome = runner_for(sim, plugins=[recorder]).deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.failure is None, outcome.failure

    writes = recorder.writes()
    assert writes[0] == bytes([0x01, 0xFE])  # Get Version opens every session
    assert writes[1] == bytes([0x00, 0xFF])  # then Get
    erase = writes.index(bytes([0x45, 0xBA]))  # no-stretch Erase of 4 pages, the record's first
    assert writes[erase + 1] == bytes([0x00, 0x03, 0x03])
    assert writes[erase + 2] == bytes([0x00, 0x0F, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x0C])
    first_write = writes.index(bytes([0x32, 0xCD]))  # no-stretch Write Memory
    # the vector table (8 bytes) is held back: the page is written from byte 8 on
    assert writes[first_write + 1] == bytes([0x08, 0x00, 0x00, 0x08, 0x00])
    frame = bytes([247]) + image[8:256]
    assert writes[first_write + 2] == frame + bytes([checksum(frame)])
    # the last 89 bytes are padded to a whole word with 0xFF
    tail = image[512:] + b"\xff" * 3
    assert image[-1] != 0xFF
    frame = bytes([len(tail) - 1]) + tail
    tail_at = writes.index(frame + bytes([checksum(frame)]))
    vectors = bytes([7]) + image[:8]
    vectors_at = writes.index(vectors + bytes([checksum(vectors)]))
    assert writes[vectors_at - 1] == bytes([0x08, 0x00, 0x00, 0x00, 0x08])
    assert tail_at < vectors_at  # and written last

    position = recorder.transfers.index(("w", writes[first_write + 2]))
    answers = []
    for kind, data in recorder.transfers[position + 1 :]:
        assert kind == "r"
        answers.append(data[0])
        if data[0] != 0x76:
            break
    assert answers[0] == 0x76 and answers[-1] == 0x79 and set(answers[1:-1]) <= {0x76}
    assert writes.count(bytes([0x31, 0xCE])) == 0 and writes.count(bytes([0x44, 0xBB])) == 0


def test_bootloader_v10_is_driven_with_clock_stretching_commands(sim: Sim, runner_for: Any) -> None:
    sim.chip(bootloader_version="0x10")
    sim.install_factory(make_image(2100, seed=5), "1.0.0")
    recorder = WireRecorder()
    image = make_image(2500, seed=6)
    outcome = runner_for(sim, plugins=[recorder]).deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.failure is None, outcome.failure
    writes = recorder.writes()
    assert bytes([0x31, 0xCE]) in writes and bytes([0x32, 0xCD]) not in writes
    erases = [i for i, data in enumerate(writes) if data == bytes([0x44, 0xBB])]
    assert len(erases) == 4  # one page per stretching Erase: record page + pages 0..2
    assert all(writes[i + 1] == bytes([0, 0, 0]) for i in erases)
    assert sim.flash()[: len(image)] == image
    assert runner_for(sim).query("provides") == {VERSION_KEY: "2.0.0"}


def test_no_stretch_required_but_not_offered_is_a_clear_error(sim: Sim, runner_for: Any) -> None:
    sim.chip(bootloader_version="0x10")
    with pytest.raises(
        InterfaceError, match=r"--no-stretch=yes but bootloader v1\.0 does not offer"
    ):
        runner_for(sim, "--no-stretch=yes").query("provides")  # the MCU waits in its bootloader


FAULTS = [
    pytest.param(
        {"kind": "nack", "command": "write", "page": 3},
        "Write Memory (0x32) of 256 bytes at 0x08000c00: the bootloader answered NACK",
        id="nack-on-write",
    ),
    pytest.param(
        {"kind": "nack", "command": "erase", "page": 2},
        "Erase (0x45) of page(s) 15, 0, 1, 2, 3, 4, 5: the bootloader answered NACK",
        id="nack-on-erase",
    ),
    pytest.param(
        {"kind": "busy", "command": "erase", "seconds": 5},
        "Erase (0x45) of page(s) 15, 0, 1, 2, 3, 4, 5: still BUSY after 0.3 s",
        id="busy-storm-on-erase",
    ),
    pytest.param(
        {"kind": "busy", "command": "write", "page": 4, "skip": 2, "seconds": 5},
        "Write Memory (0x32) of 256 bytes at 0x08001200: still BUSY after 0.3 s",
        id="busy-storm-on-write",
    ),
    pytest.param(
        {"kind": "bit_flip", "page": 1, "offset": 10, "bit": 3, "times": 5},
        "page 1 read back wrong at 0x0800040a: wrote 0x",
        id="bit-flip-on-write",
    ),
    pytest.param(
        {"kind": "power_loss", "command": "write", "page": 5, "after_bytes": 128},
        "Write Memory (0x32) of 256 bytes at 0x08001400: I2C transfer failed: "
        "no device answers (simulated STM32 is unpowered) (ENXIO)",
        id="power-loss-mid-write",
    ),
    pytest.param(
        {"kind": "power_loss", "command": "erase", "after_pages": 3, "off_transactions": 5},
        "Erase (0x45) of page(s) 15, 0, 1, 2, 3, 4, 5: I2C transfer failed",
        id="power-loss-mid-erase",
    ),
]


@pytest.mark.parametrize(("fault", "message"), FAULTS)
def test_injected_fault_fails_the_install_and_is_rolled_back(
    sim: Sim, runner_for: Any, fault: dict[str, Any], message: str
) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults(fault)
    runner = runner_for(sim, "--busy-timeout=0.3")
    image = make_image(9001, seed=2)

    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))

    assert outcome.states == ROLLBACK_AFTER_INSTALL
    assert isinstance(outcome.failure, InterfaceError)
    assert str(outcome.failure).startswith("seat_heating/stm32-460-00112233445566778899aabb")
    assert message in str(outcome.failure)
    assert outcome.rollback_errors == []
    assert not outcome.inconsistent
    assert sim.side()["faults"] == []  # the fault did fire
    assert sim.flash() == before  # verified rollback: every byte as it was
    assert sim.state()["mode"] == "application"  # and the old application runs again
    assert runner.query("provides") == {VERSION_KEY: "1.0.0"}


def test_rollback_reconnects_once_power_is_back(sim: Sim, runner_for: Any) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    # four bus transfers fail after the cut: the rollback's first attempt to reach the
    # bootloader meets a dead bus and must keep trying until power returns
    sim.faults({"kind": "power_loss", "command": "write", "page": 2, "off_transactions": 4})
    image = make_image(9001, seed=2)

    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))

    assert outcome.states == ROLLBACK_AFTER_INSTALL
    assert "Write Memory (0x32) of 256 bytes at 0x08000800: I2C transfer failed: no device " in (
        str(outcome.failure)
    )
    assert outcome.rollback_errors == []
    assert not outcome.inconsistent
    assert sim.state()["power_cycles"] == 1
    assert sim.state()["power_off_transactions"] == 0
    assert sim.flash() == before
    assert runner_for(sim).query("provides") == {VERSION_KEY: "1.0.0"}


def test_an_area_beyond_the_chips_flash_is_explained(sim: Sim, runner_for: Any) -> None:
    # the Topology says 32 KiB, the chip has 16: the version record is read past its flash
    with pytest.raises(InterfaceError) as caught:
        runner_for(sim, "--flash-size=32K").query("provides")
    assert str(caught.value).endswith(
        "Read Memory (0x11) of 223 bytes at 0x08007c00: the bootloader answered NACK (the "
        "address is outside this MCU's memory, or readout protection is on: check "
        "--flash-base, --flash-size, --version-record and --uid-address)"
    )


def test_a_single_bit_flip_is_repaired_by_rewriting_the_page(
    sim: Sim, runner_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults({"kind": "bit_flip", "page": 2, "offset": 7, "bit": 0})
    image = make_image(9001, seed=2)
    with caplog.at_level(logging.WARNING):
        outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.failure is None, outcome.failure
    assert sim.flash()[: len(image)] == image
    assert "page 2 read back wrong at 0x08000807" in caplog.text
    assert "erasing and writing it again" in caplog.text


def test_long_clock_stretch_times_out_with_a_hint(sim: Sim, runner_for: Any) -> None:
    sim.chip(bootloader_version="0x10", stretch_timeout_seconds=0.1)
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults({"kind": "busy", "command": "write", "page": 1, "seconds": 1})
    image = make_image(9001, seed=2)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.states == ROLLBACK_AFTER_INSTALL
    text = str(outcome.failure)
    assert "Write Memory (0x31) of 256 bytes at 0x08000400 (clock stretching)" in text
    assert "(ETIMEDOUT)" in text and "no-stretch commands" in text
    assert outcome.rollback_errors == []
    assert sim.flash() == before


def test_failure_before_the_flash_is_touched_leaves_it_alone(sim: Sim, runner_for: Any) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    # Identity and Provides ask Get ID once each (the MCU waits in its bootloader); the
    # install's Get ID is the third
    sim.faults({"kind": "nack", "command": "get_id", "skip": 2})
    image = make_image(9001, seed=2)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert "Get ID (0x02): the bootloader answered NACK" in str(outcome.failure)
    assert outcome.states == ROLLBACK_AFTER_INSTALL
    assert outcome.rollback_errors == []
    assert sim.flash() == before
    assert sim.state()["mode"] == "application"


class Tamper:
    """Changes a flash byte just before ArtifactVerifyReboot runs (a cell that lost its charge)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl(tryfirst=True)
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        device = Device.load(self.path)
        device.flash[100] ^= 0x01
        device.save_flash()


def test_failed_verify_reboot_rolls_back(sim: Sim, runner_for: Any) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    image = make_image(9001, seed=2)
    outcome = runner_for(sim, plugins=[Tamper(sim.path)]).deploy(
        image, artifact_for(image, "2.0.0")
    )
    assert outcome.states == [
        "download",
        "artifact_install",
        "artifact_reboot",
        "artifact_verify_reboot",
        *ROLLBACK_AFTER_INSTALL[2:],
    ]
    assert "after the reboot the flash no longer holds the image written" in str(outcome.failure)
    assert outcome.rollback_errors == []
    assert sim.flash() == before


def test_rollback_that_cannot_be_verified_is_reported(sim: Sim, runner_for: Any) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults({"kind": "nack", "command": "write", "page": 3, "times": -1})  # a dead page
    image = make_image(9001, seed=2)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert "at 0x08000c00: the bootloader answered NACK" in str(outcome.failure)
    assert outcome.inconsistent
    assert outcome.rollback_errors[0].startswith("artifact_rollback: seat_heating/")
    assert "0x08000c00: the bootloader answered NACK" in outcome.rollback_errors[0]
    verify_errors = [e for e in outcome.rollback_errors if e.startswith("artifact_verify")]
    assert len(verify_errors) == 3
    assert (
        # the vector table's page is written last, so the aborted rollback left it erased
        "the rollback did not restore the flash: it differs from the saved image from "
        "0x08000000 on" in verify_errors[0]
    )


def test_deadline_is_honoured(sim: Sim, runner_for: Any) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults({"kind": "busy", "command": "write", "page": 0, "seconds": 30})
    image = make_image(9001, seed=2)
    outcome = runner_for(sim, "--busy-timeout=60", timeout=1.5).deploy(
        image, artifact_for(image, "2.0.0")
    )
    assert isinstance(outcome.failure, InterfaceTimeout)
    assert "gave up before Write Memory (0x32) of 248 bytes at 0x08000008" in str(outcome.failure)
    assert "ran past its time limit" in str(outcome.failure)
    assert sim.flash() == before


def test_payload_with_two_files_fails_download(sim: Sim, runner_for: Any) -> None:
    image = make_image(3000, seed=1)
    artifact = artifact_for(image, "2.0.0")
    artifact = type(artifact)(**{**artifact.__dict__, "files": (("a.bin", 10), ("b.bin", 20))})
    outcome = runner_for(sim).deploy(image, artifact)
    assert outcome.states == ["download", "cleanup"]
    assert "flashes exactly one payload file; the Artifact has 2 (a.bin, b.bin)" in str(
        outcome.failure
    )


def test_payload_too_big_for_the_image_area_fails_download(sim: Sim, runner_for: Any) -> None:
    image = make_image(15 * 1024 + 1, seed=1)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert outcome.states == ["download", "cleanup"]
    assert (
        "payload firmware.bin is 15361 bytes; the image area holds 8 to 15360 bytes "
        "(0x08000000 up to the version record at 0x08003c00)"
    ) in str(outcome.failure)


def test_payload_without_vector_table_is_refused_before_flashing(sim: Sim, runner_for: Any) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    image = bytes(4096)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "2.0.0"))
    assert "does not start with a Cortex-M vector table (initial stack pointer 0x00000000" in str(
        outcome.failure
    )
    assert outcome.rollback_errors == []
    assert sim.flash() == before


def test_bus_without_reset_lines_explains_the_enter_bootloader_hook(
    sim: Sim, runner_for: Any
) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0", mode="application")
    runner = runner_for(sim, "--connect-timeout=0.2", plugins=[WireRecorder(resettable=False)])
    image = make_image(3000, seed=3)
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))
    text = str(outcome.failure)
    assert "the bootloader did not answer within" in text
    assert "install a plugin implementing the i2c_enter_bootloader hook" in text


class BoardReset:
    """A vendor plugin: its board restarts the MCU into the bootloader through GPIOs."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @hookimpl
    def i2c_enter_bootloader(self, ctx: InterfaceContext, bus: Any, address: int) -> bool:
        self.calls.append(address)
        bus.inner.reset_to_bootloader()  # what toggling BOOT0/NRST does to the simulated chip
        return True


def test_vendor_plugin_enters_the_bootloader(sim: Sim, runner_for: Any) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0", mode="application")
    board = BoardReset()
    runner = runner_for(sim, plugins=[WireRecorder(resettable=False), board])
    image = make_image(3000, seed=3)
    assert runner.deploy(image, artifact_for(image, "2.0.0")).failure is None
    assert board.calls == [0x48, 0x48]  # ArtifactInstall and ArtifactVerifyReboot; no query
    assert sim.state()["mode"] == "application"
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}


def test_a_version_too_long_for_the_record_fails_before_the_flash_is_touched(
    sim: Sim, runner_for: Any
) -> None:
    factory = make_image(6000, seed=1)
    sim.install_factory(factory, "1.0.0")
    image = make_image(9001, seed=2)
    outcome = runner_for(sim).deploy(image, artifact_for(image, "v" * 300))
    assert outcome.failure is not None
    assert "cannot record the Artifact's version 'vvv" in str(outcome.failure)
    assert sim.flash()[: len(factory)] == factory
    assert sim.record() == VersionRecord.for_image("1.0.0", factory)


def test_flashing_reports_bytes_flashed_per_page(sim: Sim, runner_for: Any) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0")
    runner = runner_for(sim)
    image = make_image(9001, seed=2)

    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))

    assert outcome.failure is None, outcome.failure
    page = runner.driver().pm.get_plugin("driver").settings.page_size
    # every page of the image differs, and the version record's page is written last
    pages = -(-len(image) // page) + 1
    total = pages * page
    assert runner.progress == [(n * page, total, "bytes flashed") for n in range(1, pages + 1)]
