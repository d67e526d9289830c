"""Progress of a deployment: a log record per state and query of each Component, and on a
terminal a live view: the running step and, one line each, its Components with their state,
time and progress (bytes streamed, or what the driver reports).

It is an observer plugin: the engine registers one ``ProgressObserver`` in every
Component's plugin manager, and it wraps the protocol hooks, so the engine itself holds no
reporting code and a vendor can add observers the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from orchestrator_core import log as log_module
from orchestrator_core.context import InterfaceContext
from orchestrator_core.errors import RetryableInterfaceError
from orchestrator_core.hookspecs import hookimpl

Wrapped = Generator[None, Any, Any]
Sink = Callable[[int, int | None, str], None]
# ctx.progress reaches the journal at most this often per Component (seconds): often enough
# for `status`, rare enough that a driver may report every chunk
JOURNAL_INTERVAL = 1.0
MAX_ROWS = 12  # Components listed in the live view; the rest are counted
REDRAW_SECONDS = 1.0  # the running times tick at this pace


class _Row:
    """One Component in the running step, as the live view shows it. A plain class: as a
    dataclass, building it took a third of a millisecond of every deployment's start-up."""

    __slots__ = ("ended", "failed", "feed", "progress", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.failed = False
        self.feed: Any = None  # the payload it streams during Download
        self.progress = ""  # "12.0/40.0 MiB written": set through ``report``

    def text(self, now: float) -> str:
        if self.started is None:
            return "waiting"
        if self.ended is not None:
            took = f"{self.ended - self.started:.1f}s"
            return f"FAILED after {took}" if self.failed else f"done in {took}"
        shown = f"running {now - self.started:.0f}s"
        streamed = getattr(self.feed, "bytes_read", 0)
        if self.progress:
            shown += f", {self.progress}"
        elif streamed:
            shown += f", {streamed / 1048576:.1f} MiB streamed"
        return shown


class ProgressObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step = ""
        self._rows: dict[str, _Row] = {}
        self._live = log_module.stderr_is_terminal()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ---- what the engine tells it

    def step_started(self, group: int, name: str, members: Sequence[str]) -> None:
        with self._lock:
            self._step = f"order group {group}: {name}"
            self._rows = {key: _Row() for key in members}
        if self._live and (self._ticker is None or not self._ticker.is_alive()):
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        self._draw()

    def sink(self, key: str, record: Callable[[str, str], None]) -> Sink:
        """Where the ``ctx.progress(done, total, what)`` of Component ``key`` goes: the live
        view at once, and ``record(value, what)`` (the journal, for ``status``) at most every
        ``JOURNAL_INTERVAL`` and always for the last report (``done == total``)."""
        last = -JOURNAL_INTERVAL

        def report(done: int, total: int | None, what: str) -> None:
            nonlocal last
            done, total = int(done), None if total is None else int(total)
            if done < 0 or (total is not None and total < 0):
                raise ValueError(f"ctx.progress({done}, {total}): counts cannot be negative")
            # the report module (and the journal's) only where a driver reports progress
            from orchestrator_core.report import progress_shown, progress_value

            value = progress_value(done, total, what)
            self.report(key, progress_shown(value))
            now = time.monotonic()
            if now - last >= JOURNAL_INTERVAL or done == total:
                last = now
                record(value, what)

        return report

    def step_finished(self) -> None:
        self._stop.set()
        # gone before the next step starts its own: one still waking up would take that
        # step's cleared stop for its own and leave the view without a ticker
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        log_module.set_status_lines([])

    def report(self, component: str, progress: str) -> None:
        """What a Component's driver says of its progress ("12.0/40.0 MiB written"): the one
        place the live view takes it from."""
        with self._lock:
            row = self._rows.get(component)
            if row is not None:
                row.progress = progress
        self._draw()

    # ---- around every hook

    def _row(self, ctx: InterfaceContext) -> _Row | None:
        key = f"{ctx.component.component_type}/{ctx.component_id}"
        return self._rows.get(key)

    def _around(self, name: str, ctx: InterfaceContext) -> Wrapped:
        started = time.monotonic()
        with self._lock:
            row = self._row(ctx)
            if row is not None:
                row.started, row.ended, row.feed = started, None, ctx.payload
        ctx.log.debug("%s started", name)
        try:
            answer = yield
        except RetryableInterfaceError as exc:  # called again, so not done yet
            ctx.log.warning("%s failed after %.2fs: %s", name, time.monotonic() - started, exc)
            raise
        except Exception as exc:
            ctx.log.error("%s failed after %.2fs: %s", name, time.monotonic() - started, exc)
            self._ended(ctx, failed=True)
            raise
        # states answer with pluggy's list of results; only queries have an answer to show
        shown = "" if answer is None or isinstance(answer, list) else (
            f" -> {getattr(answer, 'value', answer)}"
        )
        ctx.log.info("%s done in %.2fs%s", name, time.monotonic() - started, shown)
        self._ended(ctx, failed=False)
        return answer

    def _ended(self, ctx: InterfaceContext, failed: bool) -> None:
        with self._lock:
            row = self._row(ctx)
            if row is not None:
                row.ended, row.failed = time.monotonic(), failed
        self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            self._draw()

    def _draw(self) -> None:
        if not self._live:
            return
        log_module.set_status_lines(self.lines(time.monotonic()))

    def lines(self, now: float) -> list[str]:
        """The live view: the step, then a line per Component (running and failed first)."""
        with self._lock:
            rows = sorted(self._rows.items(), key=lambda item: (item[1].ended is not None
                                                                and not item[1].failed))
            done = sum(1 for _, row in rows if row.ended is not None)
            header = f"{self._step} ({done}/{len(rows)} Components done)"
            width = max((len(key) for key, _ in rows[:MAX_ROWS]), default=0)
            shown = [f"  {key:<{width}}  {row.text(now)}" for key, row in rows[:MAX_ROWS]]
        if len(rows) > MAX_ROWS:
            shown.append(f"  ... and {len(rows) - MAX_ROWS} more")
        return [header, *shown]

    @hookimpl(wrapper=True)
    def download(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("Download", ctx))

    @hookimpl(wrapper=True)
    def artifact_install(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactInstall", ctx))

    @hookimpl(wrapper=True)
    def artifact_reboot(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactReboot", ctx))

    @hookimpl(wrapper=True)
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactVerifyReboot", ctx))

    @hookimpl(wrapper=True)
    def artifact_commit(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactCommit", ctx))

    @hookimpl(wrapper=True)
    def cleanup(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("Cleanup", ctx))

    @hookimpl(wrapper=True)
    def artifact_rollback(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactRollback", ctx))

    @hookimpl(wrapper=True)
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactRollbackReboot", ctx))

    @hookimpl(wrapper=True)
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactVerifyRollbackReboot", ctx))

    @hookimpl(wrapper=True)
    def artifact_failure(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("ArtifactFailure", ctx))

    @hookimpl(wrapper=True)
    def supports_rollback(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("SupportsRollback", ctx))

    @hookimpl(wrapper=True)
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> Wrapped:
        return (yield from self._around("NeedsArtifactReboot", ctx))
