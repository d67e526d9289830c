"""The transports through the whole hook path: ``mender-orchestrator install`` with a Topology,
a Manifest and Artifacts written by Debian's ``mender-artifact``, against simulators in their
own processes: a DoIP gateway with two ECUs, two ECUs on one CAN bus, and an ECU on a bus
paced at 500 kbit/s with socketcan's 10-frame transmit queue and FC WAIT frames."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from canbus_helpers import pseudo_random

from mender_orchestrator_canbus.simulator import FlashStore

CLI = Path(sys.executable).with_name("mender-orchestrator")
BANK = 0x10000
FAST = ("--p2-timeout=0.5", "--p2-star-timeout=2", "--reset-wait=2", "--retries=2")

pytestmark = pytest.mark.skipif(
    not CLI.exists() or shutil.which("mender-artifact") is None,
    reason="needs the mender-orchestrator command and Debian's mender-artifact",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Processes:
    """Simulators started for one test, each in its own process group, stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], ready: str) -> None:
        log_path = self.directory / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        self.started.append(process)
        deadline = time.monotonic() + 15
        while ready not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def remote_bus(processes: Processes) -> str:
    port = _free_port()
    processes.start("can-remote", [
        sys.executable, "-m", "can_remote", "--interface", "virtual",
        "--channel", f"remote-{uuid.uuid4().hex}", "--host", "127.0.0.1", "--port", str(port),
    ], ready="")  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def can_ecu(processes: Processes, state: Path, *link: str) -> None:
    processes.start(state.stem, [
        sys.executable, "-m", "mender_orchestrator_canbus.simulator", *link,
        "--state", str(state), "--serial", f"SIM-{state.stem.upper()}", "--bank-size", hex(BANK),
        "--erase-time", "0.02", "--boot-time", "0.05",
    ], ready="ready")  # fmt: skip


class System:
    """A device's directories (SPEC 11's environment), a Topology and Manifests."""

    def __init__(self, root: Path, components: dict[str, tuple[str, ...]]) -> None:
        self.root = root
        self.components = components
        self.env = dict(os.environ)
        for name, sub in (("CONF_DIR", "etc"), ("DATA_DIR", "share"), ("DATASTORE_DIR", "lib")):
            (root / sub).mkdir(parents=True)
            self.env[f"MENDER_ORCHESTRATOR_{name}"] = str(root / sub)
        entries = "".join(
            f"  - component_type: {ctype}\n    interface: canbus\n"
            f"    interface_args: [{', '.join(repr(a) for a in args)}]\n"
            for ctype, args in components.items()
        )
        (root / "lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "test-car"\n'
            f"components:\n{entries}"
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLI), *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    def manifest(self, images: dict[str, bytes], version: str) -> Path:
        """Every Component type in one order group, each with a real Artifact."""
        types = ""
        for ctype, image in images.items():
            firmware = self.root / f"{ctype}.bin"
            firmware.write_bytes(image)
            artifact = self.root / f"{ctype}-{version}.mender"
            subprocess.run(["mender-artifact", "write", "module-image", "-T", "canbus",
                            "-n", f"{ctype}-{version}", "-t", ctype, "-f", str(firmware),
                            "-o", str(artifact)],
                           check=True, capture_output=True, timeout=60)  # fmt: skip
            types += (f"  {ctype}:\n    artifact_path: {artifact}\n"
                      f"    artifact_name: {ctype}-{version}\n    update_strategy: {{order: 10}}\n")  # fmt: skip
        manifest = self.root / "manifest.yaml"
        manifest.write_text(
            'api_version: "mender/v1"\nkind: "manifest"\nname: "car-2.0"\n'
            f'system_types_compatible: ["test-car"]\ncomponent_types:\n{types}'
        )
        return manifest


def booting(state: Path) -> bytes:
    store = FlashStore(state)
    return store.read(store.layout.boot_bank, 0, BANK)


