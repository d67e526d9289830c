"""The bundled ``exec`` driver: Interface protocol v1 (SPEC 4) over executables.

Every hook runs ``INTERFACE STATE FILE_API_DIR COMPONENT_TYPE [interface_args...]`` in the
File API directory, as an argv list in a session of its own, so a call that outlives
``InterfaceTimeoutSeconds`` is ended with its whole process group (TERM, a short grace, KILL).
Query answers on stdout are parsed strictly; stdout of states and all of stderr are relayed to
the log line by line, in bounded memory however much the Interface writes. ``Download`` also
serves the streams tree (``orchestrator_core.streams``).

Two ways in: ``drivers.load`` wraps an executable found in ``<data dir>/interfaces/v1``, and
the entry point ``exec`` (``from_topology``) takes the executable's absolute path from the
Topology's ``interface_args[0]``.
"""

from __future__ import annotations

import atexit
import fcntl
import math
import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from orchestrator_core import filetree, processes, spawns
from orchestrator_core.context import Component, InterfaceContext, RebootNeed
from orchestrator_core.errors import (
    ArtifactError,
    ConfigError,
    InterfaceError,
    InterfaceTimeout,
)
from orchestrator_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from orchestrator_core.streams import StreamServer

STDOUT_LIMIT = 1 << 20  # a query answer longer than this is not an answer
LINE_LIMIT = 16 << 10  # longer output lines are relayed in pieces of this size
TAIL_LINES = 8  # stderr lines quoted when a call fails
KILL_GRACE_SECONDS = 2.0  # between TERM and KILL of a process group
_READ_SIZE = 1 << 16
_EXCERPT = 200  # characters of a bad answer quoted in a message

T = TypeVar("T")


# --------------------------------------------------------------------------- the process


_devnull_fd: int | None = None
_devnull_lock = threading.Lock()


def _devnull() -> int:
    """One ``/dev/null`` for the stdin of every Interface: opening it per call costs two
    system calls, which add up over hundreds of Components."""
    global _devnull_fd
    with _devnull_lock:
        if _devnull_fd is None:
            _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _devnull_fd


