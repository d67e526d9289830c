"""Faults of the device's environment (issue 10, sections 6 and 7): a File API tree deleted
under a running deployment, a mount left in it, a disk that fills up, a read-only or damaged
journal, too few file descriptors, hostile Identity and Provides answers, the umask. Each is
a one-line message with a documented exit code, and none leaves the System wedged.

The System has one Component, ``a/a-1``, updated by the simulated unit behind a wrapper that
injects a fault when the test leaves a marker file ``<devices>/<fault>-<State>``. Faults that
need a mount (a tmpfs left in ``tmp/``, a full or read-only datastore) run the orchestrator in
a private mount namespace (``unshare``), skipped where the kernel does not allow one.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from systems import CLI, SIMULATED_UNIT, System, make_system

PLANNING = ["Identity", "Provides"]
DOWNLOAD = ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]
INSTALL = [*DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot"]

# simulated-unit plus faults on request; the real unit is run under its own name ("unit"),
# which is the version key it reports
WRAPPER = """#!/usr/bin/env bash
state=$1 work=$2 marker="$SIM_STATE_DIR/$3-$4"
if [ -e "$marker/wipe-$state" ]; then
    # the state runs, then the deployment's whole File API tree goes: work/<id>/
    rm -f "$marker/wipe-$state"; "$REAL_UNIT" "$@"; rm -rf "$(dirname "$(dirname "$work")")"; exit 1
fi
# mounts and full disks only in a test's own mount namespace, never on the machine itself
if [ -e "$marker/mount-$state" ] && [ -n "${PRIVATE_MOUNTS:-}" ]; then
    rm -f "$marker/mount-$state"
    mkdir -p "$work/tmp/mnt" && mount -t tmpfs tmpfs "$work/tmp/mnt" || exit 1
fi
if [ -e "$marker/fill-$state" ] && [ -n "${PRIVATE_MOUNTS:-}" ]; then
    # the (small, private) disk the datastore is on fills up: work/<id>/<type>/<id>/ is
    # four levels down
    cat /dev/zero > "$work/../../../../filler" 2>/dev/null
