"""The simulated ESP32 on its own (the ROM loader as esptool sees it) and the driver's states
one by one against it, where the whole-deployment tests cannot reach."""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from esp32_helpers import Sim, component_args, create_sim, make_image
from esptool.cmds import detect_chip
from esptool.util import FatalError
from orchestrator_core import drivers
from orchestrator_core.context import ArtifactInfo, Component
from orchestrator_core.errors import InterfaceError, InterfaceTimeout
from orchestrator_core.testing.kit import ArtifactFactory, HooksFactory

from mender_orchestrator_esp32 import idf, slip
from mender_orchestrator_esp32.link import CHIP_NAMES
from mender_orchestrator_esp32.simulator import Device, Simulator, SimulatorError, image_chip_id
from mender_orchestrator_esp32.simulator import main as simulator_main


def test_slip_round_trip_with_both_escapes() -> None:
    packet = b"\x00\xc0\x01\xdb\x02"
    decoder = slip.Decoder()
    assert decoder.feed(b"noise" + slip.encode(packet)[:4]) == []
    assert decoder.feed(slip.encode(packet)[4:] + slip.encode(b"x")) == [packet, b"x"]
    assert decoder.noise == 5


def test_the_rom_loader_as_esptool_sees_it(sim: Sim) -> None:
    esp = detect_chip(str(sim.link), 115200, "default-reset", connect_attempts=1)
    try:
        assert esp.CHIP_NAME == "ESP32"
        assert bytes(esp.read_mac()).hex() == "240ac4a1b2c3"
        with pytest.raises(FatalError, match="0106"):  # flash not attached yet
            esp.flash_md5sum(0x10000, 64)
        esp.flash_spi_attach(0)
        esp.flash_set_parameters(0x30000)
        # NOR flash: a write without an erase only clears bits
        esp.flash_begin(0, 0x20000)
        blocks = esp.flash_begin(4, 0x20000)
        esp.flash_block(b"\x0f\xf0\xff\xff" + b"\xff" * 0x3FC, 0)
        assert blocks == 1
        assert bytes(esp.read_flash(0x20000, 4)) == b"\x0f\xf0\xff\xff"
        # a bad checksum and an unknown command are refused as the ROM does
        esp.flash_begin(4, 0x21000)
        with pytest.raises(FatalError, match="0107"):
            esp.check_command("write", 0x03, struct.pack("<IIII", 4, 0, 0, 0) + b"abcd", chk=0)
        with pytest.raises(FatalError, match="0105"):
            esp.check_command("erase region", 0xD1, struct.pack("<II", 0, 0x1000))
        with pytest.raises(FatalError, match="0106"):  # past the end of the flash
            esp.flash_md5sum(0x2F000, 0x2000)
    finally:
        esp._port.close()


@pytest.mark.parametrize(
    ("model", "after"),
    [("esp32", "soft-reset"), ("esp32s2", "watchdog-reset"), ("esp32c2", "watchdog-reset"),
     ("esp32c6", "hard-reset"), ("esp32h2", "hard-reset")],
)  # fmt: skip
def test_an_unconfirmed_app_is_rolled_back_by_the_next_boot(
    tmp_path: Path,
    interface_hooks: HooksFactory,
    artifact_factory: ArtifactFactory,
    model: str,
    after: str,
) -> None:
    sim = create_sim(tmp_path, model=model)
    sim.start()
    chip_id = image_chip_id(model)

    def boot() -> None:
        if after == "hard-reset":  # the RTS pulse a pty cannot carry
            sim.pulse_en()

    try:
        image = make_image("2.0.0", chip_id=chip_id)
        artifact = artifact_factory("2.0.0", payload_type="esp32", component_type="door_lock",
                                    files={"door-lock.bin": image})  # fmt: skip
        args = component_args(sim, f"--chip={model}", f"--after={after}")
        hooks = interface_hooks("esp32", args, "door_lock")
        for state in ("download", "artifact_install", "artifact_reboot"):
            hooks.state(state, artifact)
        boot()
        otadata = sim.otadata()
        assert (sim.state()["running"], otadata.entries[1].state_name) == (
            "ota_1", "PENDING_VERIFY",
        )  # fmt: skip

        hooks.state("artifact_reboot", artifact)  # a second boot with nobody confirming it
        boot()

        assert sim.state()["running"] == "ota_0"
        assert sim.otadata().entries[1].state_name == "ABORTED"
        with pytest.raises(InterfaceError, match=(
            r"the bootloader rolled back: otadata selects ota_0, not ota_1 "
            r"\(seq 1 VALID, seq 2 ABORTED\)"
        )):  # fmt: skip
            hooks.state("artifact_verify_reboot", artifact)
        for state in ("artifact_rollback", "artifact_rollback_reboot"):
            hooks.state(state, artifact)
        boot()
        for state in ("artifact_verify_rollback_reboot", "cleanup"):
            hooks.state(state, artifact)
        blank = idf.OtaData.decode(b"\xff" * 0x2000).entries[1]
        assert sim.otadata() == otadata.with_entry(1, blank)
        boot()  # verifying left the loader (RTS on the C6 and H2)
        assert (sim.state()["mode"], sim.state()["running"]) == ("app", "ota_0")
    finally:
        sim.stop()


