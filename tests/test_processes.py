"""What ``stop_leftovers`` stops, and what it leaves alone, with real processes and a real
journal: a call whose group id was never recorded (the orchestrator died right after the
fork) is found by its environment token; a recorded pid now used by an unrelated process
(same number, another start time) is not touched; nor is a call of an orchestrator that still
runs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator_core import processes
from orchestrator_core.context import Component, InterfaceContext
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.exec_driver import ExecDriver
from orchestrator_core.journal import Journal
from orchestrator_core.processes import TOKEN_VARIABLE, ProcessTable, start_time, stop_leftovers


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def sleeper(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, **env}, start_new_session=True)


def insert(path: Path, owner: tuple[int, int], pgid: int | None, start: int | None,
           token: str) -> None:
    journal = Journal(path)  # creates the schema, the process table with it
    journal.close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO process (deployment, owner_pid, owner_start, pgid, start, token, what, "
            "at) VALUES (NULL, ?, ?, ?, ?, ?, 'test call', 0)", (*owner, pgid, start, token),
        )  # fmt: skip


def gone_within(process: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_an_unrecorded_group_is_found_by_its_token(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    orphan = sleeper(**{TOKEN_VARIABLE: "t-1"})
    insert(path, (dead_pid(), 1), None, None, "t-1")
    table = ProcessTable(path, None)
    stopped = stop_leftovers(table)
    assert gone_within(orphan, 5)
    assert len(stopped) == 1 and "test call" in stopped[0]
    assert table.leftovers() == []
    table.close()


def test_a_recycled_pid_and_a_living_owner_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    unrelated = sleeper()
    start = start_time(unrelated.pid)
    assert start is not None
    # the recorded group had this number but started at another time: not ours any more
    insert(path, (dead_pid(), 1), unrelated.pid, start - 1, "t-2")
    ours = sleeper(**{TOKEN_VARIABLE: "t-3"})
    # a call of a running orchestrator (this test process) is that orchestrator's business
    insert(path, (os.getpid(), start_time(os.getpid()) or 0), ours.pid, start_time(ours.pid),
           "t-3")  # fmt: skip
    table = ProcessTable(path, None)
    try:
        assert stop_leftovers(table) == []
        time.sleep(0.2)
        assert unrelated.poll() is None and ours.poll() is None
    finally:
        table.close()
        for process in (unrelated, ours):
            process.kill()
            process.wait()


def test_a_recorded_call_gets_the_environment_of_the_run_start_and_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row written before the fork and the token the Interface inherits are the same
    call's; the rest of its environment is the orchestrator's as the run started."""
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    interface = tmp_path / "dump-environment"
    interface.write_text(f'#!/bin/sh\nenv > "{tmp_path}/env.$1"\n')
    interface.chmod(0o755)
    driver = ExecDriver(interface)
    ctx = InterfaceContext(
        component=Component("unit", "dump-environment"), log=logging.getLogger("test"),
        timeout_seconds=10, component_id="u1", work_dir=tmp_path,
    )  # fmt: skip
    monkeypatch.setenv("SET_BEFORE_THE_RUN", "yes")
    table = ProcessTable(path, 7)
    with processes.interruptible(table):
        monkeypatch.setenv("SET_DURING_THE_RUN", "yes")
        driver.artifact_install(ctx)
        tokens = [row[3] for row in table.leftovers(own=True)]
    seen = dict(
        line.split("=", 1) for line in (tmp_path / "env.ArtifactInstall").read_text().splitlines()
        if "=" in line
    )  # fmt: skip
    assert seen["SET_BEFORE_THE_RUN"] == "yes"
    assert "SET_DURING_THE_RUN" not in seen
    token = seen[TOKEN_VARIABLE]
    assert token.startswith(f"{os.getpid()}.")
    assert tokens == []  # the call ended: its row went with its group
    # outside a run nothing is recorded, and the Interface inherits the environment as it is
    driver.artifact_commit(ctx)
    seen_after = (tmp_path / "env.ArtifactCommit").read_text()
    assert TOKEN_VARIABLE not in seen_after and "SET_DURING_THE_RUN=yes" in seen_after