class _Child:
    """One Interface process, leader of its own process group.

    Exit is watched through a pidfd, which becomes readable when the process ends without
    reaping it: until ``reap``, the group ID cannot be reused, so signalling the group is
    always aimed at this Interface's processes.
    """

    def __init__(self, argv: list[str], cwd: Path, what: str) -> None:
        # recorded before the fork, so that a later run finds it even if we die right after
        self.record = processes.before_start(what)
        env = None if self.record is None else processes.child_environment(self.record[1])
        # Our own pipes, read with os.read: the file objects Popen would wrap them in cost
        # six system calls (each a hand-over of the interpreter lock among the threads of a
        # large group) and more Python than reading needs.
        stdout, stderr = os.pipe(), os.pipe()  # (read end, write end) each
        try:
            with spawns.starting():
                self.popen = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=_devnull(),
                    stdout=stdout[1],
                    stderr=stderr[1],
                    start_new_session=True,
                )
        except BaseException as exc:
            os.close(stdout[0])
            os.close(stderr[0])
            if isinstance(exc, OSError):  # nothing started (after an interruption, maybe it did)
                processes.forget(self.record)
            raise
        finally:  # the child has its copies now (Popen returns once it has exec'd)
            os.close(stdout[1])
            os.close(stderr[1])
        self.stdout, self.stderr = stdout[0], stderr[0]  # our reading ends
        self.killed = False  # we ended it while it was still running
        self._kill_lock = threading.Lock()
        try:
            self.pidfd = os.pidfd_open(self.popen.pid)
        except OSError:
            self._abandon()
            raise
        try:
            processes.track(self, self.record)
        except BaseException:  # a stop signal before the registry knew of it
            os.close(self.pidfd)
            self._abandon()
            raise

    def _abandon(self) -> None:
        """End a child that will never be pumped: kill its group, reap it, drop its record."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait()
        os.close(self.stdout)
        os.close(self.stderr)
        processes.untrack(self, self.record)

    @property
    def pgid(self) -> int:
        return self.popen.pid

    def exited_within(self, seconds: float) -> bool:
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, seconds) * 1000))

    def running(self) -> bool:
        return not self.exited_within(0)

    def kill(self) -> None:
        """End the whole process group: TERM, up to ``KILL_GRACE_SECONDS``, then KILL."""
        with self._kill_lock:
            if self.running():
                self.killed = True
            self._signal_group(signal.SIGTERM)
            self.exited_within(KILL_GRACE_SECONDS)
            self._signal_group(signal.SIGKILL)  # children that ignored TERM or outlived it

    def _signal_group(self, signum: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def reap(self) -> int:
        status = self.popen.wait()
        processes.untrack(self, self.record)
        os.close(self.pidfd)
        os.close(self.stdout)
        os.close(self.stderr)
        return status


def _pump(
    child: _Child,
    deadline: float,
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes], None],
    tick: Callable[[], float | None] | None = None,
) -> bool:
    """Relay the child's output until it exits; ``True`` if the deadline came first.

    Stops at the leader's exit rather than at end of file, so a background child that keeps
    the pipes open cannot hold us; what is already in the pipes is still read. ``poll`` on
    three descriptors, not an epoll set: a call to a quick Interface would spend more
    system calls setting up epoll than waiting. ``tick`` (``StreamServer.tick``) is called
    between waits, which it bounds, until it returns ``None``.
    """
    handlers = {child.stdout: on_stdout, child.stderr: on_stderr}
    poller = select.poll()
    for fd in (*handlers, child.pidfd):
        poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        if tick is not None:
            pause = tick()
            if pause is None:
                tick = None
            else:
                remaining = min(remaining, pause)
        exited = False
        for fd, _ in poller.poll(math.ceil(remaining * 1000)):
            if fd == child.pidfd:
                exited = True
            elif not _read_into(fd, handlers[fd]):  # poll said readable: this read cannot block
                poller.unregister(fd)
                del handlers[fd]
        if exited:
            for fd, handler in handlers.items():
                os.set_blocking(fd, False)  # a surviving child may hold the pipe open, silent
                _drain(fd, handler)
            return False


def _read_into(fd: int, handler: Callable[[bytes], None]) -> bool:
    """Read what is there; ``False`` at end of file."""
    try:
        data = os.read(fd, _READ_SIZE)
    except BlockingIOError:
        return True
    if data:
        handler(data)
    return bool(data)


def _drain(fd: int, handler: Callable[[bytes], None]) -> None:
    # bounded: a surviving child writing without pause must not keep us here
    for _ in range(STDOUT_LIMIT // _READ_SIZE + 1):
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            return
        handler(data)


def _exit_text(status: int) -> str:
    if status < 0:
        return f"it was killed by signal {_signal_name(-status) or -status}"
    text = f"it exited with status {status}"
    shell_signal = _signal_name(status - 128) if status > 128 else None
    if shell_signal is not None:
        text += f" (how a shell reports a command killed by {shell_signal})"
    return text


def _signal_name(number: int) -> str | None:
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return None


# --------------------------------------------------------------------------- output handling


class _LineRelay:
    """Relays one output pipe to the log, a line at a time, remembering the last few lines."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._pending = bytearray()
        self._relayed_part = False  # the pending line was too long and is partly relayed
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def feed(self, data: bytes) -> None:
        *ended, rest = data.split(b"\n")
        for line in ended:
            self._pending += line
            if self._pending or not self._relayed_part:
                self._emit_pieces(bytes(self._pending))
            self._pending.clear()
            self._relayed_part = False
        self._pending += rest
        if len(self._pending) >= LINE_LIMIT:  # no line end in sight: relay it in pieces
            cut = len(self._pending) - len(self._pending) % LINE_LIMIT
            self._emit_pieces(bytes(self._pending[:cut]))
            del self._pending[:cut]
            self._relayed_part = True

    def close(self) -> None:
        if self._pending:
            self._emit_pieces(bytes(self._pending))
            self._pending.clear()

    def _emit_pieces(self, raw: bytes) -> None:
        for start in range(0, max(len(raw), 1), LINE_LIMIT):
            self._emit(raw[start : start + LINE_LIMIT])

    def _emit(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        self._log(line)
        if line.strip():
            self.tail.append(_shorten(line, 300))

    def tail_text(self) -> str:
        if not self.tail:
            return "it wrote nothing on stderr"
        return "its last lines on stderr: " + " | ".join(self.tail)


class _Capture:
    """Collects a query's stdout, refusing more than ``STDOUT_LIMIT`` bytes."""

    def __init__(self, what: str) -> None:
        self._what = what
        self.data = bytearray()

    def feed(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > STDOUT_LIMIT:
            raise InterfaceError(
                f"{self._what} printed more than {STDOUT_LIMIT} bytes on stdout, which is not "
                f"an answer; it was stopped"
            )

    def close(self) -> None:
        pass


def _shorten(text: str, limit: int = _EXCERPT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


def _printed(data: bytes) -> str:
    """What an Interface printed, quoted for a message."""
    if not data.strip():
        return "nothing"
    return repr(_shorten(data.decode("utf-8", "replace")))


class _BadAnswer(Exception):
    """A query's stdout is not a valid answer; the text says what was expected."""


def _choice(data: bytes, choices: dict[str, T]) -> T | None:
    answer = data.decode("utf-8", "replace").strip().lower()
    if not answer:
        return None
    for word, value in choices.items():
        if answer == word.lower():
            return value
    raise _BadAnswer(f"expected {', '.join(choices)} or nothing")


def _key_values(data: bytes) -> list[tuple[str, str]]:
    pairs = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise _BadAnswer(f"line {number} {_shorten(raw)!r} is not a key=value line")
        pairs.append((key.strip(), value.strip()))
    return pairs


# --------------------------------------------------------------------------- the driver


class ExecDriver:
    """Implements every hook of the Interface protocol by running one executable.

    Each call runs ``<executable> <state> <directory> <component_type> <args>...`` for the
    Component of its context: one driver serves every Component of its executable. ``args``
    are the Component's ``interface_args`` unless given (the ``exec`` entry point keeps the
    executable in the first of them, so it gives the rest).
    """

    kills_at_deadline = True  # so the engine does not watch its calls from another thread
    takes_streams_ahead = True  # its Download uses a streams tree the engine made before

    def __init__(self, executable: Path, args: Sequence[str] | None = None) -> None:
        self.executable = executable
        self.args = None if args is None else tuple(args)
        # the name the Interface reports itself under: rootfs-image.<interface_name>.version
        self.interface_name = executable.name

    # ---- running one call

    def _run(
        self,
        state: str,
        ctx: InterfaceContext,
        server: StreamServer | None = None,
        *,
        query: bool = False,
    ) -> bytes:
        """Run one state or query; return stdout (queries only) or raise ``InterfaceError``."""
        who = f"{ctx.name} {state}"
        # outside a deployment (queries), a private directory holding only ``version``
        directory = ctx.work_dir if ctx.work_dir is not None else _query_directory()
        component = ctx.component
        argv = [str(self.executable), state, str(directory), component.component_type]
        argv += component.interface_args if self.args is None else self.args
        ctx.log.debug("%s: running %s", who, argv)
        try:
            child = _Child(argv, directory, who)
        except OSError as exc:
            raise InterfaceError(
                f"{ctx.name}: the Interface {self.executable} could not be started for "
                f"{state}: {exc.strerror or exc}"
            ) from exc
        stdout: _Capture | _LineRelay
        if query:
            stdout = _Capture(f"{ctx.name}: the Interface, asked {state},")
        else:
            stdout = _LineRelay(lambda line: ctx.log.info("%s stdout: %s", who, line))
        stderr = _LineRelay(lambda line: ctx.log.info("%s stderr: %s", who, line))
        timed_out = False
        exited = False
        try:
            if server is not None:
                server.start(child.running, child.kill, ctx.deadline)
            tick = server.tick if server is not None else None
            timed_out = _pump(child, ctx.deadline, stdout.feed, stderr.feed, tick)
            exited = not timed_out
        finally:
            if not exited:  # the deadline, or our own error while it ran
                child.kill()
            if server is not None:
                server.join()
            status = child.reap()
            stdout.close()
            stderr.close()
        self._check_outcome(state, ctx, child, status, timed_out, stderr, server)
        return bytes(stdout.data) if isinstance(stdout, _Capture) else b""

    def _check_outcome(
        self,
        state: str,
        ctx: InterfaceContext,
        child: _Child,
        status: int,
        timed_out: bool,
        stderr: _LineRelay,
        server: StreamServer | None,
    ) -> None:
        streaming = ""
        if server is not None and not server.finished:
            streaming = f"; streaming the payload was {server.position()}"
        if timed_out:
            raise InterfaceTimeout(
                f"{ctx.name}: {state} ran longer than InterfaceTimeoutSeconds "
                f"({ctx.timeout_seconds:g} s) and was killed with its whole process group"
                f"{streaming}; {stderr.tail_text()}"
            )
        failure = server.failure if server is not None else None
        if isinstance(failure, ArtifactError):  # the payload's fault, whatever the Interface did
            raise ArtifactError(f"{ctx.name}: {state} failed: {failure.message}") from failure
        if failure is not None and (status == 0 or child.killed):  # we stopped it for this
            raise InterfaceError(f"{ctx.name}: {state} failed: {failure.message}") from failure
        if status != 0:
            if failure is not None:
                streaming = f"; {failure.message}"
            raise InterfaceError(
                f"{ctx.name}: {state} failed: {_exit_text(status)}{streaming}; {stderr.tail_text()}"
            )
        if server is not None and server.started and not server.finished:
            raise InterfaceError(
                f"{ctx.name}: {state} exited with status 0 without reading every payload "
                f"stream: {server.unfinished_reason()}"
            )

    def _state(self, state: str, ctx: InterfaceContext) -> None:
        self._run(state, ctx)

    def _query(self, query: str, ctx: InterfaceContext, parse: Callable[[bytes], T]) -> T:
        data = self._run(query, ctx, query=True)
        try:
            return parse(data)
        except _BadAnswer as exc:
            raise InterfaceError(
                f"{ctx.name}: the Interface answered the {query} query with {_printed(data)}; {exc}"
            ) from None

    def _ask(self, ctx: InterfaceContext, hook: str) -> object:
        """One of our own queries, through the Component's hook relay so observers see it."""
        if ctx.hook is not None:
            return getattr(ctx.hook, hook)(ctx=ctx)
        return getattr(self, hook)(ctx)

    # ---- queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        def parse(data: bytes) -> str:
            pairs = _key_values(data)
            if len(pairs) != 1 or pairs[0][0] != "id" or not pairs[0][1]:
                raise _BadAnswer("expected exactly one line id=<component id>")
            return pairs[0][1]

        return self._query("Identity", ctx, parse)

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str] | None:
        def parse(data: bytes) -> dict[str, str] | None:
            result: dict[str, str] = {}
            for key, value in _key_values(data):
                if key in result:
                    raise _BadAnswer(f"key {key!r} is given twice; Provides values are single")
                result[key] = value
            return result or None

        return self._query("Provides", ctx, parse)

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]] | None:
        return self._query("Inventory", ctx, lambda data: _key_values(data) or None)

    @hookimpl
    def needs_unpacked_artifact(self, ctx: InterfaceContext) -> bool | None:
        return self._query(
            "NeedsUnpackedArtifact", ctx, lambda data: _choice(data, {"Yes": True, "No": False})
        )

    @hookimpl
    def provide_payload_file_sizes(self, ctx: InterfaceContext) -> bool | None:
        return self._query(
            "ProvidePayloadFileSizes", ctx, lambda data: _choice(data, {"Yes": True, "No": False})
        )

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed | None:
        choices = {need.value: need for need in RebootNeed}
        return self._query("NeedsArtifactReboot", ctx, lambda data: _choice(data, choices))

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool | None:
        return self._query(
            "SupportsRollback", ctx, lambda data: _choice(data, {"Yes": True, "No": False})
        )

    # ---- update states

    @hookimpl
    def download(self, ctx: InterfaceContext) -> None:
        from orchestrator_core.streams import StreamServer, payload_streams, whole_artifact_stream

        if ctx.payload is None or ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: Download needs a File API directory and a payload")
        unpacked = self._ask(ctx, "needs_unpacked_artifact")
        # asked whatever the first answer was, as the protocol says (SPEC 4)
        with_sizes = bool(self._ask(ctx, "provide_payload_file_sizes"))
        if unpacked is None or unpacked:
            streams = payload_streams(ctx.payload, with_sizes=with_sizes)
        else:
            # Our decision: the sizes of ProvidePayloadFileSizes are those of payload files;
            # the single whole-Artifact stream has none, so plain Download is called.
            with_sizes = False
            name = ctx.artifact.name if ctx.artifact is not None else "artifact"
            streams = whole_artifact_stream(ctx.payload, name)
        state = "DownloadWithFileSizes" if with_sizes else "Download"
        with StreamServer(ctx.work_dir, streams) as server:
            self._run(state, ctx, server)

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactInstall", ctx)

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactReboot", ctx)

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactVerifyReboot", ctx)

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactCommit", ctx)

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        self._state("Cleanup", ctx)

    # ---- error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactRollback", ctx)

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactRollbackReboot", ctx)

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactVerifyRollbackReboot", ctx)

    @hookimpl
    def artifact_failure(self, ctx: InterfaceContext) -> None:
        self._state("ArtifactFailure", ctx)


