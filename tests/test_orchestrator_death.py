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
dev=$SLOW_DEVICES/$4
echo "$state $$" >>"$dev/calls"
case "$state" in
    Identity) echo "id=$4" ;;
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


UNITS = [("u1",), ("u1", "u2")]  # one Component (called in the main thread) or a group of two


def slow_system(system: System, artifacts: Path, units: tuple[str, ...]) -> tuple[Path, Path]:
    """The System and its manifest; returns (devices directory, manifest)."""
    system.write_interface("slow", SLOW_INTERFACE)
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n" + "".join(
            f"  - component_type: slow\n    interface: slow\n    interface_args: [{unit}]\n"
            for unit in units)
    )  # fmt: skip
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 30})  # fmt: skip
    for unit in units:
        (system.devices / unit).mkdir()
        (system.devices / unit / "version").write_text("v1\n")
    manifest = system.root / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n  slow: {artifact_name: slow-v2, update_strategy: {order: 1}}\n"
    )
    return system.devices, manifest


def start_install(
    system: System, devices: Path, manifest: Path, units: tuple[str, ...]
) -> tuple[subprocess.Popen[str], list[int]]:
    """``install`` running, in the middle of every ArtifactInstall; returns it and the
    Interfaces' group ids."""
    orchestrator = subprocess.Popen(
        [*CLI, "install", str(manifest)], env=env(system), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid_files = [devices / unit / "install.pid" for unit in units]
    deadline = time.monotonic() + 60
    while not all(f.exists() and f.read_text().strip() for f in pid_files):
        assert orchestrator.poll() is None, orchestrator.communicate()
        assert time.monotonic() < deadline, "ArtifactInstall never started"
        time.sleep(0.05)
    return orchestrator, [int(f.read_text()) for f in pid_files]


def env(system: System) -> dict[str, str]:
    temporary = system.root / "tmp"  # where the query directory of planning goes
    temporary.mkdir(exist_ok=True)
    return {**system.env, "SLOW_DEVICES": str(system.devices), "TMPDIR": str(temporary)}


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


def assert_rolled_back(devices: Path, units: tuple[str, ...]) -> None:
    for unit in units:
        assert "late-write" not in calls(devices / unit)
        assert (devices / unit / "version").read_text() == "v1\n"
        after = calls(devices / unit)[calls(devices / unit).index("ArtifactInstall") + 1 :]
        assert after == ["ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure", "Cleanup"]


@pytest.mark.parametrize("units", UNITS, ids=len)
def test_resume_after_sigkill_stops_the_old_interface_first(
    system: System, slow_artifact: Path, units: tuple[str, ...]
) -> None:
    devices, manifest = slow_system(system, slow_artifact, units)
    orchestrator, groups = start_install(system, devices, manifest, units)
    orchestrator.kill()
    orchestrator.communicate()
    assert all(group_alive(pgid) for pgid in groups)  # orphaned, the Interfaces go on flashing

    resumed = subprocess.run([*CLI, "resume"], env=env(system), capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert resumed.returncode == 1, resumed.stderr
    assert not any(group_alive(pgid) for pgid in groups)
    time.sleep(INSTALL_SECONDS + 1)  # when the old ArtifactInstalls would have written "new"
    assert_rolled_back(devices, units)
    assert "stopped an Interface call left running by an earlier run" in resumed.stderr


@pytest.mark.parametrize("units", UNITS, ids=len)
def test_sigterm_stops_the_interface_then_releases_the_lock(
    system: System, slow_artifact: Path, units: tuple[str, ...]
) -> None:
    devices, manifest = slow_system(system, slow_artifact, units)
    for unit in units:  # so stopping them takes the whole grace, then KILL
        (devices / unit / "ignore-term").touch()
    orchestrator, groups = start_install(system, devices, manifest, units)
    orchestrator.send_signal(signal.SIGTERM)
    lock = (system.datastore / "lock").open("a+")
    deadline = time.monotonic() + 30
    while True:  # the moment the lock is free, the Interfaces must be gone already
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "the lock was never released"
            time.sleep(0.01)
    interfaces_left = [pgid for pgid in groups if group_alive(pgid)]
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    _, stderr = orchestrator.communicate(timeout=30)
    assert interfaces_left == []
    assert orchestrator.returncode == 7, stderr
    assert "interrupted by SIGTERM" in stderr
    assert "mender-orchestrator resume" in stderr and "mender-orchestrator rollback" in stderr
    with sqlite3.connect(system.datastore / "journal.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM event WHERE seq IS NULL")]
        processes = db.execute("SELECT COUNT(*) FROM process").fetchone()[0]
    assert "interrupted" in kinds
    assert processes == 0
    assert list((system.root / "tmp").iterdir()) == []
    assert (system.datastore / "work").exists()  # the File API trees: resume needs them

    # the interrupted ArtifactInstall counts as failed: resume rolls the System back
    resumed = subprocess.run([*CLI, "resume"], env=env(system), capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert resumed.returncode == 1, resumed.stderr
    assert "was interrupted" in resumed.stderr
    time.sleep(1)
    assert_rolled_back(devices, units)