def test_a_reset_that_never_reaches_the_chip_is_named(
    sim: Sim, interface_hooks: HooksFactory, artifact_factory: ArtifactFactory
) -> None:
    artifact = artifact_factory("2.0.0", payload_type="esp32", component_type="door_lock",
                                files={"door-lock.bin": make_image("2.0.0")})  # fmt: skip
    # an RTS pulse: a pty has no such line
    hooks = interface_hooks("esp32", component_args(sim, "--after=hard-reset"), "door_lock")
    for state in ("download", "artifact_install", "artifact_reboot"):
        hooks.state(state, artifact)
    with pytest.raises(InterfaceError, match=(
        r"ota_1 was never started \(its otadata state is still NEW\): the reset did not reach "
        r"the chip \(--after=hard-reset\)"
    )):  # fmt: skip
        hooks.state("artifact_verify_reboot", artifact)


def test_opening_a_path_where_no_device_was_created_fails(tmp_path: Path) -> None:
    with pytest.raises(SimulatorError, match=r"no simulated ESP32 at .*: create one with"):
        Device.load(tmp_path / "missing.bin")


def install_context(sim: Sim, tmp_path: Path, image: bytes, timeout: float,
                    reports: list[tuple[int, int | None, str]]) -> tuple[Any, Any]:  # fmt: skip
    """A driver loaded as the engine loads it and an ArtifactInstall context for ``image``."""
    component = Component("door_lock", "esp32", tuple(component_args(sim)))
    driver = drivers.load(component, tmp_path / "data")
    work = tmp_path / "work"
    (work / "files").mkdir(parents=True, exist_ok=True)
    (work / "files" / "app.bin").write_bytes(image)
    artifact = ArtifactInfo(name="door-lock-2.0.0", group=None, payload_type="esp32",
                            provides={"rootfs-image.esp32.version": "2.0.0"},
                            files=(("app.bin", len(image)),))  # fmt: skip
    ctx = driver.context(log=logging.getLogger("test.esp32"), timeout_seconds=timeout,
                         component_id="esp32-240ac4a1b2c3", work_dir=work, artifact=artifact,
                         progress_sink=lambda *report: reports.append(report))  # fmt: skip
    return driver, ctx


def test_install_reports_its_progress_in_flashed_bytes(sim: Sim, tmp_path: Path) -> None:
    image = make_image("2.0.0", size=5000)
    reports: list[tuple[int, int | None, str]] = []
    driver, ctx = install_context(sim, tmp_path, image, 30, reports)
    driver.run_state("artifact_install", ctx)
    app = [report for report in reports if report[1] == len(image)]
    assert [done for done, _, _ in app] == [*range(1024, len(image), 1024), len(image)]
    assert {what for _, _, what in reports} == {"bytes flashed"}


