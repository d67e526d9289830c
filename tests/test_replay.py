"""Replay that cannot be fooled (issue 10, section 4): every journal position is checked
against the step the sequence gives there; the settings that shape the sequence are frozen in
the plan; the journal and the plan carry a format. A mismatch is refused by ``resume`` and
recovered by ``rollback``, which rolls back every Component that may have been touched.

Exact Interface call sequences come from the simulated units' own call logs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from systems import System
from unit_systems import all_calls, build_artifact, unit_system

INCONSISTENT, NOTHING_TO_RESUME = 3, 6
DOWNLOAD = ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("artifacts"), ["a", "b"])


def journal(system: System) -> sqlite3.Connection:
    return sqlite3.connect(system.datastore / "journal.sqlite", isolation_level=None)


def run_ok(system: System, *args: str, code: int = 0) -> str:
    result = system.run(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def set_retries(system: System, artifacts: Path, retries: int) -> None:
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 30, "RollbackRebootRetries": retries})


def test_rollback_reboot_retries_changed_mid_deployment_keeps_the_frozen_value(
    tmp_path: Path, artifacts: Path
) -> None:
    """The field report: a recorded SystemReboot outcome was read as ArtifactFailure's."""
    system, manifest = unit_system(tmp_path, artifacts, [("b", "Automatic")], retries=2)
    device = system.device("b", "1")
    device.mkdir(parents=True)
    (device / "fail-ArtifactCommit").touch()
    (device / "fail-ArtifactVerifyRollbackReboot").touch()

    run_ok(system, "install", "--exit-on-reboot", "--stop-before", "ArtifactRollback",
           str(manifest), code=4)
    run_ok(system, "resume", "--exit-on-reboot", "--stop-before", "ArtifactRollback", code=1)
    run_ok(system, "rollback", "--exit-on-reboot", code=4)
    run_ok(system, "resume", "--exit-on-reboot", code=4)  # verify failed once: reboot again
    run_ok(system, "resume", "--exit-on-reboot", code=4)  # twice: the last of 2 retries
    set_retries(system, artifacts, 0)  # e.g. a configuration update shipped in the rootfs
    err = run_ok(system, "resume", "--exit-on-reboot", code=INCONSISTENT)

    assert "ArtifactVerifyRollbackReboot still failing after 3 tries" in err
    assert system.calls("b", "1") == [
        "Identity", "Provides", *DOWNLOAD, "SupportsRollback", "ArtifactInstall",
        "NeedsArtifactReboot", "ArtifactVerifyReboot", "ArtifactCommit", "ArtifactRollback",
        "ArtifactVerifyRollbackReboot", "ArtifactVerifyRollbackReboot",
        "ArtifactVerifyRollbackReboot", "ArtifactFailure", "Cleanup",
    ]
    assert "status inconsistent" in system.run("status").stdout


@pytest.fixture
def stopped(tmp_path: Path, artifacts: Path) -> System:
    """Two groups (a reboots, b does not), installed and stopped before ArtifactCommit."""
    system, manifest = unit_system(tmp_path, artifacts, [("a", "Yes"), ("b", "No")])
    run_ok(system, "install", "--stop-before", "ArtifactCommit", str(manifest))
    assert (system.version("a", "1"), system.version("b", "1")) == ("unit-v2", "unit-v2")
    with journal(system) as db:
        steps = db.execute("SELECT seq, name, grp FROM step ORDER BY seq").fetchall()
    assert steps[8] == (8, "ArtifactInstall", 20)
    return system


RECOVERY_CALLS = [  # the rollback path for both, the highest group first, then Cleanup
    "b-1 ArtifactRollback", "b-1 NeedsArtifactReboot", "b-1 ArtifactFailure",
    "a-1 ArtifactRollback", "a-1 ArtifactRollbackReboot", "a-1 ArtifactVerifyRollbackReboot",
    "a-1 ArtifactFailure", "a-1 Cleanup", "b-1 Cleanup",
]


def tamper_step_8(system: System) -> None:
    with journal(system) as db:
        db.execute("UPDATE step SET name = 'ArtifactCommit' WHERE seq = 8")


def test_a_tampered_step_is_refused_by_resume_and_recovered_by_rollback(
    stopped: System,
) -> None:
    system = stopped
    tamper_step_8(system)
    before = all_calls(system)

    err = run_ok(system, "resume", code=INCONSISTENT)
    assert ("position 8 was recorded as state ArtifactCommit of order group 20 (install; "
            "b/b-1), but the plan gives state ArtifactInstall of order group 20 (install; "
            "b/b-1)") in err
    assert "run 'mender-orchestrator rollback'" in err
    assert all_calls(system) == before  # nothing was run
    assert "status in progress" in system.run("status").stdout

    err = run_ok(system, "rollback")
    assert all_calls(system)[len(before):] == RECOVERY_CALLS
    assert (system.version("a", "1"), system.version("b", "1")) == ("factory", "factory")
    status = system.run("status").stdout
    assert "status rolled back" in status
    assert "the journal stopped matching the steps (position 8 was recorded as" in status
    run_ok(system, "resume", code=NOTHING_TO_RESUME)


