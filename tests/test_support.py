"""support/: the Update Module, the inventory script, the rootfs-image Interface and the
boot-time unit, installed by their Makefile and run as the Mender client and systemd run them.

The Update Module is called here exactly as a Mender client calls it (``STATE FILES_DIR``,
in the payload tree); the orchestrator it drives is the real CLI behind a recorder that logs
each command line, so the tests check the SPEC 7.4 table word for word. The real Mender
client itself drives the same module in test_mender_client_e2e.py.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systems import FIXTURES, REPO, System

from orchestrator_core.artifact.writer import ArtifactSpec, software_version, write_artifact

SUPPORT = REPO / "support"
BIN = Path(sys.executable).parent

TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: support-test
components:
  - component_type: rtos
    interface: rtos-interface
    interface_args: ["1"]
  - component_type: hmi
    interface: hmi-interface
    interface_args: ["1", "{hmi_reboot}"]
"""


def manifest_text(name: str, rtos: str, hmi: str) -> str:
    return (
        f'api_version: "mender/v1"\nkind: "manifest"\nname: "{name}"\n'
        'system_types_compatible: ["support-test"]\ncomponent_types:\n'
        f"  rtos:\n    artifact_name: {rtos}\n    update_strategy: {{order: 10}}\n"
        f"  hmi:\n    artifact_name: {hmi}\n    update_strategy: {{order: 20}}\n"
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """support/ installed by its Makefile into a private root, as an image build would."""
    root = tmp_path_factory.mktemp("root")
    subprocess.run(
        ["make", "-s", "-C", str(SUPPORT), "install", f"DESTDIR={root}", f"BINDIR={BIN}",
         "DATASTORE=/var/lib/mender-orchestrator"],
        check=True, capture_output=True, timeout=60,
    )
    return root


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("artifacts")
    for version in ("v1", "v2"):
        shutil.copy(FIXTURES / f"rtos-{version}.mender", directory)
        image = directory / f"hmi-{version}.img"
        image.write_bytes(version.encode() * 100)
        key, value, clears = software_version("hmi-interface", f"hmi-{version}")
        write_artifact(ArtifactSpec(f"hmi-{version}", "hmi-interface", ("hmi",), (image,),
                                    {key: value}, clears_provides=(clears,)),
                       directory / f"hmi-{version}.mender")
    return directory


def make_system(system: System, artifacts: Path, hmi_reboot: str = "No") -> System:
    system.add_interface("rtos-interface")
    system.add_interface("hmi-interface")
    system.write_topology(TOPOLOGY.format(hmi_reboot=hmi_reboot))
    reboot = system.write_interface("../../../reboot", f"#!/bin/sh\necho reboot >>{system.root}"
                                                       "/reboots\n")
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "RebootCommand": [str(reboot)], "InterfaceTimeoutSeconds": 30})
    return system


def versions(system: System) -> dict[str, str]:
    result = system.run("show-provides")
    assert result.returncode == 0, result.stderr
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in result.stdout.splitlines()
            if ".version=" in line}


def at(system: System, rtos: str, hmi: str) -> bool:
    return versions(system) == {
        "rtos.rtos-1.rootfs-image.rtos-interface.version": rtos,
        "hmi.hmi-1.rootfs-image.hmi-interface.version": hmi,
    }


QUERIES = {"Identity", "Provides", "Inventory", "NeedsUnpackedArtifact",
           "ProvidePayloadFileSizes", "SupportsRollback", "NeedsArtifactReboot"}


def states(system: System, component_type: str, unit: str) -> list[str]:
    """The protocol states a simulated unit went through, queries left out."""
    return [call for call in system.calls(component_type, unit) if call not in QUERIES]


