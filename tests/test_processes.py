"""What ``stop_leftovers`` stops, and what it leaves alone, with real processes and a real
journal: a call whose group id was never recorded (the orchestrator died right after the
fork) is found by its environment token; a recorded pid now used by an unrelated process
(same number, another start time) is not touched; nor is a call of an orchestrator that still
runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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
    table = ProcessTable(path, None)
    table._write(
        "INSERT INTO process (deployment, owner_pid, owner_start, pgid, start, token, what, at) "
        "VALUES (NULL, ?, ?, ?, ?, ?, 'test call', 0)", (*owner, pgid, start, token),
    )  # fmt: skip
    table.close()


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
