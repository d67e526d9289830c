"""End to end with the real Mender client (Debian's mender-client 3.x, standalone mode).

The client installs Manifest Artifacts made by our manifest-gen, through our Update Module
(installed by support/Makefile), which drives our orchestrator; the orchestrator updates the
virtual vehicle (examples/virtual-vehicle): an executable Interface, the CAN brake ECU
simulator on a python-can-remote bus and the I2C seat heater simulator. Versions are read
through ``show-provides`` after every step. See tests/mender_client.py for how the client is
kept in tmp (a private mount namespace for the two paths it cannot be told).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mender_client import MenderClient, unavailable
from systems import REPO, SIMULATED_UNIT, System

from orchestrator_core.artifact.writer import ArtifactSpec, software_version, write_artifact
from orchestrator_core.manifest_gen import generate

sys.path.insert(0, str(REPO / "examples" / "virtual-vehicle"))
from build_artifacts import SYSTEM_TYPE, build
from vehicle import VirtualVehicle

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

# a root where the Debian package is installed (/ in CI, a dpkg --root tree in
# tests/test_debian_package.py): the client drives its files and its command, not the checkout's
INSTALLED = os.environ.get("MENDER_ORCHESTRATOR_E2E_ROOT")
BIN = Path(INSTALLED) / "usr/bin" if INSTALLED else Path(sys.executable).parent
MODULE = "usr/share/mender/modules/v3/mender-orchestrator-manifest"
DEBIAN_MODULES = Path("/usr/share/mender/modules/v3")

V1 = {"door_lock": "door-lock-fw-v1.1.0",
      "ecu_brake_controller": "brake-ecu-firmware-v1.8.0",
      "seat_heating": "seat-heating-fw-v1.2.0",
      "telematics_control_unit": "tcu-firmware-v2.4.0",
      "battery_mcu": "3.1.0"}
V2 = {"door_lock": "door-lock-fw-v1.1.0",
      "ecu_brake_controller": "brake-ecu-firmware-v1.8.3",
      "seat_heating": "seat-heating-fw-v1.2.0",
      "telematics_control_unit": "tcu-firmware-v2.4.1",
      "battery_mcu": "3.1.0"}


def with_path(env: dict[str, str]) -> dict[str, str]:
    """The client finds ``mender-orchestrator`` on PATH, as on a device."""
    env = dict(env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


@pytest.fixture(scope="module")
def support_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if INSTALLED:
        return Path(INSTALLED)
    root = tmp_path_factory.mktemp("image")
    subprocess.run(["make", "-s", "-C", str(REPO / "support"), "install", f"DESTDIR={root}",
                    f"BINDIR={BIN}"], check=True, capture_output=True, timeout=60)
    return root


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("key")
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "artifacts.pem", directory / "artifacts.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def vehicle(tmp_path: Path, signing_key: tuple[Path, Path]) -> Iterator[VirtualVehicle]:
    artifacts = tmp_path / "artifacts"
    build(artifacts, key=signing_key[0])
    with VirtualVehicle(tmp_path / "vehicle", artifacts) as running:
        yield running


def failed_lines(result: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                     if "level=error" in line or "severity=error" in line)


def test_the_client_deploys_manifests_and_reports_a_rolled_back_one(
    vehicle: VirtualVehicle, support_root: Path, signing_key: tuple[Path, Path], tmp_path: Path
) -> None:
    client = MenderClient.create(tmp_path / "client", device_type=SYSTEM_TYPE,
                                 modules=[support_root / MODULE], env=with_path(vehicle.env),
                                 verify_key=signing_key[1])
    artifacts = vehicle.artifacts
    assert vehicle.versions()["telematics_control_unit"] == "tcu-firmware-v2.3.0"

    # an Artifact not signed with the device's key is refused before any state runs
    unsigned = tmp_path / "unsigned.mender"
    generate(REPO / "examples/virtual-vehicle/manifests/vehicle-v1.yaml", (SYSTEM_TYPE,),
             unsigned)
    refused = client.run("install", unsigned)
    assert refused.returncode != 0
    assert "signature" in refused.stderr.lower()
    assert vehicle.run("status").stdout.strip() == "no deployment has run on this System"

    for name, expected in (("vehicle-v1", V1), ("vehicle-v2", V2)):
        installed = client.run("install", artifacts / f"{name}.mender")
        assert installed.returncode == 0, installed.stderr
        assert "requested a reboot" not in installed.stdout
        assert vehicle.versions() == expected  # installed and verified, not yet committed
        committed = client.run("commit")
        assert committed.returncode == 0, committed.stderr
        assert vehicle.versions() == expected
        assert client.provides() == {
            "artifact_name": name,
            "data-partition.mender-orchestrator-manifest.version": name,
        }
        assert f"{name}  status succeeded" in vehicle.run("status").stdout

    # vehicle-v3 installs (its telematics self-test is made to pass for this test), then the
    # modem refuses to make the new slot permanent: the brake ECU and the seat heater were
    # already committed, and all of them go back to vehicle-v2
    (vehicle.state / "tcu" / "fail-ArtifactCommit").touch()
    v3 = tmp_path / "vehicle-v3.yaml"
    v3.write_text((REPO / "examples/virtual-vehicle/manifests/vehicle-v3.yaml").read_text()
                  .replace("tcu-firmware-v2.5.0", "tcu-firmware-v2.4.0"))
    generate(v3, (SYSTEM_TYPE,), tmp_path / "vehicle-v3.mender", key=signing_key[0])
    installed = client.run("install", tmp_path / "vehicle-v3.mender")
    assert installed.returncode == 0, installed.stderr
    assert vehicle.versions() == {"door_lock": "door-lock-fw-v1.3.0",
                                  "ecu_brake_controller": "brake-ecu-firmware-v1.9.0",
                                  "seat_heating": "seat-heating-fw-v1.3.0",
                                  "telematics_control_unit": "tcu-firmware-v2.4.0",
                                  "battery_mcu": "3.2.0"}
    committed = client.run("commit")
    assert committed.returncode != 0
    errors = failed_lines(committed)
    assert "simulated failure of ArtifactCommit on the modem" in errors
    assert "Commit failed" in errors  # the client's own report
    assert vehicle.versions() == V2
    assert client.provides()["artifact_name"] == "vehicle-v2"
    assert client.provides()["data-partition.mender-orchestrator-manifest.version"] == \
        "vehicle-v2"
    status = vehicle.run("status").stdout
    assert "vehicle-v3  status failed" in status
    assert "the System was rolled back" in status
    assert vehicle.run("resume").returncode != 0  # nothing left in progress


# --------------------------------------------------------------------------- system device


SYSTEM_DEVICE_TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: gateway-system
components:
  - component_type: gateway
    interface: rootfs-image
    interface_args: {client_options}
  - component_type: rtos
    interface: rtos-interface
    interface_args: ["1", "Automatic"]
"""