def test_a_recovery_stopped_before_cleanup_is_replayed_not_repeated(stopped: System) -> None:
    """The Update Module's ArtifactRollback, then its Cleanup, over a tampered journal."""
    system = stopped
    tamper_step_8(system)
    before = all_calls(system)
    run_ok(system, "rollback", "--stop-before", "Cleanup", "--exit-on-reboot")
    assert all_calls(system)[len(before):] == RECOVERY_CALLS[:-2]
    system.run("resume")
    assert all_calls(system)[len(before):] == RECOVERY_CALLS
    assert "status rolled back" in system.run("status").stdout


def test_a_plan_of_format_1_is_resumed_with_every_step_checked(
    stopped: System, artifacts: Path
) -> None:
    """A deployment begun by the previous release: its plan has no format, nothing frozen."""
    system = stopped
    with journal(system) as db:
        plan = json.loads(db.execute("SELECT plan FROM deployment").fetchone()[0])
        assert plan["format"] == 2 and plan["sequence"] == {"RollbackRebootRetries": 3}
        del plan["format"], plan["sequence"]
        db.execute("UPDATE deployment SET plan = ?", (json.dumps(plan),))
    err = run_ok(system, "resume")
    assert "did not record RollbackRebootRetries in its plan; the configured 3 is used" in err
    assert system.calls("b", "1")[-2:] == ["ArtifactCommit", "Cleanup"]


def test_a_plan_or_journal_of_an_unknown_format_is_refused_and_touches_nothing(
    stopped: System,
) -> None:
    system = stopped
    before = all_calls(system)
    with journal(system) as db:
        plan = json.loads(db.execute("SELECT plan FROM deployment").fetchone()[0])
        db.execute("UPDATE deployment SET plan = ?", (json.dumps({**plan, "format": 99}),))
    for command in ("resume", "rollback"):
        err = run_ok(system, command, code=INCONSISTENT)
        assert ("deployment 1 of s-v2: its plan has format 99; this mender-orchestrator reads "
                "formats 1 to 2") in err
    with journal(system) as db:
        db.execute("UPDATE deployment SET plan = ?", (json.dumps(plan),))
        db.execute("PRAGMA user_version = 7")
    err = run_ok(system, "resume", code=INCONSISTENT)
    assert "has format 7, newer than this mender-orchestrator reads (up to 1)" in err
    assert all_calls(system) == before


def test_a_journal_of_format_0_is_upgraded_and_still_checked(stopped: System) -> None:
    """A journal written before steps recorded their members: upgraded in place; its steps
    are still checked by kind, name, group and phase, and by the Components of their events."""
    system = stopped
    with journal(system) as db:
        db.execute("ALTER TABLE step DROP COLUMN members")
        db.execute("PRAGMA user_version = 0")
    assert "status in progress" in system.run("status").stdout  # read-only: no upgrade
    with journal(system) as db:
        db.execute("UPDATE event SET component = 'a/a-1' WHERE seq = 9")
    err = run_ok(system, "resume", code=INCONSISTENT)
    with journal(system) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT members FROM step WHERE seq = 8").fetchone() == (None,)
        assert db.execute("SELECT members FROM step WHERE seq = 7").fetchone() == (None,)
    assert "position 9 holds events of a/a-1, not members of query NeedsArtifactReboot" in err
    with journal(system) as db:
        db.execute("UPDATE event SET component = 'b/b-1' WHERE seq = 9")
    run_ok(system, "resume")
    assert system.calls("b", "1")[-2:] == ["ArtifactCommit", "Cleanup"]


def test_a_step_recorded_past_where_replay_ends_is_refused_before_anything_runs(
    stopped: System,
) -> None:
    system = stopped
    with journal(system) as db:
        db.execute("INSERT INTO step (deployment, seq, kind, name, grp, phase, members) "
                   "VALUES (1, 40, 'state', 'Cleanup', 10, 'cleanup', '[\"a/a-1\"]')")
    before = all_calls(system)
    err = run_ok(system, "resume", code=INCONSISTENT)
    assert ("the journal records steps from position 40 on but none at position 10, where the "
            "plan gives state ArtifactCommit of order group 10 (commit; a/a-1)") in err
    assert all_calls(system) == before
    run_ok(system, "rollback")
    assert all_calls(system)[len(before):] == [
        "b-1 ArtifactRollback", "b-1 ArtifactFailure", "a-1 ArtifactRollback",
        "a-1 ArtifactRollbackReboot", "a-1 ArtifactVerifyRollbackReboot", "a-1 ArtifactFailure",
        "a-1 Cleanup", "b-1 Cleanup",
    ]
    assert (system.version("a", "1"), system.version("b", "1")) == ("factory", "factory")
