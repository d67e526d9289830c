"""The journal's deferred commits: what another process sees, and when."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from orchestrator_core.journal import FLUSH_DELAY_SECONDS, Journal


def committed_finishes(path: Path) -> list[tuple[str, int]]:
    """What a second process (``mender-orchestrator status``) reads: committed rows only."""
    with sqlite3.connect(path) as other:
        return other.execute(
            "SELECT component, ok FROM event WHERE kind = 'finish' ORDER BY id"
        ).fetchall()


def test_an_event_recorded_soon_is_committed_by_flush(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    deployment = journal.begin("v2", b"manifest", {})
    journal.record(deployment, 0, "rtos/1", "finish", True, soon=True)
    journal.record(deployment, 0, "rtos/2", "finish", False, None, "it failed", soon=True)
    assert committed_finishes(tmp_path / "journal.sqlite") == []
    journal.flush()
    assert committed_finishes(tmp_path / "journal.sqlite") == [("rtos/1", 1), ("rtos/2", 0)]
    journal.close()


def test_an_event_recorded_soon_is_committed_without_flush_after_a_short_delay(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    deployment = journal.begin("v2", b"manifest", {})
    journal.record(deployment, 0, "rtos/1", "finish", True, soon=True)
    deadline = time.monotonic() + 20 * FLUSH_DELAY_SECONDS
    while not committed_finishes(tmp_path / "journal.sqlite"):
        assert time.monotonic() < deadline, "a step that runs long must not hold its ends back"
        time.sleep(FLUSH_DELAY_SECONDS / 5)
    assert committed_finishes(tmp_path / "journal.sqlite") == [("rtos/1", 1)]
    journal.close()


def test_closing_commits_what_was_recorded_soon(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    deployment = journal.begin("v2", b"manifest", {})
    journal.record(deployment, 3, "gateway/1", "finish", True, "Yes", soon=True)
    journal.close()
    assert committed_finishes(tmp_path / "journal.sqlite") == [("gateway/1", 1)]
    reopened = Journal(tmp_path / "journal.sqlite")
    [event] = [e for e in reopened.events(deployment) if e.kind == "finish"]
    assert (event.seq, event.component, event.ok, event.value) == (3, "gateway/1", True, "Yes")
    reopened.close()


# begins a deployment (write 1), records step 0's end soon, enters step 1 (write 2), then
# records step 1's end soon and ends the deployment (write 3)
WRITER = """
import sys
from pathlib import Path
import orchestrator_core.journal
from orchestrator_core.journal import Journal, StepIdentity
# only the writes commit, never the flusher thread, however slowly this machine runs the script
orchestrator_core.journal.FLUSH_DELAY_SECONDS = 3600
journal = Journal(Path(sys.argv[1]))
deployment = journal.begin("v2", b"manifest", {})
journal.record(deployment, 0, "rtos/1", "finish", True, soon=True)
step = StepIdentity("state", "ArtifactInstall", 1, "install", ("rtos/1",))
journal.step_entered(deployment, 1, step, ["rtos/1"])
journal.record(deployment, 1, "rtos/1", "finish", True, soon=True)
journal.finish_deployment(deployment, "succeeded", "done")
"""


def test_ends_recorded_soon_commit_with_the_next_write_and_before_it(tmp_path: Path) -> None:
    """Killed right after each commit, the journal holds a prefix of the rows in the order
    they were recorded: never a step entered without the end of the one before it."""
    import os
    import signal
    import subprocess
    import sys

    seen = []
    for crash_after in (1, 2, 3):
        path = tmp_path / f"{crash_after}.sqlite"
        killed = subprocess.run(
            [sys.executable, "-c", WRITER, str(path)], check=False, timeout=60,
            env={**os.environ, "MENDER_ORCHESTRATOR_TEST_CRASH_AFTER_WRITE": str(crash_after)},
        )
        assert killed.returncode == -signal.SIGKILL
        with sqlite3.connect(path) as other:
            seen.append(other.execute(
                "SELECT seq, kind FROM event ORDER BY id").fetchall())
    assert seen == [
        [],  # killed after the deployment's row, before anything else
        [(0, "finish"), (1, "enter")],  # one commit: the end first
        [(0, "finish"), (1, "enter"), (1, "finish")],  # the deployment's end carried it
    ]
