"""The SQLite journal: every deployment, its plan, and every step entered and finished.

Nothing needed to continue a deployment lives only in memory: ``resume`` and ``rollback``
rebuild the engine from these rows. Each row is committed (WAL, ``synchronous=FULL``) before
the step it describes starts and after it ends, so after a crash the journal tells exactly
which steps were in flight.

A test-only switch, ``MENDER_ORCHESTRATOR_TEST_CRASH_AFTER_WRITE=N``, kills the process with
SIGKILL right after the N-th journal write of this process, to prove crash safety at every
point. Normal runs pay one ``is None`` check per write for it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core import atomic
from orchestrator_core.errors import JournalMismatch, OrchestratorError

CRASH_SWITCH = "MENDER_ORCHESTRATOR_TEST_CRASH_AFTER_WRITE"
# PRAGMA user_version: 0 before formats were numbered, 1 adds step.members
JOURNAL_FORMAT = 1
FLUSH_DELAY_SECONDS = 0.05  # longest an event recorded with ``soon`` waits for its commit

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployment (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    manifest_name TEXT NOT NULL,
    manifest BLOB NOT NULL,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,            -- in_progress, succeeded, failed, inconsistent
    started REAL NOT NULL,
    finished REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS step (
    deployment INTEGER NOT NULL REFERENCES deployment(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,              -- state, query, reboot
    name TEXT NOT NULL,
    grp INTEGER NOT NULL,
    phase TEXT NOT NULL,             -- install, commit, rollback, cleanup
    members TEXT,                    -- JSON list of Component keys; NULL before format 1
    PRIMARY KEY (deployment, seq)
);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER NOT NULL REFERENCES deployment(id),
    seq INTEGER,                     -- NULL for deployment-wide events
    component TEXT NOT NULL,         -- '' for deployment-wide events
    kind TEXT NOT NULL,              -- enter, finish, stopped, rollback-requested, note
    ok INTEGER,
    value TEXT,
    message TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS event_by_step ON event (deployment, seq);
CREATE TABLE IF NOT EXISTS process (   -- Interface calls running now (orchestrator_core.processes)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment INTEGER,              -- NULL outside a deployment
    owner_pid INTEGER NOT NULL,      -- the orchestrator that started it, and its start time
    owner_start INTEGER NOT NULL,
    pgid INTEGER,                    -- NULL until the fork returned
    start INTEGER,                   -- the leader's start time, /proc/<pid>/stat field 22
    token TEXT NOT NULL,             -- MENDER_ORCHESTRATOR_CALL in the call's environment
    what TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class JournalError(OrchestratorError):
    """The journal cannot be read or written (a full or failing disk, a damaged file): what
    the System runs is then not known from here."""

    exit_code = 3


class JournalBusy(JournalError):
    """Another process holds the journal's database lock (not a mender-orchestrator: those
    are kept apart by the lock file)."""

    exit_code = 5


def _failure(path: Path, exc: Exception, doing: str) -> JournalError:
    """The message for a journal error: what happened and what to do about it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if isinstance(exc, OSError):  # making its directory private, or the file's mode
        name = "SQLITE_IOERR"
    what = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    if len(what) > 200:  # a decoding error quotes the whole value
        what = f"{what[:200]}..."
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return JournalBusy(
            f"journal {path} is locked by another process ({what}); wait for it to let go, "
            f"then run the command again"
        )
    # the Python module's own decoding errors carry no SQLite error name
    if not name or name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return JournalError(
            f"journal {path} is damaged ({what}); check every Component (show-provides), then "
            f"move the journal aside to start afresh (the deployments it describes, and one "
            f"in progress, are then forgotten)"
        )
    return JournalError(
        f"journal {path} could not be {doing} ({what}); free space or repair the file system, "
        f"then run the command again (a deployment in progress goes on with "
        f"'mender-orchestrator resume' or 'rollback')"
    )


