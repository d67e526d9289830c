"""The Interface processes this orchestrator starts, and stopping them when it stops.

An executable Interface runs in a process group (and session) of its own, so it outlives an
orchestrator killed with SIGKILL (the Mender client's module timeout, the OOM killer). A
later run must not call any Interface of the deployment while such a leftover still writes
to its Component. So:

* every group is recorded in the journal's ``process`` table (leader pid = group id, its
  start time from ``/proc/<pid>/stat``, so a recycled pid is never taken for ours, and the
  recording orchestrator's own pid and start time) before the Interface does anything that
  matters: the row is committed before the fork with a token the child inherits in its
  environment (``MENDER_ORCHESTRATOR_CALL``; rows are written ahead, several in one commit),
  and completed with the group id by a writer thread right after;
* ``stop_leftovers`` at the start of ``install``, ``resume`` and ``rollback`` (under the lock)
  stops every recorded group whose orchestrator is gone: TERM, a grace, KILL, then waits
  until none of its processes is left;
* ``interruptible`` turns SIGTERM, SIGHUP and SIGINT into ``Interrupted``, raised in the main
  thread once every running group has been stopped (TERM, grace, KILL) and every in-process
  driver call told to stop (its ``ctx.cancelled``); no Interface starts after that.

Rows go through a connection of their own with ``synchronous=NORMAL``: a process record only
matters while the machine stays up (a power loss leaves no process behind), and a commit
in WAL mode survives the death of the process without an fsync, so a call costs no disk
flush, and its writes share commits with other calls' (checkpoints are still synced, so the
journal itself stays as safe against power loss as before).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from queue import SimpleQueue
from types import FrameType
from typing import Protocol

from orchestrator_core.errors import OrchestratorError

log = logging.getLogger("mender_orchestrator.processes")

TOKEN_VARIABLE = "MENDER_ORCHESTRATOR_CALL"
STOP_GRACE_SECONDS = 2.0  # between TERM and KILL of a group
GONE_WAIT_SECONDS = 5.0  # how long KILLed processes get to disappear
EXIT_INTERRUPTED = 7
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal arrived: unwinds the run past every ``except Exception``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


class InterruptedRun(OrchestratorError):
    """What the user sees of ``Interrupted``: exit code 7 and what to run next."""

    exit_code = EXIT_INTERRUPTED


class Child(Protocol):
    """What the registry needs of a running Interface (``exec_driver._Child``)."""

    @property
    def pgid(self) -> int: ...

    def exited_within(self, seconds: float) -> bool: ...


# --------------------------------------------------------------------------- /proc


def _read_stat(path: str) -> bytes | None:
    """A ``/proc/<pid>/stat`` file (a few hundred bytes), or None if the process is gone.
    Read with ``os`` calls: this runs once per Interface call, and ``Path.read_bytes``
    costs 2.5 times as much."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), or None if it is gone."""
    raw = _read_stat(f"/proc/{pid}/stat")
    if not raw:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":  # dead, only waiting for its parent to reap it
        return None
    return int(fields[19])


def _group_members(pgid: int) -> list[int]:
    """Living processes of process group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        raw = _read_stat(f"{entry.path}/stat")
        if not raw:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _carriers(tokens: set[str]) -> dict[str, list[int]]:
    """Living processes whose environment holds one of ``tokens``: a call's processes,
    whatever group they moved to, even one whose group id was never recorded."""
    prefix = f"{TOKEN_VARIABLE}=".encode()
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environment = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        for variable in environment.split(b"\0"):
            token = variable[len(prefix) :].decode(errors="replace")
            if variable.startswith(prefix) and token in tokens:
                if start_time(int(entry.name)) is not None:
                    found.setdefault(token, []).append(int(entry.name))
    return found


_own_start = start_time(os.getpid()) or 0
_calls = itertools.count(1)  # with our pid and start time, a token no other call has


# --------------------------------------------------------------------------- the record


def _sqlite_errors(path: Path, doing: str) -> AbstractContextManager[None]:
    # the journal's module (and SQLite) are loaded by deployments only, not by the queries
    from orchestrator_core.journal import sqlite_errors as journal_errors

    return journal_errors(path, doing)


# rows written ahead in one commit, for the calls to come: a few at first, twice as many each
# time they run out, up to this many (a one-Component run writes a dozen)
RESERVED_ROWS = 128
_FIRST_RESERVED_ROWS = 4
_UNUSED = "an Interface call"  # the ``what`` of a reserved row until a call takes it


class _Barrier:
    """Queued by a flush; released by the writer once everything before it is committed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


