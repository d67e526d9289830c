"""``mender-orchestrator`` updating the simulated ESP32 from real ``.mender`` files (Debian's
mender-artifact), through the real CLI: success, rollback, every simulated fault, bad ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from esp32_helpers import MAC, Sim, component_args, create_sim, make_image

from mender_orchestrator_esp32 import idf

needs_mender_artifact = pytest.mark.skipif(
    shutil.which("mender-artifact") is None, reason="needs Debian's mender-artifact"
)
PROVIDES = f"door_lock.esp32-{MAC}.rootfs-image.esp32.version"
INVENTORY = f"door_lock.esp32-{MAC}"  # the prefix of the Component's inventory keys


class System:
    """A System under tmp_path reached only through the environment, as on a device."""

    def __init__(self, root: Path, sim: Sim) -> None:
        self.root = root
        self.sim = sim
        for name in ("etc", "usr-share", "var-lib"):
            (root / name).mkdir(parents=True)
        # the host record in the datastore's esp32/, as on a device
        self.topology(component_args(sim, state_dir=False))

    def topology(self, interface_args: list[str]) -> None:
        args = "".join(f"\n      - {json.dumps(arg)}" for arg in interface_args)
        (self.root / "var-lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "car-2026"\n'
            f"components:\n  - component_type: door_lock\n    interface: esp32\n"
            f"    interface_args:{args}\n"
        )

    def manifest(self, version: str, image: bytes | None = None) -> Path:
        payload = self.root / f"door-lock-{version}.bin"
        payload.write_bytes(make_image(version) if image is None else image)
        artifact = self.root / f"door-lock-{version}.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "esp32", "-t", "door_lock",
             "-n", f"door-lock-{version}", "--software-version", version,
             "-f", str(payload), "-o", str(artifact)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        path = self.root / f"manifest-{version}.yaml"
        path.write_text(
            'api_version: "mender/v1"\nkind: "manifest"\n'
            f'name: "car-software-{version}"\nsystem_types_compatible: ["car-2026"]\n'
            "component_types:\n  door_lock:\n"
            f"    artifact_name: door-lock-{version}\n    artifact_path: {artifact}\n"
            "    update_strategy: {order: 10}\n"
        )
        return path

    def run(self, *args: str, **more_env: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MENDER_ORCHESTRATOR_")}
        env.update(
            MENDER_ORCHESTRATOR_CONF_DIR=str(self.root / "etc"),
            MENDER_ORCHESTRATOR_DATA_DIR=str(self.root / "usr-share"),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(self.root / "var-lib"),
            **more_env,
        )
        return subprocess.run(
            [sys.executable, "-m", "orchestrator_core", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def version(self) -> str:
        shown = self.run("show-provides")
        assert shown.returncode == 0, shown.stderr
        return dict(line.split("=", 1) for line in shown.stdout.splitlines())[PROVIDES]

    def inventory(self, **more_env: str) -> dict[str, str]:
        shown = self.run("show-inventory", **more_env)
        assert shown.returncode == 0, shown.stderr
        return dict(line.split("=", 1) for line in shown.stdout.splitlines())

    def records(self) -> list[dict[str, str]]:
        """The driver's host records, in the datastore's esp32/ (one per port)."""
        return [json.loads(p.read_text()) for p in (self.root / "var-lib" / "esp32").glob("*")]


@pytest.fixture
def system(tmp_path: Path, sim: Sim) -> System:
    return System(tmp_path / "system", sim)


def booted_from(sim: Sim) -> tuple[str, str | None]:
    """Where the simulated chip runs its app (after a boot), and which otadata state."""
    otadata = sim.otadata()
    active = otadata.active()
    state = None if active is None else otadata.entries[active].state_name
    return sim.state()["running"], state


def assert_back_on_1_0_0(sim: Sim, otadata_before: idf.OtaData) -> None:
    assert sim.otadata() == otadata_before
    assert sim.state()["mode"] == "app"
    assert booted_from(sim) == ("ota_0", "VALID")
    assert sim.version_in("ota_0") == "1.0.0"


@needs_mender_artifact
def test_install_writes_the_inactive_slot_switches_otadata_and_commits(
    system: System, sim: Sim
) -> None:
    sim.chip(model_line_rate=True)
    system.topology(component_args(sim, "--baud=2000000"))  # and CHANGE_BAUDRATE after sync
    image = make_image("2.0.0")
    manifest = system.manifest("2.0.0", image)

    result = system.run("install", str(manifest))

    assert result.returncode == 0, result.stderr
    assert sim.slot_bytes("ota_1", len(image)) == image
    assert sim.version_in("ota_0") == "1.0.0"  # the previous app stays for a rollback
    assert sim.state()["mode"] == "app"
    assert booted_from(sim) == ("ota_1", "VALID")
    entries = sim.otadata().entries
    assert (entries[0].seq, entries[1].seq) == (1, 2)  # the new entry in the other sector
    running = sim.state()
    assert system.version() == "2.0.0"
    assert sim.state() == running  # answered from the host record: no reset, no SYNC, no boot


@needs_mender_artifact
def test_an_esp32_s2_is_updated_through_the_stub_at_speed(tmp_path: Path) -> None:
    """The S2 told by its magic value (its ROM's GET_SECURITY_INFO has no chip ID), flashed
    through esptool's stub at 921600 baud on the modelled line, started by its RTC watchdog."""
    s2 = create_sim(tmp_path, model="esp32s2", model_line_rate=True)
    s2.start()
    try:
        system = System(tmp_path / "system", s2)
        system.topology(component_args(s2, "--chip=esp32s2", "--after=watchdog-reset",
                                       "--baud=921600", state_dir=False))  # fmt: skip
        image = make_image("2.0.0", chip_id=2)
        assert system.version() == "1.0.0"

        result = system.run("install", str(system.manifest("2.0.0", image)))

        assert result.returncode == 0, result.stderr
        assert s2.slot_bytes("ota_1", len(image)) == image
        assert booted_from(s2) == ("ota_1", "VALID")
        assert s2.state()["mode"] == "app"  # the watchdog fired after the commit
        result = system.run("install", str(system.manifest("3.0.0")))  # an ESP32 image
        assert result.returncode != 0
        assert "payload door-lock-3.0.0.bin is built for chip ID 0, not esp32s2's (2)" in (
            result.stderr
        )
        assert booted_from(s2) == ("ota_1", "VALID")
    finally:
        s2.stop()


@needs_mender_artifact
def test_rollback_after_verify_switches_otadata_back(system: System, sim: Sim) -> None:
    before = sim.otadata()
    manifest = system.manifest("2.0.0")

    stopped = system.run("install", "--stop-before", "ArtifactCommit", str(manifest))
    assert stopped.returncode == 0, stopped.stderr
    # booted once, not confirmed, and kept in the loader so that no boot rolls it back yet
    assert sim.state()["mode"] == "download"
    active = sim.otadata().active()
    assert active is not None
    assert sim.otadata().entries[active].state == idf.OtaState.PENDING_VERIFY

    result = system.run("rollback")

    assert result.returncode == 0, result.stderr
    assert_back_on_1_0_0(sim, before)
    assert sim.version_in("ota_1") == "2.0.0"  # only otadata changed back
    running = sim.state()
    assert system.version() == "1.0.0"
    assert system.inventory()[f"{INVENTORY}.esp32_partition"] == "ota_0"
    assert sim.state() == running  # the rolled-back version, from the record, chip untouched


@needs_mender_artifact
def test_flash_write_error_fails_and_rolls_back(system: System, sim: Sim) -> None:
    before = sim.otadata()
    sim.faults({"kind": "write_error", "offset": 0x20400, "times": -1})

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 1, result.stderr
    assert (
        "ESP32 ROM loader on " + str(sim.link) + ": writing the app image in ota_1: "
        "block 1 at 0x20400: Failed to write to target flash after seq 1 (result was 0108: "
        "Flash write error)"
    ) in result.stderr
    assert_back_on_1_0_0(sim, before)


@needs_mender_artifact
def test_reset_mid_write_fails_and_rolls_back(system: System, sim: Sim) -> None:
    before = sim.otadata()
    sim.faults({"kind": "reset", "offset": 0x20800, "after_bytes": 300})

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 1, result.stderr
    assert "writing the app image in ota_1: block 2 at 0x20800: " in result.stderr
    assert sim.state()["resets_mid_write"] == 1
    # the chip rebooted into the old app by itself; the partial ota_1 is never selected
    assert_back_on_1_0_0(sim, before)


@needs_mender_artifact
def test_a_chip_that_never_syncs_fails_clearly_and_is_left_untouched(
    system: System, sim: Sim
) -> None:
    flash = sim.path.read_bytes()
    sim.faults({"kind": "no_sync", "times": -1})
    started = time.monotonic()

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 2, result.stderr
    assert (
        f"door_lock[0] (interface esp32): no ESP32 ROM loader answered on {sim.link} "
        "(2 attempt(s), "
    ) in result.stderr
    assert "--before=default-reset): Failed to connect to Espressif device: No serial data " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15
    assert sim.path.read_bytes() == flash


@needs_mender_artifact
def test_a_chip_that_stops_answering_after_planning_fails_the_install_untouched(
    system: System, sim: Sim
) -> None:
    flash = sim.path.read_bytes()
    # planning's Identity reads the chip once (nothing is recorded yet) and Provides answers
    # from what it recorded; from ArtifactInstall on, nothing answers
    sim.faults({"kind": "no_sync", "skip": 1, "times": -1})

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 1, result.stderr
    assert f"no ESP32 ROM loader answered on {sim.link} (2 attempt(s), " in result.stderr
    assert "the install never reached the chip; nothing to roll back" in result.stderr
    assert sim.path.read_bytes() == flash
    status = system.run("status").stdout
    assert "status failed" in status and "ArtifactInstall" in status


@needs_mender_artifact
def test_a_wrong_chip_is_refused_before_anything_is_written(system: System, sim: Sim) -> None:
    flash = sim.path.read_bytes()
    sim.chip(model="esp32s3")

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 2, result.stderr
    assert (
        f"door_lock[0] (interface esp32): the chip on {sim.link} is an ESP32-S3, not the ESP32 "
        "this Component is configured for (--chip=esp32)"
    ) in result.stderr
    assert sim.path.read_bytes() == flash


@needs_mender_artifact
def test_an_image_for_another_version_is_refused_before_the_chip_is_touched(
    system: System, sim: Sim
) -> None:
    before = sim.otadata()
    result = system.run("install", str(system.manifest("2.0.0", make_image("2.0.1"))))

    assert result.returncode == 1, result.stderr
    assert (
        "the image's app descriptor says version '2.0.1', the Artifact provides '2.0.0'"
    ) in result.stderr
    assert_back_on_1_0_0(sim, before)
    assert sim.version_in("ota_1") is None


@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A serial port with nothing behind it (a wrong --port)."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("which", ["absent", "not a tty", "silent"])
def test_a_bad_port_is_named_in_bounded_time(
    system: System, tmp_path: Path, silent_pty: str, which: str
) -> None:
    ports = {"absent": str(tmp_path / "ttyUSB7"), "not a tty": str(system.sim.path),
             "silent": silent_pty}  # fmt: skip
    port = ports[which]
    system.topology(component_args(system.sim, f"--port={port}"))
    started = time.monotonic()

    result = system.run("show-provides")

    assert result.returncode != 0
    expected = {
        "absent": f"cannot open the serial port {port}: [Errno 2] could not open port {port}",
        "not a tty": f"cannot open the serial port {port}: Could not configure port: (25, ",
        "silent": f"no ESP32 ROM loader answered on {port} (2 attempt(s)",
    }[which]
    assert f"door_lock[0] (interface esp32): {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert time.monotonic() - started < 15


def test_the_first_query_reads_the_chip_once_and_records_it(system: System, sim: Sim) -> None:
    before = sim.state()

    first = system.inventory()

    assert first[f"{INVENTORY}.esp32_mac"] == "24:0a:c4:a1:b2:c3"
    assert first[f"{INVENTORY}.esp32_partition"] == "ota_0"
    assert first[f"{INVENTORY}.esp32_ota_state"] == "VALID"
    assert first[f"{INVENTORY}.esp32_project"] == "door-lock"
    read = sim.state()
    # one connection (the ROM loader answered its first SYNC), then the app started again
    assert (read["syncs"], read["loader_entries"]) == (1, 1)
    assert (read["boots"], read["mode"]) == (before["boots"] + 1, "app")
    assert system.records() == [
        {"mac": MAC, "version": "1.0.0", "partition": "ota_0", "ota_state": "VALID",
         "project": "door-lock", "idf_version": "v5.3"},
    ]  # fmt: skip
    # from now on every poll answers from the record
    assert system.inventory() == first
    assert system.version() == "1.0.0"
    assert sim.state() == read


@needs_mender_artifact
def test_queries_after_an_install_leave_the_running_app_alone(system: System, sim: Sim) -> None:
    assert system.run("install", str(system.manifest("2.0.0"))).returncode == 0
    running = sim.state()
    assert (running["mode"], running["running"]) == ("app", "ota_1")

    for _ in range(3):  # the inventory script, poll after poll
        inventory = system.inventory()
        assert system.version() == "2.0.0"

    assert inventory[f"{INVENTORY}.esp32_partition"] == "ota_1"
    assert inventory[f"{INVENTORY}.esp32_ota_state"] == "VALID"  # as ArtifactCommit left it
    assert sim.state() == running  # no SYNC, no reset into the loader, no boot
    assert system.records()[0]["version"] == "2.0.0"


@needs_mender_artifact
def test_an_unconfirmed_install_is_recorded_as_such_until_the_rollback(
    system: System, sim: Sim
) -> None:
    manifest = system.manifest("2.0.0")
    stopped = system.run("install", "--stop-before", "ArtifactCommit", str(manifest))
    assert stopped.returncode == 0, stopped.stderr
    waiting = sim.state()
    assert system.inventory()[f"{INVENTORY}.esp32_ota_state"] == "PENDING_VERIFY"
    assert system.version() == "2.0.0"  # what otadata selects, as the chip would say
    assert sim.state() == waiting  # still in the loader: a boot would roll the app back

    assert system.run("rollback").returncode == 0
    assert system.records() == [
        {"mac": MAC, "version": "1.0.0", "partition": "ota_0", "ota_state": "VALID",
         "project": "door-lock", "idf_version": "v5.3"},
    ]  # fmt: skip


APPLICATION_PLUGIN = '''
from orchestrator_core.driver_api import hookimpl


class DoorLockConsole:
    """Asks the running door-lock firmware (here: knows what it would say)."""

    @hookimpl
    def esp32_query_application(self, ctx, port):
        return {"version": "1.0.0-app", "mac": "24:0A:C4:A1:B2:C3",
                "partition": "ota_0", "ota_state": "VALID", "project": "door-lock",
                "idf_version": "v5.3"}


plugin = DoorLockConsole()
'''


def test_a_vendor_hook_answers_queries_from_the_running_application(
    system: System, sim: Sim, tmp_path: Path
) -> None:
    # a vendor plugin installed as any distribution is: a module and its entry point
    site = tmp_path / "site"
    (site / "door_lock_console-1.0.dist-info").mkdir(parents=True)
    (site / "door_lock_console.py").write_text(APPLICATION_PLUGIN)
    (site / "door_lock_console-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: door-lock-console\nVersion: 1.0\n"
    )
    (site / "door_lock_console-1.0.dist-info" / "entry_points.txt").write_text(
        "[mender_orchestrator.plugins]\ndoor_lock_console = door_lock_console:plugin\n"
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    before = sim.state()

    inventory = system.inventory(PYTHONPATH=path)
    shown = system.run("show-provides", PYTHONPATH=path)

    assert shown.returncode == 0, shown.stderr
    assert f"{PROVIDES}=1.0.0-app" in shown.stdout.splitlines()
    assert inventory[f"{INVENTORY}.esp32_mac"] == "24:0a:c4:a1:b2:c3"
    assert sim.state() == before  # the chip was never touched, not even once


@needs_mender_artifact
def test_a_state_dir_that_cannot_be_written_fails_the_install_before_the_chip_is_touched(
    system: System, sim: Sim, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    system.topology(component_args(sim, f"--state-dir={blocker}/esp32"))
    flash = sim.path.read_bytes()

    result = system.run("install", str(system.manifest("2.0.0")))

    assert result.returncode == 1, result.stderr
    assert (
        f"door_lock[0] (interface esp32): cannot record what the chip runs in {blocker}/esp32/"
    ) in result.stderr
    assert "Not a directory (--state-dir)" in result.stderr
    assert "the install never reached the chip; nothing to roll back" in result.stderr
    assert sim.path.read_bytes() == flash
