"""Deployments end to end through the CLI: real subprocess Interfaces, real .mender files.

The System is the upstream demo's (a gateway and two RTOS boards, see
examples/system-core); each simulated unit records every call it receives, so the tests
assert the exact protocol sequence SPEC 7 prescribes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from systems import FIXTURES, REPO, System, make_system

EXAMPLE = REPO / "examples" / "system-core"
QUERIES_OF_PLANNING = ["Identity", "Provides"]
DOWNLOAD = ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("artifacts")
    for version in ("v1", "v2"):
        shutil.copy(FIXTURES / f"rtos-{version}.mender", directory / f"rtos-{version}.mender")
        image = directory / f"rootfs-{version}.ext4"
        image.write_bytes(version.encode() * 2048)
        subprocess.run(
            ["mender-artifact", "write", "rootfs-image", "-t", "gateway", "-n",
             f"gateway-{version}", "-f", str(image), "-o",
             str(directory / f"gateway-{version}.mender")],
            check=True, capture_output=True,
        )
    return directory


@pytest.fixture
def core(system: System, artifacts: Path) -> System:
    system.add_interface("rootfs-image")
    system.add_interface("rtos-interface")
    shutil.copy(EXAMPLE / "topology.yaml", system.datastore / "topology.yaml")
    reboots = system.root / "reboots"
    reboot_script = system.write_interface(
        "../../../reboot-command", f"#!/bin/sh\necho reboot >> {reboots}\n"
    )
    system.write_config({
        "ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
        "RebootCommand": [str(reboot_script)],
        "InterfaceTimeoutSeconds": 30,
    })
    return system


def manifest(version: str) -> str:
    return str(EXAMPLE / f"manifest-{version}.yaml")


def versions(system: System) -> tuple[str, str, str]:
    return (system.version("gateway", "1"), system.version("rtos", "1"),
            system.version("rtos", "2"))


def states(system: System, component_type: str, unit: str) -> list[str]:
    """Calls after planning's Identity and Provides queries."""
    return [c for c in system.calls(component_type, unit) if c not in QUERIES_OF_PLANNING]


def clear_calls(system: System) -> None:
    for calls in system.devices.glob("*/calls"):
        calls.unlink()


def test_install_v1_then_v2_moves_every_component(core: System) -> None:
    result = core.run("install", manifest("v1"))
    assert result.returncode == 0, result.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    gateway = [*DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
               "ArtifactCommit", "Cleanup"]
    rtos = [*DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
            "ArtifactReboot", "ArtifactVerifyReboot", "ArtifactCommit", "Cleanup"]
    assert states(core, "gateway", "1") == gateway
    assert states(core, "rtos", "1") == rtos
    assert states(core, "rtos", "2") == rtos

    provides = core.run("show-provides")
    assert "rtos.rtos-2.rootfs-image.rtos-interface.version=rtos-v1" in provides.stdout
    inventory = core.run("show-inventory")
    assert "manifest_name=system-core-v1" in inventory.stdout.splitlines()

    result = core.run("install", manifest("v2"))
    assert result.returncode == 0, result.stderr
    assert versions(core) == ("gateway-v2", "rtos-v2", "rtos-v2")
    assert (core.datastore / "manifests" / "previous.yaml").read_text().count("system-core-v1")