# a statement for the writer thread, a flush, or None: the writer's end
_Queued = tuple[str, tuple[object, ...]] | _Barrier | None


class ProcessTable:
    """The journal's ``process`` table, through a connection of its own (no fsync per row).

    A call's row must be committed before its fork, and the calls of a large group start at
    the same moment: a commit per call before each fork made the table the run's bottleneck
    (about a sixth of a hundred no-op Components' time). So rows are written ahead, each
    with its token, up to ``RESERVED_ROWS`` in one commit, and a call takes one without
    waiting for any write. The rest of its record (group id and start time, what it is, the
    deployment) and, once it has ended, its removal go to a writer thread, which commits right
    away whatever is queued, in one transaction. A run that dies before the writer has
    recorded a group still leaves its token behind, and the token is how a later run finds
    the processes (``_carriers``). Rows reserved and never used are removed at ``close``; an
    orchestrator killed leaves them to the next run's ``stop_leftovers``, which finds nothing
    to stop.
    """

    def __init__(self, journal_path: Path, deployment: int | None) -> None:
        import sqlite3

        self._path = journal_path
        with _sqlite_errors(journal_path, "opened"):
            self._db = sqlite3.connect(
                journal_path, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA busy_timeout=10000")
            # WAL commits without an fsync, checkpoints still synced: never a corrupt journal
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()  # the connection: one transaction at a time
        self.deployment = deployment
        self._reserved: deque[tuple[int, str]] = deque()
        self._reserving = threading.Lock()
        self._next_reservation = _FIRST_RESERVED_ROWS
        self._what: dict[int, str] = {}  # rows taken by a call not yet recorded as started
        self._queue: SimpleQueue[_Queued] = SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._failure: OrchestratorError | None = None  # the writer's first failed commit

    def close(self) -> None:
        """Wait for the writer, remove the rows reserved and never used, close."""
        self._stop_writer()
        unused = [row for row, _ in self._reserved]
        self._reserved.clear()
        if unused:
            try:
                marks = ", ".join("?" * len(unused))
                self._commit([(f"DELETE FROM process WHERE id IN ({marks})", tuple(unused))])
            except OrchestratorError as exc:  # the next run's stop_leftovers removes them
                log.warning("%s", exc)
        self._db.close()

    def starting(self, what: str) -> tuple[int, str]:
        """A row for a call about to start, committed already: its id and token."""
        if self._failure is not None:
            raise self._failure
        while True:
            try:
                row, token = self._reserved.popleft()
            except IndexError:
                with self._reserving:
                    if not self._reserved:
                        self._reserve()
                continue
            self._what[row] = what
            return row, token

    def started(self, row: int, pgid: int, start: int) -> None:
        what = self._what.pop(row, _UNUSED)
        self._enqueue(
            "UPDATE process SET pgid = ?, start = ?, what = ?, deployment = ?, at = ? "
            "WHERE id = ?", (pgid, start, what, self.deployment, time.time(), row))  # fmt: skip

    def ended(self, row: int) -> None:
        self._what.pop(row, None)
        self._enqueue("DELETE FROM process WHERE id = ?", (row,))

    def leftovers(
        self, own: bool = False
    ) -> list[tuple[int, int | None, int | None, str, str, int | None]]:
        """Rows of orchestrators that are gone (or, with ``own``, this one's calls): id, pgid,
        start, token, what, deployment."""
        self._flush()
        with self._lock, _sqlite_errors(self._path, "read"):
            rows = self._db.execute(
                "SELECT id, pgid, start, token, what, deployment, owner_pid, owner_start "
                "FROM process ORDER BY id"
            ).fetchall()
        if own:
            unused = {row for row, _ in self._reserved}
            return [tuple(r[:6]) for r in rows
                    if (r[6], r[7]) == (os.getpid(), _own_start) and r[0] not in unused]
        return [tuple(r[:6]) for r in rows if start_time(r[6]) != r[7]]

    # ---- writing

    def _reserve(self) -> None:
        now = time.time()
        count, self._next_reservation = (
            self._next_reservation, min(RESERVED_ROWS, 2 * self._next_reservation))
        tokens = [f"{os.getpid()}.{_own_start}.{next(_calls)}" for _ in range(count)]
        rows = self._commit([
            ("INSERT INTO process (deployment, owner_pid, owner_start, token, what, at) "
             "VALUES (?, ?, ?, ?, ?, ?)",
             (self.deployment, os.getpid(), _own_start, token, _UNUSED, now))
            for token in tokens
        ])  # fmt: skip
        self._reserved.extend(zip(rows, tokens, strict=True))

    def _commit(self, statements: list[tuple[str, tuple[object, ...]]]) -> list[int]:
        """Execute ``statements`` in one transaction; the row id each one gave."""
        with self._lock, _sqlite_errors(self._path, "written"):
            if len(statements) == 1:  # a transaction of its own already
                return [self._db.execute(*statements[0]).lastrowid or 0]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = [self._db.execute(sql, args).lastrowid or 0 for sql, args in statements]
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.rollback()
                raise
        return rows

    def _enqueue(self, sql: str, args: tuple[object, ...]) -> None:
        with self._writer_lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="process-table", daemon=True)
                self._writer.start()
        self._queue.put((sql, args))

    def _write_queued(self) -> None:
        """The writer thread: commits what is queued, a batch at a time, until ``None``."""
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():  # the only reader: get() cannot block here
                batch.append(self._queue.get())
            statements = [item for item in batch if isinstance(item, tuple)]
            try:
                if statements:
                    self._commit(statements)
            except Exception as exc:  # kept for the next start and flush; the writer goes on
                failure = exc if isinstance(exc, OrchestratorError) else OrchestratorError(
                    f"journal {self._path}: process records not written: {exc!r}")
                log.error("%s", failure)
                self._failure = self._failure or failure
            finally:
                for item in batch:
                    if isinstance(item, _Barrier):
                        item.release()
            if None in batch:
                return

    def _flush(self) -> None:
        """Return once everything queued before this call is committed."""
        if self._writer is None:
            return
        barrier = _Barrier()
        self._queue.put(barrier)
        barrier.wait()
        if self._failure is not None:
            raise self._failure

    def _stop_writer(self) -> None:
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()