def single_file_artifact(directory: Path, name: str, content: str, target: Path) -> Path:
    """A module-image for Debian's own ``single-file`` Update Module, for the gateway."""
    payload = directory / name
    payload.mkdir()
    (payload / "config.txt").write_text(content)
    (payload / "dest_dir").write_text(str(target.parent))
    (payload / "filename").write_text(target.name)
    key, value, clears = software_version("single-file", name)
    output = directory / f"{name}.mender"
    write_artifact(ArtifactSpec(name, "single-file", ("gateway",),
                                tuple(payload / f for f in ("config.txt", "dest_dir", "filename")),
                                {key: value}, clears_provides=(clears,)), output)
    return output


def test_the_system_device_is_updated_through_its_own_client(
    system: System, support_root: Path, tmp_path: Path
) -> None:
    """The gateway's Interface is support/'s rootfs-image, which installs the gateway's
    Artifact with the gateway's Mender client; the rtos board needs the system rebooted
    (Automatic), so the device's client is asked to reboot between install and commit."""
    gateway = MenderClient.create(tmp_path / "gateway-client", device_type="gateway",
                                  modules=[DEBIAN_MODULES / "single-file"], env=system.env,
                                  image_name="gateway-v1")
    target = tmp_path / "gateway-rootfs" / "etc" / "config.txt"
    target.parent.mkdir(parents=True)
    target.write_text("factory settings\n")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    single_file_artifact(artifacts, "gateway-v2", "release 2 settings\n", target)
    write_artifact(ArtifactSpec("rtos-v2", "rtos-interface", ("rtos",),
                                (SIMULATED_UNIT,),
                                {"rootfs-image.rtos-interface.version": "rtos-v2"}),
                   artifacts / "rtos-v2.mender")

    interface = support_root / "usr/share/mender-orchestrator/interfaces/v1/rootfs-image"
    system.add_interface("rootfs-image", interface)
    system.add_interface("rtos-interface")
    options = ", ".join(f'"{option}"' for option in gateway.options("error"))
    system.write_topology(SYSTEM_DEVICE_TOPOLOGY.format(client_options=f"[{options}]"))
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 120, "RebootCommand": ["false"]})
    env = with_path(system.env)
    env["MENDER_CLIENT"] = str(gateway.wrapper(tmp_path / "gateway-mender"))
    device = MenderClient.create(tmp_path / "device-client", device_type="gateway-system",
                                 modules=[support_root / MODULE], env=env)

    before = system.run("show-provides", env={"MENDER_CLIENT": env["MENDER_CLIENT"]})
    assert before.returncode == 0, before.stderr
    gateway_id = os.uname().nodename
    assert f"gateway.{gateway_id}.rootfs-image.version=gateway-v1" in before.stdout

    manifest = tmp_path / "system-v2.yaml"
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "system-v2"\n'
        'system_types_compatible: ["gateway-system"]\ncomponent_types:\n'
        "  gateway:\n    artifact_name: gateway-v2\n    update_strategy: {order: 10}\n"
        "  rtos:\n    artifact_name: rtos-v2\n    update_strategy: {order: 20}\n")
    generate(manifest, ("gateway-system",), tmp_path / "system-v2.mender")

    installed = device.run("install", tmp_path / "system-v2.mender")
    assert installed.returncode == 0, installed.stderr
    assert "At least one payload requested a reboot of the device it updated." in \
        installed.stdout
    assert target.read_text() == "release 2 settings\n"  # installed by the gateway's client
    assert gateway.artifact_name() == "gateway-v1"  # not committed yet

    # (the device reboots here: the orchestrator takes the reboot it asked for as done)
    committed = device.run("commit")
    assert committed.returncode == 0, committed.stderr
    assert gateway.artifact_name() == "gateway-v2"
    assert gateway.provides()["rootfs-image.single-file.version"] == "gateway-v2"
    after = system.run("show-provides", env={"MENDER_CLIENT": env["MENDER_CLIENT"]})
    assert f"gateway.{gateway_id}.rootfs-image.single-file.version=gateway-v2" in after.stdout
    assert "rtos.rtos-1.rootfs-image.rtos-interface.version=rtos-v2" in after.stdout
    assert device.provides()["data-partition.mender-orchestrator-manifest.version"] == \
        "system-v2"