QUERY_CHILD = """
import sys, time
from orchestrator_core.exec_driver import _query_directory
print(_query_directory(), flush=True)
time.sleep(60)
"""


def query_child(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that made its query directory (under ``tmp_path``) and holds it."""
    child = subprocess.Popen([sys.executable, "-c", QUERY_CHILD], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_query_directories_of_killed_processes_are_removed_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator_core.exec_driver import (
        ABANDONED_AFTER_SECONDS,
        remove_abandoned_query_directories,
    )

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    living, kept = query_child(tmp_path)
    killed, abandoned = query_child(tmp_path)
    young_child, young = query_child(tmp_path)
    for child in (killed, young_child):
        child.kill()  # SIGKILL: no atexit, the directory stays
        child.wait()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not ours to remove")
    link = tmp_path / "mender-orchestrator-link"
    link.symlink_to(outside)
    old = time.time() - ABANDONED_AFTER_SECONDS - 10
    for path in (kept, abandoned, link):
        os.utime(path, (old, old), follow_symlinks=False)
    try:
        assert (abandoned / "version").read_text() == "1\n"
        removed = remove_abandoned_query_directories()
        assert abandoned in removed and not abandoned.exists()
        assert (kept / "version").exists(), "its process still runs: it holds the lock"
        assert (young / "version").exists(), "made less than a minute ago"
        assert link.is_symlink() and (outside / "keep").exists()
        assert [p for p in removed if p.parent == tmp_path] == [abandoned]
    finally:
        living.kill()
        living.wait()


def rows(path: Path) -> dict[int, tuple[int | None, str, int | None]]:
    """The process table as another connection sees it: id -> (pgid, what, deployment)."""
    with closing(sqlite3.connect(path)) as db:
        return {row: (pgid, what, deployment) for row, pgid, what, deployment
                in db.execute("SELECT id, pgid, what, deployment FROM process")}


def test_rows_are_committed_ahead_of_the_calls_and_completed_by_the_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    table = ProcessTable(path, 5)
    transactions: list[str] = []
    table._db.set_trace_callback(
        lambda sql: transactions.append(sql) if sql.startswith("BEGIN") else None)
    taken = [table.starting(f"call {n}") for n in range(12)]
    # each row is in the journal, for any other connection, once starting() returns: before
    # the fork; 12 calls took two commits (4 rows, then 8)
    assert set(rows(path)) == {row for row, _ in taken}
    assert len(transactions) == 2
    assert len({token for _, token in taken}) == 12
    assert all(token.startswith(f"{os.getpid()}.") for _, token in taken)
    first, second = taken[0][0], taken[1][0]
    table.started(first, 4242, 99)
    table.started(second, 4343, 99)
    table.ended(second)
    # leftovers(own) waits for the writer: the first is complete, the second gone, and the
    # rows taken but never started are this run's too
    own = {row[0]: (row[1], row[4], row[5]) for row in table.leftovers(own=True)}
    assert own[first] == (4242, "call 0", 5)
    assert second not in own and second not in rows(path)
    table.close()
    # closing removed the reserved rows no call took, and only those
    assert set(rows(path)) == {row for row, _ in taken} - {second}
    assert rows(path)[first] == (4242, "call 0", 5)


def test_reserved_rows_beyond_the_calls_are_removed_at_close(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    table = ProcessTable(path, None)
    row, _ = table.starting("the only call")
    assert len(rows(path)) == 4  # reserved ahead
    table.started(row, 4242, 99)
    table.ended(row)
    table.close()
    assert rows(path) == {}


def test_a_record_the_writer_could_not_commit_stops_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    table = ProcessTable(path, None)
    row, _ = table.starting("a call")
    with closing(sqlite3.connect(path)) as db:  # the record can no longer be completed
        db.execute("ALTER TABLE process RENAME TO gone")
    table.started(row, 4242, 99)
    with pytest.raises(OrchestratorError, match="process"):
        table.leftovers(own=True)
    with pytest.raises(OrchestratorError, match="process"):
        table.starting("the next call")
    table.close()