fi
exec "$REAL_UNIT" "$@"
"""


def nothing_journaled(unit: Unit) -> bool:
    """No deployment was begun: the journal is absent, or holds no deployment (install opens
    it before planning, so that planning runs under the signal guard)."""
    path = unit.datastore / "journal.sqlite"
    if not path.exists():
        return True
    with sqlite3.connect(path) as journal:
        return journal.execute("SELECT count(*) FROM deployment").fetchone()[0] == 0


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "--mount", "--map-root-user", "sh", "-c",
             "mount -t tmpfs tmpfs /mnt && umount /mnt"],
            capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _namespaces_work(),
                                  reason="needs unshare and mount in a user namespace")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("unit-artifacts")
    payload = directory / "firmware.bin"
    payload.write_bytes(bytes(range(256)) * 64)
    for version in ("v1", "v2"):
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "unit", "-t", "a", "-n",
             f"unit-{version}", "--provides", f"rootfs-image.unit.version:unit-{version}",
             "-f", str(payload), "-o", str(directory / f"unit-{version}.mender")],
            check=True, capture_output=True,
        )
    payload.unlink()
    return directory


class Unit(System):
    """The one-Component System, with the faulty wrapper as its Interface."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["REAL_UNIT"] = str(self.root / "real" / "unit")
        return env

    def manifest(self, version: str) -> Path:
        path = self.root / f"manifest-{version}.yaml"
        path.write_text(
            f"api_version: mender/v1\nkind: manifest\nname: s-{version}\n"
            "system_types_compatible: [s]\ncomponent_types:\n"
            f"  a: {{artifact_name: unit-{version}, update_strategy: {{order: 10}}}}\n")
        return path

    def fault(self, fault: str, state: str) -> None:
        directory = self.device("a", "1")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{fault}-{state}").touch()

    def states(self) -> list[str]:
        return [c for c in self.calls("a", "1") if c not in PLANNING]

    def in_namespace(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``script`` (sh) in a private mount namespace, ``"$@"`` the orchestrator's argv,
        ``env`` added to the environment."""
        merged = self.env
        merged.update(env, PRIVATE_MOUNTS="1")
        return subprocess.run(
            ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", *CLI],
            env=merged, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def unit(tmp_path: Path, artifacts: Path) -> Unit:
    made = make_system(tmp_path / "system")
    system = Unit(made.root, made.conf_dir, made.data_dir, made.datastore, made.devices)
    real = system.root / "real" / "unit"
    real.parent.mkdir()
    real.write_bytes(SIMULATED_UNIT.read_bytes())
    real.chmod(0o755)
    system.write_interface("unit", WRAPPER)
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        "  - component_type: a\n    interface: unit\n    interface_args: ['1', 'No', 'Yes']\n")
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 20})
    return system


def one_line_messages(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# ---- section 6: the File API tree


def test_a_deleted_file_api_tree_is_made_again_for_the_rollback(unit: Unit) -> None:
    unit.fault("wipe", "ArtifactInstall")
    result = unit.run("install", str(unit.manifest("v1")))
    assert result.returncode == 1, result.stderr
    assert "rolled back" in result.stderr
    assert "inconsistent" not in result.stderr
    assert unit.states() == [*DOWNLOAD, "SupportsRollback", "ArtifactInstall",
                             "ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure",
                             "Cleanup"]
    assert unit.version("a", "1") == "factory"
    assert not (unit.datastore / "work" / "1").exists()


@needs_mounts
def test_an_unremovable_work_tree_ends_the_deployment_with_a_warning(unit: Unit) -> None:
    unit.fault("mount", "ArtifactCommit")
    result = unit.in_namespace('exec "$@" install "$M"', M=str(unit.manifest("v1")))
    one_line_messages(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "the deployment has ended, but files under" in result.stderr
    assert f"{unit.datastore / 'work' / '1'}/a/a-1/tmp/mnt: Device or resource busy" in (
        result.stderr)
    assert unit.version("a", "1") == "unit-v1"
    # the journal says it ended: the System takes the next deployment
    status = unit.run("status")
    assert "succeeded" in status.stdout, status.stdout + status.stderr
    again = unit.run("install", str(unit.manifest("v2")))
    assert again.returncode == 0, again.stderr
    assert unit.version("a", "1") == "unit-v2"
    # the mount went with its namespace: what it held back is gone now
    assert list((unit.datastore / "work").iterdir()) == []


# ---- section 6: the Manifest store


def test_a_crash_between_the_manifest_store_and_the_finish_record_keeps_previous(
    unit: Unit,
) -> None:
    assert unit.run("install", str(unit.manifest("v1"))).returncode == 0
    assert unit.run("install", str(unit.manifest("v2"))).returncode == 0
    store = unit.datastore / "manifests"
    assert "name: s-v1" in (store / "previous.yaml").read_text()
    # the journal as a crash right after the store's update leaves it: not yet finished
    with sqlite3.connect(unit.datastore / "journal.sqlite") as journal:
        journal.execute("UPDATE deployment SET status = 'in_progress', finished = NULL, "
                        "summary = NULL WHERE id = 2")
    result = unit.run("resume")
    assert result.returncode == 0, result.stderr
    assert "name: s-v2" in (store / "current.yaml").read_text()
    assert "name: s-v1" in (store / "previous.yaml").read_text()


# ---- section 7: Identity and Provides answers, the umask


def test_an_id_longer_than_a_file_name_is_refused_at_the_query(unit: Unit) -> None:
    unit.write_interface("unit", "#!/bin/sh\n[ \"$1\" = Identity ] && echo id=" + "x" * 256
                         + "\n[ \"$1\" = Provides ] && echo rootfs-image.unit.version=v1\n"
                           "exit 0\n")
    for command in (["show-provides"], ["install", str(unit.manifest("v1"))]):
        result = unit.run(*command)
        one_line_messages(result.stderr)
        assert result.returncode != 0
        assert "a[0] (interface unit): the Identity query" in result.stderr, result.stderr
        assert "256 bytes" in result.stderr and "at most 255" in result.stderr
        assert "x" * 256 not in result.stderr  # an unbounded answer is never echoed whole
    assert nothing_journaled(unit)


def test_nul_in_a_provides_value_is_refused_at_the_query(unit: Unit) -> None:
    unit.write_interface("unit", "#!/bin/sh\n[ \"$1\" = Identity ] && echo id=a-1\n"
                         "[ \"$1\" = Provides ] && printf 'rootfs-image.unit.version=v\\0001\\n'"
                         "\nexit 0\n")
    for command in (["show-provides"], ["install", str(unit.manifest("v1"))]):
        result = unit.run(*command)
        one_line_messages(result.stderr)
        assert result.returncode != 0
        assert "a/a-1" in result.stderr, result.stderr
        assert "rootfs-image.unit.version" in result.stderr and "NUL" in result.stderr
        assert "\0" not in result.stdout
    assert nothing_journaled(unit)


def test_work_directories_are_private_whatever_the_umask(unit: Unit) -> None:
    result = subprocess.run(
        [*CLI, "install", "--stop-before", "ArtifactCommit", str(unit.manifest("v1"))],
        env=unit.env, capture_output=True, text=True, timeout=120, check=False, umask=0)
    assert result.returncode == 0, result.stderr
    work = unit.datastore / "work"
    for directory in (work, work / "1", work / "1" / "a", work / "1" / "a" / "a-1"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


# ---- section 6: the journal


@needs_mounts
def test_a_full_disk_stops_the_deployment_with_a_message_and_resume_rolls_back(
    unit: Unit,
) -> None:
    datastore = unit.root / "small-disk"
    datastore.mkdir()
    unit.fault("fill", "ArtifactInstall")
    # one namespace for the three commands: the small disk lives as long as it does
    script = """
        mount -t tmpfs -o size=2m tmpfs "$DS" || exit 90
        "$@" install "$M" 2>"$OUT/install.err"; echo $? >"$OUT/install.rc"
        rm "$DS/filler" || exit 91
        "$@" resume 2>"$OUT/resume.err"; echo $? >"$OUT/resume.rc"
        "$@" status >"$OUT/status.out" 2>&1
    """
    ran = unit.in_namespace(script, DS=str(datastore), M=str(unit.manifest("v1")),
                            OUT=str(unit.root), MENDER_ORCHESTRATOR_DATASTORE_DIR=str(datastore),
                            MENDER_ORCHESTRATOR_TOPOLOGY_DIR=str(unit.datastore))
    assert ran.returncode == 0, ran.stderr
    installed = (unit.root / "install.err").read_text()
    one_line_messages(installed)
    assert (unit.root / "install.rc").read_text().strip() == "3", installed
    assert "could not be written (database or disk is full)" in installed
    assert "'mender-orchestrator resume' or 'rollback'" in installed
    resumed = (unit.root / "resume.err").read_text()
    one_line_messages(resumed)
    assert (unit.root / "resume.rc").read_text().strip() == "1", resumed
    assert "rolled back" in resumed
    assert unit.states() == [*DOWNLOAD, "SupportsRollback", "ArtifactInstall",
                             "ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure",
                             "Cleanup"]
    assert unit.version("a", "1") == "factory"
    assert "status failed" in (unit.root / "status.out").read_text()


def test_a_journal_locked_by_another_process_is_busy(unit: Unit) -> None:
    assert unit.run("install", "--stop-before", "ArtifactCommit",
                    str(unit.manifest("v1"))).returncode == 0
    other = sqlite3.connect(unit.datastore / "journal.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        result = unit.run("resume")
    finally:
        other.close()
    one_line_messages(result.stderr)
    assert result.returncode == 5, result.stderr
    assert "is locked by another process (database is locked)" in result.stderr
    assert unit.states() == INSTALL  # nothing ran while it was locked
    assert unit.run("resume").returncode == 0


@needs_mounts
def test_status_and_history_read_a_journal_on_a_read_only_file_system(unit: Unit) -> None:
    assert unit.run("install", str(unit.manifest("v1"))).returncode == 0
    script = """
        mount --bind "$DS" "$DS" && mount -o remount,bind,ro "$DS" "$DS" || exit 90
        "$@" status && "$@" history
    """
    result = unit.in_namespace(script, DS=str(unit.datastore))
    one_line_messages(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "deployment 1: s-v1  status succeeded" in result.stdout
    assert re.search(r"succeeded +s-v1", result.stdout)  # the history line


def _overwrite_pages(path: Path) -> None:
    """Every page but the first (the header and schema) becomes garbage."""
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    "UPDATE deployment SET plan = '{\"components\": [' ",
    "UPDATE deployment SET plan = CAST(X'7BFF22' AS TEXT)",
    "pages",
])
def test_a_damaged_journal_is_a_message(unit: Unit, damage: str) -> None:
    assert unit.run("install", "--stop-before", "ArtifactCommit",
                    str(unit.manifest("v1"))).returncode == 0
    journal = unit.datastore / "journal.sqlite"
    if damage == "pages":
        _overwrite_pages(journal)
    else:
        with sqlite3.connect(journal) as db:
            db.execute(damage)
    for command in ("status", "history", "resume", "rollback"):
        result = unit.run(command)
        one_line_messages(result.stderr)
        assert result.returncode == 3, (command, result.stderr)
        assert f"journal {journal}" in result.stderr and "damaged" in result.stderr
        assert "move the journal aside" in result.stderr
    assert unit.states() == INSTALL


def test_too_few_file_descriptors_refuse_before_anything_changes(unit: Unit) -> None:
    result = subprocess.run(
        ["prlimit", "--nofile=12:12", *CLI, "install", str(unit.manifest("v1"))],
        env=unit.env, capture_output=True, text=True, timeout=120, check=False)
    one_line_messages(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "the limit on open files is 12; mender-orchestrator needs at least" in result.stderr
    assert unit.states() == []
    # refused before planning: not even a query reached the Component
    assert not unit.device("a", "1").exists()
    assert nothing_journaled(unit)


def test_an_emptied_journal_is_refused_loudly(unit: Unit) -> None:
    assert unit.run("install", str(unit.manifest("v1"))).returncode == 0
    assert unit.run("install", "--stop-before", "ArtifactCommit",
                    str(unit.manifest("v2"))).returncode == 0
    journal = unit.datastore / "journal.sqlite"
    for leftover in unit.datastore.glob("journal.sqlite-*"):
        leftover.unlink()
    journal.write_bytes(b"")
    for command in (["install", str(unit.manifest("v1"))], ["resume"], ["status"]):
        # install and resume say what shows that deployments ran
        traces = command[0] != "status"
        result = unit.run(*command)
        one_line_messages(result.stderr)
        assert result.returncode == 3, (command, result.stderr)
        assert f"journal {journal} is" in result.stderr, result.stderr
        assert "empty or cut short" in result.stderr
        assert (f"{unit.datastore / 'work'} holds the files of a deployment" in result.stderr
                ) is traces
    assert journal.stat().st_size == 0
    assert unit.version("a", "1") == "unit-v2"
    # the operator looked, and moved it aside: the System takes a deployment again
    journal.rename(unit.datastore / "journal.sqlite.lost")
    result = unit.run("install", str(unit.manifest("v1")))
    assert result.returncode == 0, result.stderr
    assert unit.version("a", "1") == "unit-v1"