# --------------------------------------------------------------------------- several reboots


TWO_REBOOTS_TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: two-reboots
components:
  - component_type: board
    interface: board-interface
    interface_args: ["1", "Automatic"]
  - component_type: panel
    interface: panel-interface
    interface_args: ["1", "Automatic"]
"""
TWO_REBOOTS_MANIFEST = (
    'api_version: "mender/v1"\nkind: "manifest"\nname: "two-reboots-v2"\n'
    'system_types_compatible: ["two-reboots"]\ncomponent_types:\n'
    "  board:\n    artifact_name: board-v2\n    update_strategy: {order: 10}\n"
    "  panel:\n    artifact_name: panel-v2\n    update_strategy: {order: 20}\n")
UNITS = (("board", "1"), ("panel", "1"))
SHUTDOWN_SECONDS = 5  # from RebootCommand to the end of every process


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (the client starts its Update Modules in
    process groups of their own, so a reboot's kill is played process by process)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


class RebootingDevice:
    """A device whose system reboots the harness plays: RebootCommand only records the
    request; the harness then kills the client's whole process tree, as the shutdown would,
    and starts the next boot (a new boot id) with the command the operator runs next."""

    def __init__(self, system: System, client: MenderClient) -> None:
        self.system = system
        self.client = client
        self.reboots = system.root / "reboots"
        self.boot = 1

    def reboot_requests(self) -> int:
        return len(self.reboots.read_text().splitlines()) if self.reboots.exists() else 0

    def run(self, *args: str | Path) -> int | None:
        """The client's exit status, or None when a system reboot ended it."""
        env = dict(self.client.env)
        env["MENDER_ORCHESTRATOR_TEST_BOOT_ID"] = f"boot-{self.boot}"
        before = self.reboot_requests()
        log = self.system.root / f"client-boot-{self.boot}.log"
        with log.open("a") as output:
            process = subprocess.Popen(self.client.argv(*args), env=env, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if self.reboot_requests() > before:
                try:  # a shutdown takes a while: what the client does meanwhile counts
                    process.wait(SHUTDOWN_SECONDS)
                except subprocess.TimeoutExpired:
                    for pid in process_tree(process.pid):  # the system goes down
                        os.kill(pid, signal.SIGKILL)
                    process.wait()
                    self.boot += 1
                    return None
                break
            time.sleep(0.05)
        assert process.poll() is not None, "the client neither finished nor rebooted"
        if self.reboot_requests() > before:  # it asked for a reboot on its way out
            self.boot += 1
        return process.returncode

    def power_on(self) -> None:
        """The boot-time unit of support/systemd: resume only if the orchestrator left the
        marker (a run that rebooted the system by itself)."""
        if (self.system.datastore / "resume-at-boot").exists():
            self.system.run("resume", env={"MENDER_ORCHESTRATOR_TEST_BOOT_ID":
                                           f"boot-{self.boot}"})

    def committed(self) -> list[str]:
        return [f"{t}-{u}" for t, u in UNITS if "ArtifactCommit" in self.system.calls(t, u)]


@pytest.fixture
def two_reboots(system: System, support_root: Path, tmp_path: Path) -> RebootingDevice:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for component_type, _ in UNITS:
        interface = f"{component_type}-interface"
        system.add_interface(interface)
        name = f"{component_type}-v2"
        write_artifact(ArtifactSpec(name, interface, (component_type,), (SIMULATED_UNIT,),
                                    {f"rootfs-image.{interface}.version": name}),
                       artifacts / f"{name}.mender")
    system.write_topology(TWO_REBOOTS_TOPOLOGY)
    reboot = system.write_interface("../../../reboot",
                                    f"#!/bin/sh\necho reboot >>{system.root}/reboots\n")
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "RebootCommand": [str(reboot)], "InterfaceTimeoutSeconds": 60,
                         "RebootWaitSeconds": 200})
    manifest = tmp_path / "two-reboots-v2.yaml"
    manifest.write_text(TWO_REBOOTS_MANIFEST)
    generate(manifest, ("two-reboots",), tmp_path / "two-reboots-v2.mender")
    client = MenderClient.create(tmp_path / "client", device_type="two-reboots",
                                 modules=[support_root / MODULE], env=with_path(system.env))
    return RebootingDevice(system, client)


