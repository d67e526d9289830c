"""What must hold before ``install``, ``resume`` or ``rollback`` touch the journal or call
any Interface: these faults of the device's environment would otherwise turn into failed
Interface calls half-way through, and a rollback of the whole System, or a deployment
forgotten.
"""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

from orchestrator_core import manifest_store
from orchestrator_core.config import Config
from orchestrator_core.drivers import DESCRIPTORS_KEPT, DESCRIPTORS_PER_CALL
from orchestrator_core.errors import ConfigError
from orchestrator_core.journal import JournalError

# the orchestrator itself, and one Interface call at a time
MIN_OPEN_FILES = DESCRIPTORS_KEPT + DESCRIPTORS_PER_CALL


def check_before_journal(config: Config) -> None:
    """Raise if the process may run out of file descriptors, or if the journal was emptied
    while earlier deployments left their traces."""
    _open_files()
    _journal_kept(config)


def _open_files() -> None:
    """The limit on open files, raised towards its hard limit, holds one call at a time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= MIN_OPEN_FILES:
        return
    if hard == resource.RLIM_INFINITY or hard >= MIN_OPEN_FILES:
        resource.setrlimit(resource.RLIMIT_NOFILE, (MIN_OPEN_FILES, hard))
        return
    raise ConfigError(
        f"the limit on open files is {hard}; mender-orchestrator needs at least "
        f"{MIN_OPEN_FILES} to call an Interface safely: raise it (ulimit -n, LimitNOFILE= of "
        f"a systemd unit) and run the command again; nothing was changed"
    )


def _journal_kept(config: Config) -> None:
    """An empty journal file, where deployments left traces, is refused rather than taken
    for a new one: SQLite would start afresh and forget a deployment in progress."""
    path = config.journal_path
    if not path.is_file() or _holds_deployments(path):
        return
    running, traces = _traces(config)
    if not traces:
        return  # a crash while the very first journal was created
    lost = ", the deployment in progress too" if running else ""
    raise JournalError(
        f"journal {path} is empty or cut short, but {' and '.join(traces)}: the record of "
        f"this System's deployments is lost{lost}. Check every Component (show-provides) "
        f"against the Manifest you want, then move the journal aside "
        f"(mv {path} {path}.lost) and run the command again"
    )


def _holds_deployments(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = db.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'deployment'"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return True  # damaged rather than empty: opening it says so
    return bool(found[0])


def _traces(config: Config) -> tuple[bool, list[str]]:
    """Whether a deployment seems to have been running, and what shows that any ran."""
    traces = []
    work = config.work_root
    running = work.is_dir() and any(work.iterdir())
    if running:
        traces.append(f"{work} holds the files of a deployment")
    if (config.manifest_store / manifest_store.CURRENT).is_file():
        traces.append(f"the Manifest store {config.manifest_store} holds an installed Manifest")
    return running, traces