def test_already_installed_components_take_no_part(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    clear_calls(core)
    result = core.run("install", manifest("v1"))
    assert result.returncode == 0, result.stderr
    for unit in (("gateway", "1"), ("rtos", "1"), ("rtos", "2")):
        assert states(core, *unit) == []
    assert "left untouched" in result.stderr


def test_install_failure_in_last_group_rolls_back_the_whole_system(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    clear_calls(core)
    (core.device("rtos", "2") / "fail-ArtifactVerifyReboot").touch()
    result = core.run("install", manifest("v2"))
    assert result.returncode == 1
    assert "rolled back" in result.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    assert states(core, "rtos", "2") == [
        *DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
        "ArtifactReboot", "ArtifactVerifyReboot",
        "ArtifactRollback", "ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot",
        "ArtifactFailure", "Cleanup",
    ]
    # the gateway's group (order 10) had finished its install: rolled back too, no reboot
    assert states(core, "gateway", "1") == [
        *DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
        "ArtifactRollback", "ArtifactFailure", "Cleanup",
    ]


def test_commit_failure_rolls_back_committed_components(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    clear_calls(core)
    (core.device("rtos", "1") / "fail-ArtifactCommit").touch()
    result = core.run("install", manifest("v2"))
    assert result.returncode == 1
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    gateway = states(core, "gateway", "1")
    assert gateway[gateway.index("ArtifactCommit"):] == [
        "ArtifactCommit", "ArtifactRollback", "ArtifactFailure", "Cleanup"]


def test_download_failure_in_lowest_group_touches_nothing_else(core: System) -> None:
    (core.device("gateway", "1")).mkdir(parents=True)
    (core.device("gateway", "1") / "fail-Download").touch()
    result = core.run("install", manifest("v1"))
    assert result.returncode == 1
    assert states(core, "gateway", "1") == [*DOWNLOAD, "Cleanup"]
    assert states(core, "rtos", "1") == []
    assert versions(core) == ("factory", "factory", "factory")


def test_update_module_contract_step_by_step(core: System) -> None:
    """SPEC 7.4 exactly as the manifest Update Module drives it, with a system reboot."""
    topology = (core.datastore / "topology.yaml").read_text()
    (core.datastore / "topology.yaml").write_text(
        topology.replace('interface_args: ["1"]', 'interface_args: ["1", "Automatic"]'))
    install = core.run("install", "--stop-before", "ArtifactCommit", "--stop-before",
                       "ArtifactRollback", "--stop-before", "Cleanup", "--exit-on-reboot",
                       manifest("v1"))
    assert install.returncode == 4, install.stderr
    assert states(core, "rtos", "1")[-2:] == ["ArtifactInstall", "NeedsArtifactReboot"]
    # the Update Module reboots the device, then ArtifactCommit runs:
    commit = core.run("resume", "--stop-before", "ArtifactRollback", "--stop-before", "Cleanup")
    assert commit.returncode == 0, commit.stderr
    assert states(core, "rtos", "1")[-2:] == ["ArtifactVerifyReboot", "ArtifactCommit"]
    assert "Cleanup" not in core.calls("rtos", "2")
    cleanup = core.run("resume")
    assert cleanup.returncode == 0, cleanup.stderr
    assert states(core, "rtos", "2")[-1] == "Cleanup"
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    nothing = core.run("resume")
    assert nothing.returncode != 0
    assert "nothing to resume" in nothing.stderr


def two_automatic_groups(core: System, **config: object) -> None:
    """The gateway (order 10) and the RTOS boards (order 20) each need a system reboot."""
    topology = (core.datastore / "topology.yaml").read_text()
    (core.datastore / "topology.yaml").write_text(
        topology.replace('["1", "No"]', '["1", "Automatic"]')
        .replace('interface_args: ["1"]', 'interface_args: ["1", "Automatic"]')
        .replace('interface_args: ["2"]', 'interface_args: ["2", "Automatic"]'))
    path = core.conf_dir / "mender-orchestrator.conf"
    core.write_config({**json.loads(path.read_text()), **config})


def test_a_stage_by_stage_run_never_exits_0_after_starting_a_reboot(core: System) -> None:
    """SPEC 7.4: the Update Module's ArtifactCommit run starts the second group's reboot; it
    must not exit 0 (the Mender client would report success for a System that may still roll
    back). It waits for the reboot to end it, and fails if the system stays up."""
    two_automatic_groups(core, RebootWaitSeconds=1)
    install = core.run("install", "--stop-before", "ArtifactCommit", "--stop-before",
                       "ArtifactRollback", "--stop-before", "Cleanup", "--exit-on-reboot",
                       manifest("v1"), env={"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-1"})
    assert install.returncode == 4, install.stderr
    commit = core.run("resume", "--stop-before", "ArtifactRollback", "--stop-before", "Cleanup",
                      env={"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-2"})
    assert (core.root / "reboots").read_text() == "reboot\n"  # RebootCommand ran, once
    assert commit.returncode == 1, commit.stderr
    assert "succeeded but the system did not go down within 1 s" in commit.stderr
    assert "stopped before ArtifactRollback" in commit.stderr
    assert not any("ArtifactCommit" in core.calls(*unit)
                   for unit in (("gateway", "1"), ("rtos", "1"), ("rtos", "2")))


def test_update_module_failure_then_rollback_command(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    (core.device("rtos", "1") / "fail-ArtifactInstall").touch()
    install = core.run("install", "--stop-before", "ArtifactCommit", "--stop-before",
                       "ArtifactRollback", "--stop-before", "Cleanup", "--exit-on-reboot",
                       manifest("v2"))
    assert install.returncode == 1
    assert "stopped before ArtifactRollback" in install.stderr
    assert "ArtifactRollback" not in core.calls("rtos", "2")
    rollback = core.run("rollback", "--stop-before", "Cleanup", "--exit-on-reboot")
    assert rollback.returncode == 0, rollback.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    again = core.run("rollback", "--stop-before", "Cleanup", "--exit-on-reboot")
    assert again.returncode == 0, again.stderr
    cleanup = core.run("resume")
    # SPEC 7.4: the rollback run already reported the failure; Cleanup itself succeeded
    assert cleanup.returncode == 0, cleanup.stderr
    assert "failed and the System was rolled back" in cleanup.stderr
    assert core.calls("rtos", "2")[-1] == "Cleanup"
    status = core.run("status")
    assert "status failed" in status.stdout


def test_a_rollback_no_run_reported_still_ends_failed(core: System) -> None:
    """Only a rollback that an earlier run completed and reported makes the final resume
    succeed: one that the final resume runs itself is the failure it reports."""
    assert core.run("install", manifest("v1")).returncode == 0
    (core.device("rtos", "1") / "fail-ArtifactInstall").touch()
    install = core.run("install", "--stop-before", "ArtifactRollback", manifest("v2"))
    assert install.returncode == 1
    finished = core.run("resume")
    assert finished.returncode == 1, finished.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    assert core.calls("rtos", "2")[-1] == "Cleanup"


def test_a_reboot_nobody_asked_for_rolls_the_system_back(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    before = {"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-1"}
    install = core.run("install", "--stop-before", "ArtifactCommit", manifest("v2"), env=before)
    assert install.returncode == 0, install.stderr
    assert versions(core) == ("gateway-v2", "rtos-v2", "rtos-v2")
    # power cut: the device comes back with a new boot id, and the Update Module resumes
    after = {"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-2"}
    resumed = core.run("resume", "--stop-before", "ArtifactRollback", "--stop-before", "Cleanup",
                       env=after)
    assert resumed.returncode == 1
    assert "rebooted during the deployment without being asked to" in resumed.stderr
    assert "ArtifactCommit" not in states(core, "rtos", "1")[-3:]
    rollback = core.run("rollback", "--stop-before", "Cleanup", env=after)
    assert rollback.returncode == 0, rollback.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")
    cleanup = core.run("resume", env=after)
    assert cleanup.returncode == 0, cleanup.stderr  # the rollback run reported the failure
    assert "status failed" in core.run("status").stdout


def test_the_reboot_we_asked_for_is_not_a_failure(core: System) -> None:
    topology = (core.datastore / "topology.yaml").read_text()
    (core.datastore / "topology.yaml").write_text(
        topology.replace('interface_args: ["1"]', 'interface_args: ["1", "Automatic"]'))
    first = core.run("install", "--exit-on-reboot", manifest("v1"),
                     env={"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-1"})
    assert first.returncode == 4, first.stderr
    resumed = core.run("resume", env={"MENDER_ORCHESTRATOR_TEST_BOOT_ID": "boot-2"})
    assert resumed.returncode == 0, resumed.stderr
    assert "without being asked" not in resumed.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")


def test_rollback_after_successful_install_rolls_back(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    install = core.run("install", "--stop-before", "ArtifactCommit", manifest("v2"))
    assert install.returncode == 0
    assert versions(core) == ("gateway-v2", "rtos-v2", "rtos-v2")
    rollback = core.run("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert versions(core) == ("gateway-v1", "rtos-v1", "rtos-v1")


def test_plan_changes_nothing(core: System) -> None:
    result = core.run("plan", manifest("v1"))
    assert result.returncode == 0, result.stderr
    assert "order group 10:" in result.stdout
    assert "rtos/rtos-2 (interface rtos-interface): factory -> rtos-v1" in result.stdout
    assert not (core.datastore / "journal.sqlite").exists()
    assert versions(core) == ("factory", "factory", "factory")


def test_incompatible_manifest_fails_before_touching_anything(core: System, tmp_path: Path
                                                               ) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(manifest("v1")).read_text().replace("rtos-v1", "gateway-v1"))
    result = core.run("install", str(bad))
    assert result.returncode == 2
    assert "rtos" in result.stderr and "device_type" in result.stderr
    assert states(core, "rtos", "1") == []
    assert "Traceback" not in result.stderr


TWO_COMPONENTS = """\
api_version: mender/v1
kind: topology
system_type: system-core
components:
  - component_type: gateway
    interface: rootfs-image
    interface_args: ["1", "No"]
  - component_type: rtos
    interface: rtos-interface
    interface_args: ["1"]
"""
JOURNAL_WRITES_OF_A_V2_DEPLOYMENT = 18  # deployment, boot, 14 steps entered (each with the ends
# of the step before), the last ends, the end


@pytest.fixture(scope="session")
def on_v1(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> System:
    """A two-Component System that already runs v1, built once and copied by each test."""
    made = make_system(tmp_path_factory.mktemp("baseline") / "system")
    made.add_interface("rootfs-image")
    made.add_interface("rtos-interface")
    made.write_topology(TWO_COMPONENTS)
    made.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                       "InterfaceTimeoutSeconds": 30})
    assert made.run("install", manifest("v1")).returncode == 0
    return made


def test_an_install_removes_query_directories_killed_runs_left(core: System) -> None:
    """A query run killed with SIGKILL leaves its directory; the next deployment removes it
    (ours, old enough, locked by nobody) and says so."""
    temporary = core.root / "tmp"
    temporary.mkdir()
    left = temporary / "mender-orchestrator-0123456789ab"
    left.mkdir(mode=0o700)
    (left / "version").write_text("1\n")
    old = time.time() - 3600
    os.utime(left, (old, old))
    done = core.run("--log-level", "info", "install", manifest("v1"),
                    env={"TMPDIR": str(temporary)})
    assert done.returncode == 0, done.stderr
    assert not left.exists()
    assert f"removed {left}, left by an orchestrator that was killed" in done.stderr


@pytest.mark.parametrize("crash_after", range(1, JOURNAL_WRITES_OF_A_V2_DEPLOYMENT + 2))
def test_kill_9_at_every_journal_write_leaves_the_system_consistent(
    on_v1: System, tmp_path: Path, crash_after: int
) -> None:
    root = tmp_path / "system"
    shutil.copytree(on_v1.root, root, symlinks=True)
    system = System(root, root / "etc", root / "usr-share", root / "var-lib", root / "devices")
    crashed = system.run("install", manifest("v2"),
                         env={"MENDER_ORCHESTRATOR_TEST_CRASH_AFTER_WRITE": str(crash_after)})
    journal = sqlite3.connect(system.datastore / "journal.sqlite")
    if crash_after > JOURNAL_WRITES_OF_A_V2_DEPLOYMENT:
        # past the last write: the deployment must have finished by itself
        assert crashed.returncode == 0, crashed.stderr
        return
    assert crashed.returncode == -9, crashed.stderr
    # odd points continue with resume, even ones with rollback, as the Update Module may
    command = "resume" if crash_after % 2 else "rollback"
    after = system.run(command)
    final = (system.version("gateway", "1"), system.version("rtos", "1"))
    assert final in (("gateway-v1", "rtos-v1"), ("gateway-v2", "rtos-v2")), after.stderr
    rows = journal.execute("SELECT status FROM deployment ORDER BY id").fetchall()
    if crash_after == 1:  # killed right after the deployment row: nothing ran yet
        assert rows[-1][0] in ("succeeded", "failed")
    status = rows[-1][0]
    assert status == ("succeeded" if final[1] == "rtos-v2" else "failed"), after.stderr
    # the journal tells the whole story: every step entered was finished
    entered = journal.execute(
        "SELECT seq, component FROM event WHERE kind = 'enter' AND deployment = 2").fetchall()
    for seq, component in entered:
        finished = journal.execute(
            "SELECT count(*) FROM event WHERE kind = 'finish' AND deployment = 2 AND seq = ? "
            "AND component = ?", (seq, component)).fetchone()[0]
        assert finished >= 1, (seq, component)
    assert "Traceback" not in after.stderr