def install_until_the_second_reboot(device: RebootingDevice, tmp_path: Path) -> None:
    assert device.run("install", tmp_path / "two-reboots-v2.mender") == 0
    assert device.system.calls("board", "1")[-1] == "NeedsArtifactReboot"  # order 10 installed
    assert "ArtifactInstall" not in device.system.calls("panel", "1")
    device.boot += 1  # the client's own reboot, asked for with NeedsArtifactReboot
    # ArtifactCommit verifies the board, installs the panel and reboots for it: it must not
    # return (the client would report success), the reboot ends it
    assert device.run("commit") is None, "ArtifactCommit exited before the System committed"
    assert device.reboot_requests() == 1
    assert device.committed() == []
    assert device.client.artifact_name() == "factory-image"
    device.power_on()


def test_with_two_reboots_the_client_reports_success_once_every_component_committed(
    two_reboots: RebootingDevice, tmp_path: Path
) -> None:
    device = two_reboots
    install_until_the_second_reboot(device, tmp_path)
    # after the boot the operator (or the device's boot script) runs the same state again
    assert device.run("commit") == 0
    assert device.committed() == ["board-1", "panel-1"]
    assert device.client.artifact_name() == "two-reboots-v2"
    assert [device.system.version(*unit) for unit in UNITS] == ["board-v2", "panel-v2"]
    assert "two-reboots-v2  status succeeded" in device.system.run("status").stdout