def test_two_ecus_behind_one_doip_gateway_are_installed_in_one_order_group(
    processes: Processes, tmp_path: Path
) -> None:
    port = _free_port()
    states = {0x0201: tmp_path / "front.json", 0x0202: tmp_path / "rear.json"}
    processes.start("gateway", [
        sys.executable, "-m", "mender_orchestrator_canbus.simulator.gateway", "--port", str(port),
        *(f"--ecu={address:#06x}={state}" for address, state in states.items()),
    ], ready="ready")  # fmt: skip
    doip = ("--transport=doip", "--host=127.0.0.1", f"--port={port}", "--vin=MORCSIMULATEDCAR1")
    system = System(tmp_path / "system", {
        "ecu_front": (*doip, "--logical-address=0x0201", f"--memory-size={BANK:#x}", *FAST),
        "ecu_rear": (*doip, "--logical-address=0x0202", f"--memory-size={BANK:#x}", *FAST),
    })  # fmt: skip
    images = {"ecu_front": pseudo_random("front", 20000), "ecu_rear": pseudo_random("rear", 24000)}

    installed = system.run("install", str(system.manifest(images, "2.0")))

    assert installed.returncode == 0, installed.stderr
    assert booting(states[0x0201]) == images["ecu_front"] + b"\xff" * (BANK - 20000)
    assert booting(states[0x0202]) == images["ecu_rear"] + b"\xff" * (BANK - 24000)
    shown = system.run("show-provides").stdout.splitlines()
    assert "ecu_front.SIM-DOIP-0201.rootfs-image.canbus.version=ecu_front-2.0" in shown
    assert "ecu_rear.SIM-DOIP-0202.rootfs-image.canbus.version=ecu_rear-2.0" in shown


def test_two_ecus_on_one_can_bus_are_installed_in_one_order_group(
    processes: Processes, tmp_path: Path
) -> None:
    channel = remote_bus(processes)
    bus = ("--interface", "remote", "--channel", channel)
    states = {"ecu_front": tmp_path / "front.json", "ecu_rear": tmp_path / "rear.json"}
    bus = (*bus, "--banks", "2")
    can_ecu(processes, states["ecu_front"], *bus, "--tx-id", "0x7E8", "--rx-id", "0x7E0")
    can_ecu(processes, states["ecu_rear"], *bus, "--tx-id", "0x7E9", "--rx-id", "0x7E1")
    common = ("--interface=remote", f"--channel={channel}", "--banks=2",
              f"--memory-size={BANK:#x}", *FAST)  # fmt: skip
    system = System(tmp_path / "system", {
        "ecu_front": (*common, "--tx-id=0x7E0", "--rx-id=0x7E8"),
        "ecu_rear": (*common, "--tx-id=0x7E1", "--rx-id=0x7E9"),
    })  # fmt: skip
    images = {"ecu_front": pseudo_random("front", 20000), "ecu_rear": pseudo_random("rear", 16000)}

    installed = system.run("install", str(system.manifest(images, "2.0")))

    assert installed.returncode == 0, installed.stderr
    for ctype, state in states.items():
        image = images[ctype]
        assert booting(state) == image + b"\xff" * (BANK - len(image))


def test_an_ecu_on_a_paced_500k_bus_with_fc_wait_is_installed(
    processes: Processes, tmp_path: Path
) -> None:
    """Both ends on the ``paced`` bus across processes: the driver's 10-frame transmit queue
    overflows on every block (ENOBUFS, sent again) and the ECU sends a flow-control WAIT before
    each clear-to-send."""
    channel = f"remote:{remote_bus(processes)}"
    state = tmp_path / "brake.json"
    can_ecu(processes, state, "--interface", "paced", "--channel", channel, "--bitrate", "500000",
            "--fc-wait", "1", "--fc-wait-gap", "0.05", "--banks", "2")  # fmt: skip
    system = System(tmp_path / "system", {
        "ecu_brake": ("--interface=paced", f"--channel={channel}", "--bitrate=500000",
                      "--banks=2", f"--memory-size={BANK:#x}", *FAST),
    })  # fmt: skip
    image = pseudo_random("paced", 30000)
    started = time.monotonic()

    installed = system.run("install", str(system.manifest({"ecu_brake": image}, "2.0")))

    assert installed.returncode == 0, installed.stderr
    assert booting(state) == image + b"\xff" * (BANK - len(image))
    assert time.monotonic() - started < 60