class Module:
    """The Update Module in a payload tree, called the way a Mender client calls it."""

    def __init__(self, installed: Path, system: System, tmp_path: Path, *manifests: Path):
        self.path = installed / "usr/share/mender/modules/v3/mender-orchestrator-manifest"
        self.system = system
        self.tree = tmp_path / "payloads" / "0000" / "tree"
        for directory in ("files", "tmp", "header"):
            (self.tree / directory).mkdir(parents=True)
        (self.tree / "version").write_text("3\n")
        for manifest in manifests:
            shutil.copy(manifest, self.tree / "files" / manifest.name)
        self.commands = tmp_path / "orchestrator-commands"
        self.recorder = tmp_path / "mender-orchestrator"
        # logs the command line and exit status, runs the real CLI
        self.recorder.write_text(
            "#!/bin/sh\n"
            f"echo \"$*\" >>{self.commands}\n"
            f"{shlex.quote(sys.executable)} -m orchestrator_core \"$@\"\n"
            "rc=$?\n"
            f"echo \"exit $rc\" >>{self.commands}\n"
            "exit $rc\n"
        )
        self.recorder.chmod(0o755)

    def __call__(self, state: str) -> subprocess.CompletedProcess[str]:
        env = self.system.env
        env["MENDER_ORCHESTRATOR_BIN"] = str(self.recorder)
        return subprocess.run([str(self.path), state, str(self.tree)], cwd=self.tree, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    def run_ok(self, state: str) -> str:
        result = self(state)
        assert result.returncode == 0, f"{state}: {result.stderr}"
        return result.stdout

    def log(self) -> list[str]:
        return self.commands.read_text().splitlines() if self.commands.exists() else []


INSTALL = ("install --stop-before ArtifactCommit --stop-before ArtifactRollback "
           "--stop-before Cleanup --exit-on-reboot {}")
COMMIT = "resume --stop-before ArtifactRollback --stop-before Cleanup"
ROLLBACK = "rollback --stop-before Cleanup --exit-on-reboot"


def write_manifest(tmp_path: Path, name: str, rtos: str, hmi: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(manifest_text(name, rtos, hmi))
    return path


def deploy_v1(system: System, tmp_path: Path) -> None:
    result = system.run("install", str(write_manifest(tmp_path, "sys-v1", "rtos-v1", "hmi-v1")))
    assert result.returncode == 0, result.stderr
    if (system.datastore / "resume-at-boot").exists():  # it rebooted the system: boot
        result = system.run("resume")
        assert result.returncode == 0, result.stderr
    assert at(system, "rtos-v1", "hmi-v1")


# --------------------------------------------------------------------------- installation


def test_make_install_puts_every_file_at_its_standard_path(installed: Path) -> None:
    expected = {
        "usr/share/mender/modules/v3/mender-orchestrator-manifest": 0o755,
        "usr/share/mender/inventory/mender-inventory-mender-orchestrator": 0o755,
        "usr/share/mender-orchestrator/interfaces/v1/rootfs-image": 0o755,
        "usr/lib/systemd/system/mender-orchestrator-resume.service": 0o644,
    }
    found = {str(p.relative_to(installed)): p.stat().st_mode & 0o777
             for p in installed.rglob("*") if p.is_file()}
    assert found == expected
    unit = (installed / "usr/lib/systemd/system/mender-orchestrator-resume.service").read_text()
    assert f"ExecStart={BIN}/mender-orchestrator resume" in unit
    assert "ConditionPathExists=/var/lib/mender-orchestrator/resume-at-boot" in unit
    assert "@" not in unit.replace("mender-orchestrator", "")


def make_support(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(SUPPORT), *args, f"BINDIR={BIN}"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_datastore_lives_on_the_persistent_partition_when_there_is_one(
    tmp_path: Path,
) -> None:
    """As Mender links /var/lib/mender to /data/mender: the upstream docs keep the Topology in
    /data/mender-orchestrator/, which survives an update of the root filesystem."""
    plain = tmp_path / "no-data-partition"
    assert make_support("install", f"DESTDIR={plain}").returncode == 0
    assert not (plain / "var/lib/mender-orchestrator").exists()
    assert not (plain / "data").exists()

    image = tmp_path / "image"
    (image / "data").mkdir(parents=True)
    (image / "var/lib/mender-orchestrator").mkdir(parents=True)  # empty: replaced
    for _ in range(2):  # and again over its own link
        result = make_support("install", f"DESTDIR={image}")
        assert result.returncode == 0, result.stderr
        link = image / "var/lib/mender-orchestrator"
        assert link.is_symlink()
        assert str(link.readlink()) == "/data/mender-orchestrator"
        assert (image / "data/mender-orchestrator").stat().st_mode & 0o777 == 0o700

    kept = tmp_path / "kept"
    (kept / "data").mkdir(parents=True)
    (kept / "var/lib/mender-orchestrator").mkdir(parents=True)
    (kept / "var/lib/mender-orchestrator/topology.yaml").write_text("kind: topology\n")
    refused = make_support("install", f"DESTDIR={kept}")
    assert refused.returncode != 0
    assert f"{kept}/var/lib/mender-orchestrator holds files; move them to {kept}/data/" \
        "mender-orchestrator" in refused.stderr
    assert (kept / "var/lib/mender-orchestrator/topology.yaml").is_file()

    assert make_support("uninstall", f"DESTDIR={image}").returncode == 0
    assert not (image / "var/lib/mender-orchestrator").is_symlink()
    assert (image / "data/mender-orchestrator").is_dir()  # the data itself stays


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(installed: Path) -> None:
    unit = installed / "usr/lib/systemd/system/mender-orchestrator-resume.service"
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


# --------------------------------------------------------------------------- the Update Module


def test_a_deployment_runs_the_contract_commands(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts)
    deploy_v1(system, tmp_path)
    manifest = write_manifest(tmp_path, "sys-v2", "rtos-v2", "hmi-v2")
    module = Module(installed, system, tmp_path, manifest)

    assert module.run_ok("Download") == ""
    assert module.run_ok("SupportsRollback") == "Yes\n"
    module.run_ok("ArtifactInstall")
    assert module.run_ok("NeedsArtifactReboot") == "No\n"
    assert at(system, "rtos-v2", "hmi-v2")  # installed; not committed yet
    assert states(system, "hmi", "1")[-1] == "ArtifactInstall"
    module.run_ok("ArtifactCommit")
    assert states(system, "hmi", "1")[-1] == "ArtifactCommit"
    module.run_ok("Cleanup")
    assert states(system, "hmi", "1")[-1] == "Cleanup"

    assert module.log() == [
        INSTALL.format(module.tree / "files" / manifest.name), "exit 0",
        COMMIT, "exit 0",
        "resume", "exit 0",
    ]
    assert at(system, "rtos-v2", "hmi-v2")
    assert "status succeeded" in system.run("status").stdout


def test_exit_4_becomes_an_automatic_reboot_by_the_client(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts, hmi_reboot="Automatic")
    deploy_v1(system, tmp_path)
    module = Module(installed, system, tmp_path,
                    write_manifest(tmp_path, "sys-v2", "rtos-v2", "hmi-v2"))
    (system.root / "reboots").unlink()

    module.run_ok("Download")
    module.run_ok("ArtifactInstall")
    assert module.log()[-1] == "exit 4"
    assert module.run_ok("NeedsArtifactReboot") == "Automatic\n"
    # the Mender client reboots the device; the orchestrator never ran its RebootCommand
    assert not (system.root / "reboots").exists()
    assert module.run_ok("ArtifactVerifyReboot") == ""
    module.run_ok("ArtifactCommit")
    module.run_ok("Cleanup")
    assert states(system, "hmi", "1")[-5:] == [
        "Download", "ArtifactInstall", "ArtifactVerifyReboot", "ArtifactCommit", "Cleanup"]
    assert at(system, "rtos-v2", "hmi-v2")


def test_a_failed_install_rolls_the_system_back(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts)
    deploy_v1(system, tmp_path)
    module = Module(installed, system, tmp_path,
                    write_manifest(tmp_path, "sys-v2", "rtos-v2", "hmi-v2"))
    system.device("hmi", "1").joinpath("fail-ArtifactInstall").touch()

    failed = module("ArtifactInstall")
    assert failed.returncode == 1
    assert "simulated failure of ArtifactInstall on hmi 1" in failed.stderr
    assert at(system, "rtos-v2", "hmi-v1")  # rtos installed, hmi not
    module.run_ok("ArtifactRollback")
    assert at(system, "rtos-v1", "hmi-v1")
    module.run_ok("ArtifactFailure")
    module.run_ok("Cleanup")
    # the orchestrator itself exits 0: the rollback it finishes was reported by ROLLBACK
    assert module.log()[-4:] == [ROLLBACK, "exit 0", "resume", "exit 0"]
    assert not any((module.tree / "tmp").iterdir())  # no marker file works around it
    assert "status failed" in system.run("status").stdout
    assert system.run("resume").returncode != 0  # nothing left in progress


def test_a_failed_commit_rolls_back_components_already_committed(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts)
    deploy_v1(system, tmp_path)
    module = Module(installed, system, tmp_path,
                    write_manifest(tmp_path, "sys-v2", "rtos-v2", "hmi-v2"))
    system.device("hmi", "1").joinpath("fail-ArtifactCommit").touch()

    module.run_ok("ArtifactInstall")
    failed = module("ArtifactCommit")
    assert failed.returncode == 1
    assert states(system, "rtos", "1")[-1] == "ArtifactCommit"  # order 10 was committed
    module.run_ok("ArtifactRollback")
    module.run_ok("ArtifactFailure")
    module.run_ok("Cleanup")
    assert at(system, "rtos-v1", "hmi-v1")
    assert "ArtifactRollback" in system.calls("rtos", "1")


def test_a_refused_manifest_touches_nothing_and_rolls_back_cleanly(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts)
    deploy_v1(system, tmp_path)
    module = Module(installed, system, tmp_path,
                    write_manifest(tmp_path, "sys-v9", "rtos-v9", "hmi-v1"))
    states_before = states(system, "rtos", "1")

    failed = module("ArtifactInstall")
    assert failed.returncode != 0
    assert "rtos-v9" in failed.stderr
    rolled_back = module("ArtifactRollback")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "no orchestrator deployment is in progress; nothing to do in ArtifactRollback" in \
        rolled_back.stderr
    module.run_ok("Cleanup")
    assert at(system, "rtos-v1", "hmi-v1")
    assert states(system, "rtos", "1") == states_before


@pytest.mark.parametrize("payload", [[], ["a.yaml", "b.yaml"]])
def test_the_payload_must_be_exactly_one_manifest(
    installed: Path, system: System, tmp_path: Path, payload: list[str]
) -> None:
    files = []
    for name in payload:
        files.append(tmp_path / name)
        files[-1].write_text("kind: manifest\n")
    module = Module(installed, system, tmp_path, *files)
    failed = module("ArtifactInstall")
    assert failed.returncode == 1
    assert "expected exactly one file, the Manifest YAML" in failed.stderr
    assert module.log() == []


def test_unknown_states_print_nothing_and_succeed(installed: Path, system: System,
                                                  tmp_path: Path) -> None:
    module = Module(installed, system, tmp_path)
    for state in ("ArtifactFailure", "ArtifactRollbackReboot", "SomeFutureState"):
        result = module(state)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert module.log() == []


# --------------------------------------------------------------------------- inventory


def test_the_inventory_script_relays_show_inventory(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts)
    deploy_v1(system, tmp_path)
    script = installed / "usr/share/mender/inventory/mender-inventory-mender-orchestrator"
    env = system.env
    env["MENDER_ORCHESTRATOR_BIN"] = str(BIN / "mender-orchestrator")

    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == system.run("show-inventory").stdout
    assert "sys-v1" in result.stdout
    assert "hmi.hmi-1.rootfs-image.hmi-interface.version=hmi-v1" in result.stdout

    # one broken Component: the others are still sent, the error is logged
    system.device("rtos", "1").joinpath("fail-Provides").touch()
    partial = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert partial.returncode == 0
    assert "hmi.hmi-1.rootfs-image.hmi-interface.version=hmi-v1" in partial.stdout
    assert "rtos.rtos-1." not in partial.stdout
    assert "simulated failure of Provides on rtos 1" in partial.stderr

    # nothing at all to say (no Topology): the failure is the script's
    (system.datastore / "topology.yaml").unlink()
    broken = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert broken.returncode != 0
    assert broken.stdout == ""
    assert "topology.yaml" in broken.stderr


def test_the_inventory_script_skips_a_poll_while_a_deployment_runs(
    installed: Path, system: System
) -> None:
    import fcntl

    system.add_interface("rtos-interface")
    system.write_topology(TOPOLOGY.format(hmi_reboot="No").split("  - component_type: hmi")[0])
    script = installed / "usr/share/mender/inventory/mender-inventory-mender-orchestrator"
    env = system.env
    env["MENDER_ORCHESTRATOR_BIN"] = str(BIN / "mender-orchestrator")
    with (system.datastore / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running deployment holds
        busy = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert (busy.returncode, busy.stdout) == (0, "")
    assert "a deployment is running on this System right now" in busy.stderr
    assert system.calls("rtos", "1") == []  # no Component was asked in the middle of it
    after = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert after.returncode == 0, after.stderr
    assert "rtos.rtos-1.rootfs-image.rtos-interface.version=factory" in after.stdout


# --------------------------------------------------------------------------- rootfs-image


def test_rootfs_image_interface_without_a_client(installed: Path, tmp_path: Path) -> None:
    interface = installed / "usr/share/mender-orchestrator/interfaces/v1/rootfs-image"
    empty = tmp_path / "empty-path"
    empty.mkdir()

    def call(state: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(interface), state, str(tmp_path), "gateway"],
                              env={"PATH": str(empty)}, capture_output=True, text=True,
                              timeout=30, check=False)

    assert call("NeedsUnpackedArtifact").stdout == "No\n"
    assert call("SupportsRollback").stdout == "Yes\n"
    missing = call("Provides")
    assert missing.returncode == 1
    assert "no Mender client found: neither mender-update (client 4+) nor mender (3.x)" in \
        missing.stderr
    assert (call("NewState").returncode, call("NewState").stdout) == (0, "")


# --------------------------------------------------------------------------- resume at boot


def unit_command(installed: Path, datastore: Path) -> tuple[Path, list[str]]:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(installed / "usr/lib/systemd/system/mender-orchestrator-resume.service")
    condition = unit["Unit"]["ConditionPathExists"].replace(
        "/var/lib/mender-orchestrator", str(datastore))
    return Path(condition), shlex.split(unit["Service"]["ExecStart"])


def test_the_unit_resumes_after_a_reboot_the_orchestrator_started(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    make_system(system, artifacts, hmi_reboot="Automatic")
    deploy_v1(system, tmp_path)
    condition, command = unit_command(installed, system.datastore)
    assert not condition.exists()

    started = system.run("install", str(write_manifest(tmp_path, "sys-v2", "rtos-v2",
                                                         "hmi-v2")))
    assert started.returncode == 0, started.stderr
    assert (system.root / "reboots").read_text().count("reboot") == 2  # v1 and now v2
    assert condition.exists()
    assert not at(system, "rtos-v2", "hmi-v2")  # hmi waits for its verify after the reboot

    # boot: systemd starts the unit because its condition holds
    booted = subprocess.run(command, env=system.env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert booted.returncode == 0, booted.stderr
    assert not condition.exists()
    assert at(system, "rtos-v2", "hmi-v2")
    assert "status succeeded" in system.run("status").stdout


def test_the_unit_stays_out_of_a_deployment_driven_stage_by_stage(
    installed: Path, system: System, artifacts: Path, tmp_path: Path
) -> None:
    """A caller passing --stop-before (the Mender client) continues by itself."""
    make_system(system, artifacts, hmi_reboot="Automatic")
    deploy_v1(system, tmp_path)
    condition, _ = unit_command(installed, system.datastore)
    config = system.conf_dir / "mender-orchestrator.conf"
    system.write_config({**json.loads(config.read_text()), "RebootWaitSeconds": 1})
    manifest = write_manifest(tmp_path, "sys-v2", "rtos-v2", "hmi-v2")
    started = system.run("install", "--stop-before", "ArtifactCommit", "--stop-before",
                         "ArtifactRollback", str(manifest))
    # it waits for the reboot to end it (this test's RebootCommand only records it)
    assert started.returncode == 1, started.stderr
    assert "the system did not go down within 1 s" in started.stderr
    assert "stopped before ArtifactRollback" in started.stderr
    assert (system.root / "reboots").read_text().count("reboot") == 2
    assert not condition.exists()


def test_rootfs_image_identity_comes_from_the_device_identity_script(
    installed: Path, tmp_path: Path
) -> None:
    interface = installed / "usr/share/mender-orchestrator/interfaces/v1/rootfs-image"
    script = tmp_path / "mender-device-identity"
    script.write_text("#!/bin/sh\necho mac=02:00:00:00:00:01\necho serial=ignored\n")
    script.chmod(0o755)

    def identity(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(interface), "Identity", str(tmp_path), "gateway"],
                              env={"PATH": "/usr/bin:/bin", "MENDER_DEVICE_IDENTITY": str(path)},
                              capture_output=True, text=True, timeout=30, check=False)

    assert identity(script).stdout == "id=02:00:00:00:00:01\n"
    script.write_text("#!/bin/sh\nexit 3\n")
    failed = identity(script)
    assert failed.returncode == 1
    assert f"the device identity script {script} failed" in failed.stderr
    missing = identity(tmp_path / "absent")
    assert missing.stdout == f"id={os.uname().nodename}\n"
    assert f"no device identity script at {tmp_path / 'absent'}; using the host name" in \
        missing.stderr


STANDIN_TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: support-test
components:
  - component_type: gateway
    interface: rootfs-image
    interface_args: ["--data", "{data}"]
  - component_type: rtos
    interface: rtos-interface
    interface_args: ["1", "No"]
"""


@pytest.fixture
def standin_system(installed: Path, system: System, artifacts: Path, tmp_path: Path
                   ) -> tuple[System, Path]:
    """The gateway runs mender-update (4/5), played by tests/mender_update_standin.py."""
    data = tmp_path / "mender-update-data"
    data.mkdir()
    (data / "device_type").write_text("device_type=gateway\n")
    (data / "standin-db.json").write_text(json.dumps(
        {"name": "gateway-v1", "provides": {"rootfs-image.version": "gateway-v1"}}))
    client = tmp_path / "bin" / "mender-update"
    client.parent.mkdir()
    client.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(REPO / 'tests/mender_update_standin.py'))} \"$@\"\n")
    client.chmod(0o755)
    image = tmp_path / "gateway-v2.ext4"
    image.write_bytes(b"v2" * 4096)
    subprocess.run(["mender-artifact", "write", "rootfs-image", "-t", "gateway", "-n",
                    "gateway-v2", "-f", str(image), "-o", str(artifacts / "gateway-v2.mender")],
                   check=True, capture_output=True, timeout=60)
    system.add_interface("rootfs-image",
                         installed / "usr/share/mender-orchestrator/interfaces/v1/rootfs-image")
    system.add_interface("rtos-interface")
    system.write_topology(STANDIN_TOPOLOGY.format(data=data))
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "RebootCommand": ["false"], "InterfaceTimeoutSeconds": 30})
    return system, client


def standin_calls(data: Path) -> list[str]:
    return [line for line in (data / "calls").read_text().splitlines()
            if not line.startswith("show-")]


def deploy_through_standin(system: System, client: Path, tmp_path: Path
                           ) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "gw.yaml"
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "gw-v2"\n'
        'system_types_compatible: ["support-test"]\ncomponent_types:\n'
        "  gateway:\n    artifact_name: gateway-v2\n    update_strategy: {order: 10}\n"
        "  rtos:\n    artifact_name: rtos-v2\n    update_strategy: {order: 20}\n")
    env = {"MENDER_CLIENT": str(client), "MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-1"}
    install = system.run("install", "--exit-on-reboot", str(manifest), env=env)
    assert install.returncode == 4, install.stderr  # the gateway's rootfs needs the reboot
    return system.run("resume", env={**env, "MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-2"})


def test_rootfs_image_drives_mender_update_stage_by_stage(
    standin_system: tuple[System, Path], tmp_path: Path
) -> None:
    system, client = standin_system
    data = tmp_path / "mender-update-data"
    resumed = deploy_through_standin(system, client, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    calls = standin_calls(data)
    # streamed from the orchestrator's pipe, no copy; the commit ends only in Cleanup
    assert calls[0].startswith("install --stop-before ArtifactInstall_Enter streams/")
    assert calls[1:] == ["resume --reboot-exit-code --stop-before ArtifactCommit_Enter",
                         "commit --stop-before ArtifactCommit_Leave", "resume"]
    provides = system.run("show-provides", env={"MENDER_CLIENT": str(client)}).stdout
    assert ".rootfs-image.version=gateway-v2" in provides


def test_rootfs_image_keeps_mender_update_rollback_able_until_the_system_committed(
    standin_system: tuple[System, Path], tmp_path: Path
) -> None:
    system, client = standin_system
    data = tmp_path / "mender-update-data"
    system.device("rtos", "1").mkdir(exist_ok=True)
    (system.device("rtos", "1") / "fail-ArtifactCommit").touch()
    resumed = deploy_through_standin(system, client, tmp_path)
    assert resumed.returncode == 1, resumed.stderr  # rolled back, not inconsistent
    assert standin_calls(data)[-2:] == ["commit --stop-before ArtifactCommit_Leave", "rollback"]
    provides = system.run("show-provides", env={"MENDER_CLIENT": str(client)}).stdout
    assert ".rootfs-image.version=gateway-v1" in provides