QUERY_DIRECTORY_PREFIX = "mender-orchestrator-"
ABANDONED_AFTER_SECONDS = 60.0  # a query directory younger than this is never swept
_query_dir: Path | None = None
_query_dir_lock = threading.Lock()


def _query_directory() -> Path:
    """One private directory holding ``version`` for every query asked outside a deployment
    by this process (queries change nothing), removed when the process exits: a directory
    per call costs more than the call itself when hundreds of Components are asked.

    A process killed with SIGKILL (the Mender client's module timeout, the OOM killer) cannot
    remove it. So the process holds a ``flock`` on it, which the kernel lets go however the
    process ends, and ``remove_abandoned_query_directories`` removes those nobody holds."""
    global _query_dir
    with _query_dir_lock:
        if _query_dir is None:
            directory = _new_temporary_directory()
            held = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:  # a new directory: nobody else holds it
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # no locks on this file system: nor can a sweep lock it to remove it
                os.close(held)
            filetree.write_version(directory)
            atexit.register(_remove_query_directory, directory)
            _query_dir = directory  # ``held`` stays open, with its lock, until the exit
        return _query_dir


def _temporary_bases() -> list[str]:
    return [base for base in (os.environ.get("TMPDIR"), "/tmp") if base]


def _new_temporary_directory() -> Path:
    """``tempfile.mkdtemp(prefix="mender-orchestrator-")``, 0700, in ``$TMPDIR`` or
    ``/tmp``, without importing tempfile and shutil (with random, bz2 and lzma): about 3 ms
    of each ``show-inventory`` poll, which needs nothing else from them."""
    for base in _temporary_bases():
        for _ in range(100):  # a name taken: another random one
            path = Path(base, f"{QUERY_DIRECTORY_PREFIX}{os.urandom(6).hex()}")
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break  # not usable (missing, read-only): the next base
            return path
    import tempfile  # what it does when neither will do: its longer list of places

    return Path(tempfile.mkdtemp(prefix=QUERY_DIRECTORY_PREFIX))


