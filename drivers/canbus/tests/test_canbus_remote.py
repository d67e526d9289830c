"""The ECU simulator in its own process on a python-can-remote bus served on 127.0.0.1, updated
by the driver and by the ``mender-orchestrator`` command with a real Artifact."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canbus_helpers import FAST, Harness, Outcome, pseudo_random
from orchestrator_core.context import Component

from mender_orchestrator_canbus.simulator import FlashStore

BANK = 0x10000
SERIAL = "SIM-REMOTE-7"
CLI = Path(sys.executable).with_name("mender-orchestrator")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture
def remote_bus(tmp_path: Path) -> Iterator[str]:
    """A python-can-remote server on 127.0.0.1 whose clients share one virtual bus."""
    port = _free_port()
    log = (tmp_path / "can-remote.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "can_remote", "--interface", "virtual",
         "--channel", f"remote-{uuid.uuid4().hex}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"can_remote did not start: {(tmp_path / 'can-remote.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(server)
        log.close()


class SimProcess:
    """``python -m mender_orchestrator_canbus.simulator`` on the remote bus."""

    def __init__(self, channel: str, state: Path, *faults: str) -> None:
        self.channel = channel
        self.state = state
        self.faults = faults
        self.extra: list[str] = []  # more simulator options (--trace FILE, ...)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_path = self.state.with_suffix(".log")
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mender_orchestrator_canbus.simulator",
                 "--interface", "remote", "--channel", self.channel, "--state", str(self.state),
                 "--serial", SERIAL, "--bank-size", hex(BANK), "--erase-time", "0.02",
                 "--boot-time", "0.05", *(f"--fault={fault}" for fault in self.faults),
                 *self.extra],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while "ready" not in log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start: {log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def bank(self) -> bytes:
        return FlashStore(self.state).read(0, 0, BANK)


@pytest.fixture
def simulator(remote_bus: str, tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(*faults: str) -> SimProcess:
        sim = SimProcess(remote_bus, tmp_path / f"ecu-{len(started)}.json", *faults)
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def test_driver_updates_an_ecu_process_that_restarts_between_states(
    simulator: Callable[..., SimProcess], remote_bus: str, tmp_path: Path
) -> None:
    sim = simulator()
    args = ("--interface=remote", f"--channel={remote_bus}", f"--memory-size={BANK:#x}", *FAST)
    h = Harness(Component("ecu_brake", "canbus", args), tmp_path)
    assert h.query("identity") == SERIAL
    assert h.query("provides") == {"rootfs-image.canbus.version": "ecu-1.0.0"}
    image = pseudo_random("remote-2.0.0", 30000)
    outcome = Outcome()
    h.stage(image, "ecu-2.0.0")
    h.state("artifact_install", outcome)
    h.state("artifact_reboot", outcome)
    # the ECU's process goes away and comes back: only its state file carries the update
    sim.stop()
    sim.start()
    h.state("artifact_verify_reboot", outcome)
    h.state("artifact_commit", outcome)
    h.state("cleanup", outcome)
    assert sim.bank() == image + b"\xff" * (BANK - len(image))
    assert h.query("provides") == {"rootfs-image.canbus.version": "ecu-2.0.0"}


class System:
    """A device's directories under tmp_path, reached through SPEC 11's environment."""

    def __init__(self, root: Path, channel: str) -> None:
        self.root = root
        self.env = dict(os.environ)
        for name, sub in (
            ("CONF_DIR", "etc"),
            ("DATA_DIR", "usr-share"),
            ("DATASTORE_DIR", "var-lib"),
        ):
            (root / sub).mkdir(parents=True)
            self.env[f"MENDER_ORCHESTRATOR_{name}"] = str(root / sub)
        args = ", ".join(
            f'"{a}"'
            for a in (
                "--interface=remote",
                f"--channel={channel}",
                f"--memory-size={BANK:#x}",
                *FAST,
            )
        )
        (root / "var-lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "test-car"\ncomponents:\n'
            f"  - component_type: ecu_brake\n    interface: canbus\n    interface_args: [{args}]\n"
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def manifest(self, firmware: bytes, version: str) -> Path:
        """A Manifest pointing at a real Artifact written by Debian's mender-artifact."""
        (self.root / "firmware.bin").write_bytes(firmware)
        artifact = self.root / f"{version}.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "canbus", "-n", version,
             "-t", "ecu_brake", "-f", str(self.root / "firmware.bin"), "-o", str(artifact)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        manifest = self.root / "manifest.yaml"
        manifest.write_text(
            'api_version: "mender/v1"\nkind: "manifest"\nname: "car-2.0"\n'
            'system_types_compatible: ["test-car"]\ncomponent_types:\n  ecu_brake:\n'
            f"    artifact_path: {artifact}\n    artifact_name: {version}\n"
            "    update_strategy: {order: 10}\n"
        )
        return manifest