@pytest.mark.parametrize("how", ["deadline", "cancelled"])
def test_a_long_write_stops_at_the_deadline_or_when_cancelled(
    sim: Sim, tmp_path: Path, how: str
) -> None:
    sim.chip(program_seconds_per_kib=0.1)  # 40 blocks: 4 s of programming
    image = make_image("2.0.0", size=40 * 1024)
    driver, ctx = install_context(sim, tmp_path, image, 1.0 if how == "deadline" else 60, [])
    if how == "cancelled":
        threading.Timer(0.6, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(InterfaceTimeout) as caught:
        driver.run_state("artifact_install", ctx)
    assert time.monotonic() - started < 2.5
    # at the deadline the engine sets ctx.cancelled too: whichever the driver sees first
    assert re.search(
        r": writing the app image in ota_1(: block \d+ at 0x2[0-9a-f]{4})?: "
        r"(InterfaceTimeoutSeconds ran out|stopped: the deadline passed or the orchestrator "
        r"was told to stop)$",
        str(caught.value),
    ), caught.value
    assert sim.otadata().active() == 0  # otadata was never switched


# each chip after the ESP32, as the driver names it, its image chip ID, and how esptool starts
# its app: the RTC watchdog, or (C6, H2) only RTS, which the test stands in for on the pty
LATER_CHIPS = [
    ("esp32s2", 2, "watchdog-reset"),
    ("esp32s3", 9, "watchdog-reset"),
    ("esp32c3", 5, "watchdog-reset"),
    ("esp32c2", 12, "watchdog-reset"),
    ("esp32c6", 13, "hard-reset"),
    ("esp32h2", 16, "hard-reset"),
]


@pytest.mark.parametrize(("model", "chip_id", "after"), LATER_CHIPS)
def test_a_later_chip_is_flashed_through_the_stub_and_its_app_started(
    tmp_path: Path,
    interface_hooks: HooksFactory,
    artifact_factory: ArtifactFactory,
    model: str,
    chip_id: int,
    after: str,
) -> None:
    later = create_sim(tmp_path, model=model)
    later.start()

    def started_by_the_reset() -> None:
        if after == "hard-reset":
            # the RTS pulse never reaches a pty: the chip still waits in its loader
            assert later.state()["mode"] == "download"
            later.pulse_en()
        assert later.state()["mode"] == "app"

    try:
        image = make_image("2.0.0", chip_id=chip_id)
        artifact = artifact_factory("2.0.0", payload_type="esp32", component_type="door_lock",
                                    files={"door-lock.bin": image})  # fmt: skip
        args = component_args(later, f"--chip={model}", f"--after={after}")
        hooks = interface_hooks("esp32", args, "door_lock")
        assert hooks.query("identity") == "esp32-240ac4a1b2c3"  # its own eFuse MAC words
        assert hooks.version() == "1.0.0"
        for state in ("download", "artifact_install", "artifact_reboot"):
            hooks.state(state, artifact)
        started_by_the_reset()
        assert (later.state()["running"], later.otadata().entries[1].state_name) == (
            "ota_1", "PENDING_VERIFY",
        )  # fmt: skip
        for state in ("artifact_verify_reboot", "artifact_commit"):
            hooks.state(state, artifact)
        started_by_the_reset()
        hooks.state("cleanup", artifact)
        assert later.slot_bytes("ota_1", len(image)) == image
        assert (later.state()["running"], later.otadata().entries[1].state_name) == (
            "ota_1", "VALID",
        )  # fmt: skip
        esp32_image = artifact_factory("3.0.0", payload_type="esp32", component_type="door_lock",
                                       files={"door-lock.bin": make_image("3.0.0")})  # fmt: skip
        hooks.state("download", esp32_image)
        wanted = f"is built for chip ID 0, not {model}'s \\({chip_id}\\)"
        with pytest.raises(InterfaceError, match=wanted):
            hooks.state("artifact_install", esp32_image)
    finally:
        later.stop()


def test_over_rfc2217_the_resets_reach_the_chip_through_its_auto_reset_circuit(
    tmp_path: Path, interface_hooks: HooksFactory, artifact_factory: ArtifactFactory
) -> None:
    """DTR/RTS carried to the board: esptool's reset into the download mode and
    --after=hard-reset (the only one on a C6) start the chip as on a real board. About 35 s:
    pyserial's RFC 2217 client waits 50 ms or more for each port setting it changes, which
    esptool does around every command."""
    model = "esp32c6"
    chip = create_sim(tmp_path, model=model)
    chip.start(rfc2217=True)
    try:
        image = make_image("2.0.0", chip_id=image_chip_id(model))
        artifact = artifact_factory("2.0.0", payload_type="esp32", component_type="door_lock",
                                    files={"door-lock.bin": image})  # fmt: skip
        args = component_args(chip, f"--chip={model}", "--after=hard-reset")
        hooks = interface_hooks("esp32", args, "door_lock", timeout_seconds=120)
        for state in ("download", "artifact_install", "artifact_reboot"):
            hooks.state(state, artifact)
        # EN pulsed by RTS with GPIO0 high: the bootloader started the new app
        assert (chip.state()["mode"], chip.state()["running"]) == ("app", "ota_1")
        assert chip.otadata().entries[1].state_name == "PENDING_VERIFY"
        entries = chip.state()["loader_entries"]
        for state in ("artifact_verify_reboot", "artifact_commit", "cleanup"):
            hooks.state(state, artifact)
        assert chip.state()["loader_entries"] == entries + 1  # reset into the ROM by DTR/RTS
        assert (chip.state()["mode"], chip.state()["running"]) == ("app", "ota_1")
        assert chip.otadata().entries[1].state_name == "VALID"
        assert chip.slot_bytes("ota_1", len(image)) == image
    finally:
        chip.stop()


@pytest.mark.parametrize(
    ("model", "name", "configured", "after"),
    [
        ("esp32c5", "ESP32-C5", "esp32c3", "watchdog-reset"),  # a chip the driver refuses
        ("esp32s3", "ESP32-S3", "esp32c3", "watchdog-reset"),
        ("esp32s2", "ESP32-S2", "esp32c3", "watchdog-reset"),  # told by its magic value
        ("esp32c3", "ESP32-C3", "esp32s2", "watchdog-reset"),
        ("esp32", "ESP32", "esp32s2", "watchdog-reset"),
        ("esp32h2", "ESP32-H2", "esp32c6", "hard-reset"),
    ],
)
def test_a_chip_other_than_the_one_configured_is_named(
    tmp_path: Path,
    interface_hooks: HooksFactory,
    model: str,
    name: str,
    configured: str,
    after: str,
) -> None:
    other = create_sim(tmp_path, model=model)
    flash = other.path.read_bytes()
    other.start()
    try:
        args = component_args(other, f"--chip={configured}", f"--after={after}")
        hooks = interface_hooks("esp32", args, "door_lock")
        with pytest.raises(InterfaceError) as caught:
            hooks.query("identity")
        wanted = CHIP_NAMES[configured]
        assert (
            f"the chip on {other.link} is an {name}, not the {wanted} this Component is "
            f"configured for (--chip={configured})"
        ) in str(caught.value)
        assert other.state()["syncs"] >= 1  # it answered, and nothing was written
        assert other.path.read_bytes() == flash
    finally:
        other.stop()


@pytest.mark.parametrize(
    ("model", "name", "crystal"),
    [("esp32", "ESP32", 40), ("esp32s2", "ESP32-S2", 40), ("esp32c2", "ESP32-C2", 26),
     ("esp32c6", "ESP32-C6", 40), ("esp32h2", "ESP32-H2", 32)],
)  # fmt: skip
def test_each_chip_answers_esptool_as_its_rom_does(
    tmp_path: Path, model: str, name: str, crystal: int
) -> None:
    chip = create_sim(tmp_path, model=model)
    chip.start()
    try:
        esp = detect_chip(str(chip.link), 115200, "default-reset", connect_attempts=1)
        try:
            assert esp.CHIP_NAME == name
            assert bytes(esp.read_mac()).hex() == "240ac4a1b2c3"
            assert esp.get_crystal_freq() == crystal
            if model == "esp32s2":  # GET_SECURITY_INFO in 12 bytes, without a chip ID
                assert esp.get_security_info()["chip_id"] is None
            if model == "esp32c2":  # v1.0: esptool's stub takes it (not revision 0)
                assert esp.get_chip_revision() == 100
                assert not getattr(esp, "stub_is_disabled", False)
        finally:
            esp._port.close()
    finally:
        chip.stop()


@pytest.mark.parametrize(
    ("model", "bootloader_at"),
    [("esp32", 0x1000), ("esp32s2", 0x1000), ("esp32c6", 0x0), ("esp32h2", 0x0)],
)
def test_the_bootloader_is_where_the_rom_looks_and_boots_only_the_chips_apps(
    tmp_path: Path, model: str, bootloader_at: int
) -> None:
    chip = create_sim(tmp_path, model=model)
    flash = chip.device().read(0, 0x2000)
    assert flash[bootloader_at] == idf.IMAGE_MAGIC
    assert set(flash[:bootloader_at]) <= {0xFF}
    assert chip.state()["running"] == "ota_0"
    (tmp_path / "other").mkdir()
    other = create_sim(tmp_path / "other", model=model, chip_id=5)
    assert other.state()["running"] is None  # "invalid chip ID": no app for this chip


def test_inventory_names_the_port_mac_partition_and_app(
    sim: Sim, interface_hooks: HooksFactory
) -> None:
    hooks = interface_hooks("esp32", component_args(sim), "door_lock")
    assert hooks.query("inventory") == [
        ("esp32_port", str(sim.link)),
        ("esp32_mac", "24:0a:c4:a1:b2:c3"),
        ("esp32_partition", "ota_0"),
        ("esp32_ota_state", "VALID"),
        ("esp32_project", "door-lock"),
        ("esp32_idf_version", "v5.3"),
    ]
    assert sim.state()["mode"] == "app"  # started again after the reading


def test_an_image_larger_than_the_slot_is_refused_before_anything_is_kept(
    sim: Sim, tmp_path: Path
) -> None:
    flash = sim.path.read_bytes()
    driver, ctx = install_context(sim, tmp_path, make_image("2.0.0", size=70000), 30, [])
    with pytest.raises(InterfaceError, match=r"the image \(70\d{3} bytes\) does not fit "
                                             r"partition ota_1 \(65536 bytes\)"):  # fmt: skip
        driver.run_state("artifact_install", ctx)
    assert not (tmp_path / "work" / "tmp" / "esp32-driver").exists()
    assert sim.path.read_bytes() == flash


def test_serving_never_replaces_a_file_with_its_link(sim: Sim, tmp_path: Path) -> None:
    taken = tmp_path / "not-a-link"
    taken.write_text("a user's file")
    with pytest.raises(SimulatorError, match="exists and is not a symbolic link"):
        Simulator(sim.path, taken)
    assert taken.read_text() == "a user's file"


def test_the_command_line_creates_and_shows_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lock.bin"
    assert simulator_main(["init", str(path), "--mac=24:0a", "--version=1.0.0"]) == 2
    assert "error: --mac '24:0a': expected 12 hex digits" in capsys.readouterr().err
    assert not path.exists()
    assert simulator_main(["init", str(path), "--flash-size=1M", "--version=1.0.0",
                           "--project=lock"]) == 0  # fmt: skip
    assert simulator_main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "otadata[0]: seq=1 state=VALID valid=True" in shown
    assert "otadata[1]: seq=4294967295 state=UNDEFINED valid=False" in shown
    assert "ota_0: 1.0.0 lock\nota_1: no app\n" in shown
    assert simulator_main(["init", str(tmp_path / "small.bin"), "--flash-size=64K"]) == 2
    assert "the partition table needs 0x30000 bytes of flash; the chip has 0x10000" in (
        capsys.readouterr().err
    )