# --------------------------------------------------------------------------- this process


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # the signal handler may run inside a holder
        self.children: dict[int, Child] = {}
        self.cancels: set[threading.Event] = set()
        self.table: ProcessTable | None = None
        # the environment Interfaces get during the run, as it was when the run started
        self.environment: dict[bytes, bytes] = {}
        self.interrupted: int | None = None  # the signal that stopped this run


_registry = _Registry()


def interrupted() -> bool:
    return _registry.interrupted is not None


def refuse_if_interrupted(what: str) -> None:
    if _registry.interrupted is not None:
        raise OrchestratorError(f"{what} not started: the orchestrator is stopping")


def child_environment(token: str) -> dict[bytes, bytes]:
    """The environment of a recorded call: ours, as the run started, with its token.

    Taken once per run: building it from ``os.environb`` for each call cost about 20 µs,
    a measurable part of a call to a quick Interface when hundreds of Components are
    called. A change an in-process driver makes to ``os.environ`` during the run therefore
    reaches no Interface of that run."""
    return {**_registry.environment, TOKEN_VARIABLE.encode(): token.encode()}


def before_start(what: str) -> tuple[int, str] | None:
    """Record a call about to start; the token goes into the child's environment."""
    refuse_if_interrupted(what)
    table = _registry.table
    return table.starting(what) if table is not None else None


def track(child: Child, record: tuple[int, str] | None) -> None:
    """A started child: completes its record and makes it stoppable by a signal."""
    if record is not None and _registry.table is not None:
        _registry.table.started(record[0], child.pgid, start_time(child.pgid) or 0)
    with _registry.lock:
        _registry.children[child.pgid] = child
        stopping = _registry.interrupted is not None
    if stopping:  # the handler took its list before this child was in it
        _stop_groups([child])