needs_tools = pytest.mark.skipif(
    not CLI.exists() or shutil.which("mender-artifact") is None,
    reason="needs the mender-orchestrator command and Debian's mender-artifact",
)


@needs_tools
def test_mender_orchestrator_shows_provides_and_installs_a_real_artifact(
    simulator: Callable[..., SimProcess], remote_bus: str, tmp_path: Path
) -> None:
    sim = simulator()
    system = System(tmp_path / "system", remote_bus)
    shown = system.run("show-provides")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        f"ecu_brake.{SERIAL}.device_type=ecu_brake",
        f"ecu_brake.{SERIAL}.rootfs-image.canbus.version=ecu-1.0.0",
    ]
    firmware = pseudo_random("cli-2.0.0", 30000)

    installed = system.run("install", str(system.manifest(firmware, "brake-2.0.0")))

    assert installed.returncode == 0, installed.stderr
    assert sim.bank() == firmware + b"\xff" * (BANK - len(firmware))
    shown = system.run("show-provides")
    assert (
        f"ecu_brake.{SERIAL}.rootfs-image.canbus.version=brake-2.0.0" in shown.stdout.splitlines()
    )


@needs_tools
def test_mender_orchestrator_rolls_a_corrupted_flash_back(
    simulator: Callable[..., SimProcess], remote_bus: str, tmp_path: Path
) -> None:
    sim = simulator("corrupt-block=3")
    before = sim.bank()
    system = System(tmp_path / "system", remote_bus)

    installed = system.run(
        "install", str(system.manifest(pseudo_random("bad", 30000), "brake-2.0.0"))
    )

    assert installed.returncode != 0
    assert (
        "RoutineControl checkProgrammingDependencies (RID 0xff01) rejected the image"
        in installed.stderr
    )
    assert sim.bank() == before
    shown = system.run("show-provides")
    assert f"ecu_brake.{SERIAL}.rootfs-image.canbus.version=ecu-1.0.0" in shown.stdout.splitlines()


@needs_tools
def test_a_rollback_in_a_later_process_restores_the_saved_image(
    simulator: Callable[..., SimProcess], remote_bus: str, tmp_path: Path
) -> None:
    sim = simulator()
    before = sim.bank()
    system = System(tmp_path / "system", remote_bus)
    manifest = system.manifest(pseudo_random("later", 30000), "brake-2.0.0")

    stopped = system.run("install", "--stop-before", "ArtifactVerifyReboot", str(manifest))
    assert stopped.returncode == 0, stopped.stderr
    assert sim.bank() != before  # the new image is in flash and the ECU was reset

    # a new orchestrator process: only the File API directory knows the saved image
    rolled_back = system.run("rollback")

    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "re-flashing the previous image (ecu-1.0.0)" in rolled_back.stderr
    assert sim.bank() == before
    shown = system.run("show-provides")
    assert f"ecu_brake.{SERIAL}.rootfs-image.canbus.version=ecu-1.0.0" in shown.stdout.splitlines()
