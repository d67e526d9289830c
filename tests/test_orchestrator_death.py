"""The orchestrator dies or is told to stop while an Interface runs (issue 10, section 2).

A slow executable Interface sleeps in ArtifactInstall, then writes "new" to its device. The
orchestrator is killed (SIGKILL) or stopped (SIGTERM) in the middle of that sleep; the
Interface runs in a session of its own, so nothing but the orchestrator's own bookkeeping can
stop it. A late "new" after the System was rolled back is the failure these tests catch.
"""

from __future__ import annotations

import fcntl
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from systems import CLI, System

INSTALL_SECONDS = 4

SLOW_INTERFACE = f"""#!/usr/bin/env bash
set -eu
state=$1
dev=$SLOW_DEVICE
echo "$state $$" >>"$dev/calls"
case "$state" in
    Identity) echo id=u1 ;;
    Provides) echo "rootfs-image.slow.version=$(cat "$dev/version")" ;;
    NeedsArtifactReboot) echo No ;;
    SupportsRollback) echo Yes ;;
    Download)
        while read -r stream <stream-next && [ -n "$stream" ]; do cat "$stream" >/dev/null; done ;;
    ArtifactInstall)
        # a flashing session that does not give up on TERM: only KILL ends it
        [ -e "$dev/ignore-term" ] && trap '' TERM
        echo "$$" >"$dev/install.pid"
        sleep {INSTALL_SECONDS}
        echo new >"$dev/version"
        echo "late-write $$" >>"$dev/calls" ;;
    ArtifactRollback) echo v1 >"$dev/version" ;;
esac
"""


@pytest.fixture(scope="module")
def slow_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("slow-artifacts")
    payload = directory / "firmware.bin"
    payload.write_bytes(b"\x01" * 4096)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "slow", "-t", "slow", "-n", "slow-v2",
         "--provides", "rootfs-image.slow.version:slow-v2", "-f", str(payload),
         "-o", str(directory / "slow-v2.mender")],
        check=True, capture_output=True,
    )  # fmt: skip
    payload.unlink()
    return directory


def slow_system(system: System, artifacts: Path) -> tuple[Path, Path]:
    """The System and its manifest; returns (device directory, manifest)."""
    system.write_interface("slow", SLOW_INTERFACE)
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        "  - component_type: slow\n    interface: slow\n"
    )
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 30})  # fmt: skip
    device = system.devices / "slow"
    device.mkdir()
    (device / "version").write_text("v1\n")
    manifest = system.root / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n  slow: {artifact_name: slow-v2, update_strategy: {order: 1}}\n"
    )
    return device, manifest


def start_install(
    system: System, device: Path, manifest: Path
) -> tuple[subprocess.Popen[str], int]:
    """``install`` running, in the middle of ArtifactInstall; returns it and the group id."""
    env = {**system.env, "SLOW_DEVICE": str(device)}
    orchestrator = subprocess.Popen(
        [*CLI, "install", str(manifest)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid_file = device / "install.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert orchestrator.poll() is None, orchestrator.communicate()
        assert time.monotonic() < deadline, "ArtifactInstall never started"
        time.sleep(0.05)
    return orchestrator, int(pid_file.read_text())


def group_alive(pgid: int) -> bool:
    """Some process of group ``pgid`` still runs (a zombie, dead and not yet reaped by
    whoever inherited it, does not count)."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, NotADirectoryError):
            continue
        state, _, group = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def calls(device: Path) -> list[str]:
    return [line.split()[0] for line in (device / "calls").read_text().splitlines()]


def test_resume_after_sigkill_stops_the_old_interface_first(system: System,
                                                             slow_artifact: Path) -> None:
    device, manifest = slow_system(system, slow_artifact)
    orchestrator, pgid = start_install(system, device, manifest)
    orchestrator.kill()
    orchestrator.communicate()
    assert group_alive(pgid)  # the orphaned Interface goes on flashing

    resumed = system.run("resume", env={"SLOW_DEVICE": str(device)})
    assert resumed.returncode == 1, resumed.stderr
    assert not group_alive(pgid)
    time.sleep(INSTALL_SECONDS + 1)  # when the old ArtifactInstall would have written "new"
    assert "late-write" not in calls(device)
    assert (device / "version").read_text() == "v1\n"
    after_kill = calls(device)[calls(device).index("ArtifactInstall") + 1 :]
    assert after_kill == ["ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure", "Cleanup"]
    assert "stopped an Interface call left running by an earlier run" in resumed.stderr


def test_sigterm_stops_the_interface_then_releases_the_lock(system: System,
                                                            slow_artifact: Path) -> None:
    device, manifest = slow_system(system, slow_artifact)
    (device / "ignore-term").touch()  # so stopping it takes the whole grace, then KILL
    orchestrator, pgid = start_install(system, device, manifest)
    orchestrator.send_signal(signal.SIGTERM)
    lock = (system.datastore / "lock").open("a+")
    deadline = time.monotonic() + 30
    while True:  # the moment the lock is free, the Interface must be gone already
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "the lock was never released"
            time.sleep(0.01)
    interface_left = group_alive(pgid)
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    _, stderr = orchestrator.communicate(timeout=30)
    assert not interface_left
    assert orchestrator.returncode == 7, stderr
    assert "interrupted by SIGTERM" in stderr
    assert "mender-orchestrator resume" in stderr and "mender-orchestrator rollback" in stderr
    with sqlite3.connect(system.datastore / "journal.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM event WHERE seq IS NULL")]
        processes = db.execute("SELECT COUNT(*) FROM process").fetchone()[0]
    assert "interrupted" in kinds
    assert processes == 0

    # the interrupted ArtifactInstall counts as failed: resume rolls the System back
    resumed = system.run("resume", env={"SLOW_DEVICE": str(device)})
    assert resumed.returncode == 1, resumed.stderr
    assert "was interrupted" in resumed.stderr
    time.sleep(1)
    assert "late-write" not in calls(device)
    assert (device / "version").read_text() == "v1\n"
    after_stop = calls(device)[calls(device).index("ArtifactInstall") + 1 :]
    assert after_stop == ["ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure", "Cleanup"]