def untrack(child: Child, record: tuple[int, str] | None) -> None:
    """The child's leader is reaped; the record goes once no process of its group is left
    (a survivor is stopped by the next run)."""
    with _registry.lock:
        _registry.children.pop(child.pgid, None)
    if record is not None and _registry.table is not None and not _group_alive(child.pgid):
        _registry.table.ended(record[0])


def forget(record: tuple[int, str] | None) -> None:
    """A call whose fork failed: nothing of it runs."""
    if record is not None and _registry.table is not None:
        _registry.table.ended(record[0])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed its user: still there
        pass
    return True


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """An in-process driver call: ``event`` is set if a stop signal arrives meanwhile."""
    with _registry.lock:
        _registry.cancels.add(event)
        if _registry.interrupted is not None:
            event.set()
    try:
        yield
    finally:
        with _registry.lock:
            _registry.cancels.discard(event)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_groups(children: list[Child]) -> None:
    """TERM every group, wait up to the grace for the leaders, KILL what is left."""
    for child in children:
        _signal_group(child.pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while any(_running(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    for child in children:
        _signal_group(child.pgid, signal.SIGKILL)


def _running(child: Child) -> bool:
    # under the lock: a reaped child is untracked before its pidfd is closed
    with _registry.lock:
        return _registry.children.get(child.pgid) is child and not child.exited_within(0)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    with _registry.lock:
        if _registry.interrupted is not None:
            return  # already stopping: a second signal changes nothing
        _registry.interrupted = signum
        children = list(_registry.children.values())
        cancels = list(_registry.cancels)
    log.warning(
        "%s received: stopping %d running Interface call(s)",
        signal.Signals(signum).name,
        len(children) + len(cancels),
    )
    for event in cancels:
        event.set()
    _stop_groups(children)
    raise Interrupted(signum)


@contextmanager
def interruptible(table: ProcessTable) -> Iterator[None]:
    """For one run under the lock: record calls in ``table``; stop signals interrupt."""
    # only the main thread may set handlers (a run from another thread, an embedding program,
    # keeps the records and leaves its signals alone)
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS} if main else {}
    _registry.table = table
    _registry.environment = dict(os.environb)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _registry.table = None
        _registry.environment = {}
        table.close()


# --------------------------------------------------------------------------- at the start


def stop_own(table: ProcessTable) -> None:
    """After a stop signal, once every leader is reaped: what of their groups is left."""
    _stop_rows(table, own=True)


def stop_leftovers(table: ProcessTable) -> list[str]:
    """Stop and wait out every recorded Interface process of an orchestrator that is gone;
    returns what was stopped, for the log."""
    stopped = _stop_rows(table, own=False)
    for line in stopped:
        log.warning("stopped an Interface call left running by an earlier run: %s", line)
    return stopped


def _stop_rows(table: ProcessTable, own: bool) -> list[str]:
    stopped = []
    rows = table.leftovers(own)
    carriers = _carriers({row[3] for row in rows}) if rows else {}
    for row, pgid, start, token, what, deployment in rows:
        pids = set(carriers.get(token, []))
        if pgid is not None and start is not None and start_time(pgid) in (start, None):
            # the leader alive with its start time, or gone while its group lives on (a group
            # id is not reused while any member is left): still the group we started
            pids.update(_group_members(pgid))
        if pids:
            _stop_pids(pgid, sorted(pids))
            where = f" of deployment {deployment}" if deployment is not None else ""
            stopped.append(f"{what}{where} (process group {pgid}, pids {sorted(pids)})")
        table.ended(row)
    return stopped


def _stop_pids(pgid: int | None, pids: list[int]) -> None:
    starts = {pid: start_time(pid) for pid in pids}

    def alive() -> list[int]:
        return [pid for pid in pids if starts[pid] is not None and start_time(pid) == starts[pid]]

    def send(signum: signal.Signals) -> None:
        if pgid is not None:
            _signal_group(pgid, signum)
        for pid in alive():
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    send(signal.SIGTERM)
    if not _wait_gone(alive, STOP_GRACE_SECONDS):
        send(signal.SIGKILL)
        if not _wait_gone(alive, GONE_WAIT_SECONDS):
            raise OrchestratorError(
                f"Interface processes {alive()} left running by an earlier run survived "
                f"SIGKILL; no Interface is called while they run"
            )


def _wait_gone(alive: Callable[[], list[int]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