@contextmanager
def sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors on the journal at ``path`` (a full disk, a lock held elsewhere, a
    damaged file) as ``JournalError`` messages; ``doing`` is "read", "written" or "opened"."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise _failure(path, exc, doing) from None


def damaged_plan(path: Path, deployment: int, exc: Exception) -> JournalError:
    return JournalError(
        f"journal {path}: the plan of deployment {deployment} is damaged ({exc!r}); check "
        f"every Component (show-provides), then move the journal aside to start afresh (the "
        f"deployments it describes are then forgotten)"
    )


class DeploymentRow(NamedTuple):
    id: int
    manifest_name: str
    manifest: bytes
    plan: dict[str, Any]
    status: str
    started: float
    finished: float | None
    summary: str | None


class StepIdentity(NamedTuple):
    """Which step a journal position holds; checked against the sequence on replay."""

    kind: str
    name: str
    group: int
    phase: str
    members: tuple[str, ...] | None  # None in journals from before format 1


class EventRow(NamedTuple):
    seq: int | None
    component: str
    kind: str
    ok: bool | None
    value: str | None
    message: str | None
    at: float


class Journal:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """``read_only`` for commands that only read (``status``, ``history``): they work on
        a read-only file system and change nothing, not even the file's mode."""
        self.path = path
        with self._guard("opened"):
            if read_only:
                self._db = _open_read_only(path)
            else:
                self._db = self._open(path)
        self._lock = threading.Lock()
        crash = os.environ.get(CRASH_SWITCH)
        self._crash_after: int | None = int(crash) if crash else None
        self._writes = 0
        # group commit: events of Components finishing at the same time share one fsync
        self._pending: list[tuple[Any, ...]] = []
        self._pending_lock = threading.Lock()
        self._submitted = 0
        self._committed = 0
        # rows recorded ``soon`` are committed by FLUSH_DELAY_SECONDS after the first of them
        # at the latest, by one thread per journal (a timer thread per row cost ~0.2 ms each)
        self._flush_due: float | None = None  # time.monotonic() deadline; None: nothing due
        self._flush_wake = threading.Condition(self._pending_lock)
        self._flusher: threading.Thread | None = None
        self._closing = False

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        atomic.make_private_dir(path.parent)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")  # first: the next one may wait already
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > JOURNAL_FORMAT:
                raise JournalMismatch(
                    f"journal {path} has format {version}, newer than this "
                    f"mender-orchestrator reads (up to {JOURNAL_FORMAT}): it was written by a "
                    f"newer version; finish its deployment with that version"
                )
            db.executescript(SCHEMA)
            if version < JOURNAL_FORMAT:
                _upgrade(db)
            os.chmod(path, 0o600)
        except BaseException:
            db.close()
            raise
        return db

    def _guard(self, doing: str) -> AbstractContextManager[None]:
        return sqlite_errors(self.path, doing)

    def close(self) -> None:
        with self._pending_lock:
            self._closing = True
            self._flush_wake.notify()
        try:
            self.flush()
        finally:
            self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._transaction([(sql, args)])

    def _wrote(self) -> None:
        self._writes += 1
        if self._crash_after is not None and self._writes >= self._crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """The events still waiting in ``_pending``, then ``statements``, in one commit (one
        fsync); the caller holds ``_lock``. Returns the last row id inserted.

        Pending events always go first, in the commit of the next write: so the journal on
        disk is at every moment a prefix of the rows in the order they were recorded, the
        journal a crash a moment earlier would have left. A write that starts something (a
        step entered, before its Interface calls) thus also makes durable how the step before
        it ended, in the same fsync.
        """
        with self._pending_lock:
            rows, self._pending = self._pending, []
            last = self._submitted
            self._flush_due = None  # what was due goes now
        if not rows and not statements:
            return 0
        try:
            with self._guard("written"):
                if not rows and len(statements) == 1:  # one row: its own commit
                    cursor = self._db.execute(*statements[0])
                else:
                    cursor = self._in_one_commit(
                        [(self._INSERT_EVENT, row) for row in rows] + statements
                    )
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = rows
            raise
        self._committed = last
        self._wrote()
        return cursor.lastrowid or 0

    def _in_one_commit(self, statements: list[tuple[str, tuple[Any, ...]]]) -> sqlite3.Cursor:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                cursor = self._db.execute(sql, args)
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error)
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return cursor

    # ---- deployments

    def begin(self, manifest_name: str, manifest: bytes, plan: dict[str, Any]) -> int:
        return self._write(
            "INSERT INTO deployment (manifest_name, manifest, plan, status, started) "
            "VALUES (?, ?, ?, 'in_progress', ?)",
            (manifest_name, manifest, json.dumps(plan), time.time()),
        )

    def finish_deployment(self, deployment: int, status: str, summary: str) -> None:
        self._write(
            "UPDATE deployment SET status = ?, finished = ?, summary = ? WHERE id = ?",
            (status, time.time(), summary, deployment),
        )

    def _row(self, row: tuple[Any, ...] | None) -> DeploymentRow | None:
        if row is None:
            return None
        try:
            plan = json.loads(row[3])
            if not isinstance(plan, dict):
                raise ValueError(f"a JSON {type(plan).__name__}, not an object")
            return DeploymentRow(
                row[0], row[1], bytes(row[2]), plan, row[4], row[5], row[6], row[7]
            )
        except (ValueError, TypeError) as exc:
            raise damaged_plan(self.path, row[0], exc) from None

    _COLUMNS = "id, manifest_name, manifest, plan, status, started, finished, summary"

    def in_progress(self) -> DeploymentRow | None:
        with self._lock, self._guard("read"):
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM deployment WHERE status = 'in_progress' "
                f"ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return self._row(row)

    def latest(self) -> DeploymentRow | None:
        with self._lock, self._guard("read"):
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM deployment ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return self._row(row)

    def deployments(self) -> Iterator[DeploymentRow]:
        with self._lock, self._guard("read"):
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM deployment ORDER BY id"
            ).fetchall()
        for row in rows:
            found = self._row(row)
            if found is not None:
                yield found

    # ---- steps and events

    _INSERT_STEP = (
        "INSERT OR IGNORE INTO step (deployment, seq, kind, name, grp, phase, members) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )

    @staticmethod
    def _step_row(deployment: int, seq: int, step: StepIdentity) -> tuple[Any, ...]:
        return (deployment, seq, *step[:4], json.dumps(list(step.members or ())))

    def record_step(self, deployment: int, seq: int, step: StepIdentity) -> None:
        self._write(self._INSERT_STEP, self._step_row(deployment, seq, step))

    _INSERT_EVENT = (
        "INSERT INTO event (deployment, seq, component, kind, ok, value, message, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def step_entered(
        self,
        deployment: int,
        seq: int,
        step: StepIdentity,
        members: list[str],
        value: str | None = None,
    ) -> None:
        """The step and an ``enter`` per member of ``members`` (those that start now), in one
        commit, before any member starts."""
        now = time.time()
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (self._INSERT_STEP, self._step_row(deployment, seq, step))
        ]
        statements.extend(
            (self._INSERT_EVENT, (deployment, seq, key, "enter", None, value, None, now))
            for key in members
        )
        with self._lock:
            self._transaction(statements)

    def record(
        self,
        deployment: int,
        seq: int | None,
        component: str,
        kind: str,
        ok: bool | None = None,
        value: str | None = None,
        message: str | None = None,
        *,
        soon: bool = False,
    ) -> None:
        """One event, committed before returning; concurrent callers share a commit.

        With ``soon``, committed within ``FLUSH_DELAY_SECONDS`` or by the next ``flush``
        instead: for the end of one Component's state inside a step, so the caller goes on to
        the next Component at once rather than wait for an fsync; the journal's next write
        carries it, in the same commit, before anything depends on the row (``_transaction``).
        A crash before the commit leaves the state entered and unfinished, which counts as
        failed, as a crash a moment earlier would.
        """
        row = (deployment, seq, component, kind, ok, value, message, time.time())
        with self._pending_lock:
            self._pending.append(row)
            self._submitted += 1
            ticket = self._submitted
            if soon and self._flush_due is None:
                self._flush_due = time.monotonic() + FLUSH_DELAY_SECONDS
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_when_due, name="journal-flush", daemon=True
                    )
                    self._flusher.start()
                else:
                    self._flush_wake.notify()
        if soon:
            return
        with self._lock:
            if self._committed < ticket:  # else another thread's commit carried this row
                self._commit_pending()

    def flush(self) -> None:
        """Commit every event recorded so far."""
        with self._lock:
            self._commit_pending()

    def _flush_when_due(self) -> None:
        """The flusher thread: commits what was recorded ``soon`` once it is due, unless a
        write carried it before; ends when the journal closes."""
        with self._pending_lock:
            while not self._closing:
                due = self._flush_due
                wait = None if due is None else due - time.monotonic()
                if wait is None or wait > 0:
                    self._flush_wake.wait(wait)
                    continue
                self._pending_lock.release()  # flush takes _lock, then this one
                try:
                    self.flush()
                except JournalError:
                    # the rows stay pending: the next write commits them or reports why not
                    with self._pending_lock:
                        self._flush_due = None
                finally:
                    self._pending_lock.acquire()

    def _commit_pending(self) -> None:
        """Commit the events waiting in ``_pending``, in one transaction; the caller holds
        ``_lock``."""
        self._transaction([])

    def events(self, deployment: int) -> list[EventRow]:
        with self._lock, self._guard("read"):
            rows = self._db.execute(
                "SELECT seq, component, kind, ok, value, message, at FROM event "
                "WHERE deployment = ? ORDER BY id",
                (deployment,),
            ).fetchall()
        return [
            EventRow(r[0], r[1], r[2], None if r[3] is None else bool(r[3]), r[4], r[5], r[6])
            for r in rows
        ]

    def steps(self, deployment: int) -> list[tuple[int, str, str, int, str]]:
        with self._lock, self._guard("read"):
            return list(
                self._db.execute(
                    "SELECT seq, kind, name, grp, phase FROM step WHERE deployment = ? "
                    "ORDER BY seq",
                    (deployment,),
                ).fetchall()
            )

    def identities(self, deployment: int) -> dict[int, StepIdentity]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, name, grp, phase, members FROM step WHERE deployment = ?",
                (deployment,),
            ).fetchall()
        return {
            r[0]: StepIdentity(r[1], r[2], r[3], r[4], _members(r[5])) for r in rows
        }


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a journal of format 0 to JOURNAL_FORMAT; its old rows keep NULL members."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(step)")}
    if "members" not in columns:
        db.execute("ALTER TABLE step ADD COLUMN members TEXT")
    db.execute(f"PRAGMA user_version = {JOURNAL_FORMAT}")


def _members(text: str | None) -> tuple[str, ...] | None:
    """A step row's members; a row that does not hold a list of keys is reported as such."""
    if text is None:
        return None
    try:
        members = json.loads(text)
    except ValueError:
        return ("<unreadable members>",)
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        return ("<unreadable members>",)
    return tuple(members)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """The journal for reading only; on a read-only file system too, where SQLite cannot make
    the WAL's index file: nothing can change the journal there, so it is read as immutable."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db.close()
        if os.access(path.parent, os.W_OK):  # False on a read-only file system
            raise
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
    found = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'deployment'"
    ).fetchone()
    if not found[0]:
        db.close()
        raise sqlite3.DatabaseError("it holds no deployments table: it is empty or cut short")
    return db