def test_with_two_reboots_a_late_failure_is_reported_as_failure_never_success(
    two_reboots: RebootingDevice, tmp_path: Path
) -> None:
    device = two_reboots
    device.system.device("panel", "1").mkdir()
    (device.system.device("panel", "1") / "fail-ArtifactVerifyReboot").touch()
    install_until_the_second_reboot(device, tmp_path)
    outcomes = []
    for _ in range(3):  # each run ends in failure, or in a rollback reboot
        outcome = device.run("commit")
        outcomes.append(outcome)
        device.power_on()
        if outcome is not None:
            break
    assert 0 not in outcomes and outcomes[-1] is not None, outcomes
    assert device.committed() == []
    assert [device.system.version(*unit) for unit in UNITS] == ["factory", "factory"]
    assert device.client.artifact_name() == "factory-image"
    assert "two-reboots-v2  status failed" in device.system.run("status").stdout


def test_the_system_device_rolls_back_with_the_system_when_a_later_commit_fails(
    system: System, support_root: Path, tmp_path: Path
) -> None:
    """The gateway's client (3.4) gets its Artifact streamed from the orchestrator's pipe,
    and its commit waits for Cleanup: when the rtos board (a later order group) fails its
    ArtifactCommit, the gateway is still rollback-able and the System ends rolled back
    (exit 1), not inconsistent with the gateway on the new version."""
    gateway = MenderClient.create(tmp_path / "gateway-client", device_type="gateway",
                                  modules=[DEBIAN_MODULES / "single-file"], env=system.env,
                                  image_name="gateway-v1")
    target = tmp_path / "gateway-rootfs" / "etc" / "config.txt"
    target.parent.mkdir(parents=True)
    target.write_text("factory settings\n")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    single_file_artifact(artifacts, "gateway-v2", "release 2 settings\n", target)
    write_artifact(ArtifactSpec("rtos-v2", "rtos-interface", ("rtos",), (SIMULATED_UNIT,),
                                {"rootfs-image.rtos-interface.version": "rtos-v2"}),
                   artifacts / "rtos-v2.mender")
    system.add_interface("rootfs-image",
                         support_root / "usr/share/mender-orchestrator/interfaces/v1/rootfs-image")
    system.add_interface("rtos-interface")
    options = ", ".join(f'"{option}"' for option in gateway.options("info"))
    system.write_topology(SYSTEM_DEVICE_TOPOLOGY.format(client_options=f"[{options}]")
                          .replace('["1", "Automatic"]', '["1", "No"]'))
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 120, "RebootCommand": ["false"]})
    system.device("rtos", "1").mkdir()
    (system.device("rtos", "1") / "fail-ArtifactCommit").touch()
    manifest = tmp_path / "system-v2.yaml"
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "system-v2"\n'
        'system_types_compatible: ["gateway-system"]\ncomponent_types:\n'
        "  gateway:\n    artifact_name: gateway-v2\n    update_strategy: {order: 10}\n"
        "  rtos:\n    artifact_name: rtos-v2\n    update_strategy: {order: 20}\n")

    env = {"MENDER_CLIENT": str(gateway.wrapper(tmp_path / "gateway-mender"))}
    result = system.run("install", str(manifest), env=env)
    assert result.returncode == 1, result.stderr
    assert "Start updating from local image file: [streams/" in result.stderr  # no copy
    assert "simulated failure of ArtifactCommit on rtos 1" in result.stderr
    assert gateway.artifact_name() == "gateway-v1"
    assert target.read_text() == "factory settings\n"
    assert "the System was rolled back" in system.run("status").stdout
