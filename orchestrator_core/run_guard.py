"""Around every run that touches a deployment (``install``, ``resume``, ``rollback``), under
the lock: first stop what an earlier, dead orchestrator left running (and remove the query
directories that killed orchestrators left behind); then, if a stop signal arrives, wind the
run down so that nothing of it is left running when the lock is released.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator_core import drivers, processes
from orchestrator_core.config import Config
from orchestrator_core.exec_driver import remove_abandoned_query_directories
from orchestrator_core.journal import Journal
from orchestrator_core.processes import Interrupted, InterruptedRun, ProcessTable

log = logging.getLogger("mender_orchestrator.engine")


class Guard:
    def __init__(self, table: ProcessTable, command: str) -> None:
        self.table = table
        self.command = command

    @property
    def deployment(self) -> int | None:
        return self.table.deployment

    @deployment.setter
    def deployment(self, value: int) -> None:
        self.table.deployment = value


@contextmanager
def guarded(config: Config, journal: Journal, command: str) -> Iterator[Guard]:
    """Run the body with leftovers stopped first and stop signals turned into exit code 7.

    ``journal`` must be open (its schema holds the process table); set ``deployment`` on the
    guard once the run knows which deployment it works on.
    """
    table = ProcessTable(config.journal_path, None)
    guard = Guard(table, command)
    with processes.interruptible(table):
        try:
            processes.stop_leftovers(table)
            for directory in remove_abandoned_query_directories():
                log.info("removed %s, left by an orchestrator that was killed", directory)
            yield guard
        except Interrupted as stop:
            raise _wound_down(journal, guard, stop) from None


def _wound_down(journal: Journal, guard: Guard, stop: Interrupted) -> InterruptedRun:
    """Every call of this run ended, the interruption journaled: what to tell the user."""
    drivers.wind_down()
    processes.stop_own(guard.table)
    journal.flush()
    if guard.deployment is None:
        return InterruptedRun(
            f"interrupted by {stop.signal_name} before a deployment began; nothing was changed"
        )
    if guard.command == "rollback":
        advice = "run 'mender-orchestrator rollback' to finish rolling the System back"
    else:
        advice = (
            "run 'mender-orchestrator resume' to continue (the interrupted state counts as "
            "failed, so the System rolls back) or 'mender-orchestrator rollback'"
        )
    message = f"deployment {guard.deployment} interrupted by {stop.signal_name}; {advice}"
    journal.record(guard.deployment, None, "", "interrupted", None, stop.signal_name, message)
    return InterruptedRun(message)