def remove_abandoned_query_directories() -> list[Path]:
    """Remove the query directories of processes that ended without removing theirs: ours
    (same user), a minute old at least (a directory is locked right after it is made), and
    locked by nobody. Returns what was removed."""
    removed = []
    for base in _temporary_bases():
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(QUERY_DIRECTORY_PREFIX) or not _abandoned(entry):
                continue
            try:
                held = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                               | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its process still runs
                os.close(held)
                continue
            try:
                _remove_query_directory(Path(entry.path))
            finally:
                os.close(held)
            removed.append(Path(entry.path))
    return removed


def _abandoned(entry: os.DirEntry[str]) -> bool:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and time.time() - info.st_mtime > ABANDONED_AFTER_SECONDS
    )


def _remove_query_directory(directory: Path) -> None:
    try:
        (directory / "version").unlink()
        directory.rmdir()
    except OSError:  # an Interface left something there
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def from_topology(component: Component) -> ExecDriver:
    """Entry point ``exec``: ``interface: exec`` with the executable in ``interface_args[0]``."""
    args = component.interface_args
    if not args or not os.path.isabs(args[0]):
        raise ConfigError(
            f"{component.label}: interface 'exec' needs the absolute path of the Interface "
            f"executable as the first of its interface_args, got {list(args)}"
        )
    executable = Path(args[0])
    if not executable.is_file() or not os.access(executable, os.X_OK):
        raise ConfigError(
            f"{component.label}: interface_args[0] {executable} is not an executable file "
            f"(interface 'exec' runs it as the Interface)"
        )
    return ExecDriver(executable, args[1:])
