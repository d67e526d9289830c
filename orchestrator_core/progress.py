"""Progress of a deployment: a log record per state and query of each Component, and on a
terminal a live status line (order group, state, Components done, bytes streamed, and what
drivers report with ``ctx.progress``).

It is an observer plugin: the engine registers one ``ProgressObserver`` in every
Component's plugin manager, and it wraps the protocol hooks, so the engine itself holds no
reporting code and a vendor can add observers the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
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
SHOWN_COMPONENTS = 3  # on the status line; the rest are counted


def _amount(value: int, of_bytes: bool) -> str:
    if not of_bytes:
        return str(value)
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def describe(done: int, total: int | None, what: str) -> str:
    """``ctx.progress(done, total, what)`` for people: "48.0 KiB of 64.0 KiB flashed (75%)"
    for ``what`` "bytes flashed", "3 of 8 blocks" otherwise."""
    of_bytes = what == "bytes" or what.startswith("bytes ")
    rest = what[len("bytes") :].strip() if of_bytes else what
    text = _amount(done, of_bytes)
    if total is not None:
        text += f" of {_amount(total, of_bytes)}"
    text += f" {rest}" if rest else ""
    if total:
        text += f" ({100 * done // total}%)"
    return text


def journal_value(done: int, total: int | None) -> str:
    """How a report is kept in the journal's ``value`` column: "DONE/TOTAL" or "DONE"."""
    return f"{done}" if total is None else f"{done}/{total}"


def parse_journal_value(value: str) -> tuple[int, int | None]:
    done, _, total = value.partition("/")
    return int(done), int(total) if total else None


class ProgressObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step = ""
        self._members = 0
        self._done = 0
        self._feeds: list[Any] = []
        self._reports: dict[str, str] = {}  # Component key -> its last ctx.progress, described
        self._live = log_module.stderr_is_terminal()

    # ---- what the engine tells it

    def step_started(self, group: int, name: str, members: int) -> None:
        with self._lock:
            self._step = f"order group {group}: {name}"
            self._members, self._done, self._feeds = members, 0, []
            self._reports = {}
        self._draw()

    def sink(self, key: str, record: Callable[[str, str], None]) -> Sink:
        """Where the ``ctx.progress`` of Component ``key`` goes: the status line at once,
        and ``record(value, what)`` (the journal) at most every ``JOURNAL_INTERVAL``."""
        last = -JOURNAL_INTERVAL

        def report(done: int, total: int | None, what: str) -> None:
            nonlocal last
            done, total = int(done), None if total is None else int(total)
            if done < 0 or (total is not None and total < 0):
                raise ValueError(f"ctx.progress({done}, {total}): counts cannot be negative")
            with self._lock:
                self._reports[key] = describe(done, total, what)
            self._draw()
            now = time.monotonic()
            if now - last >= JOURNAL_INTERVAL or done == total:
                last = now
                record(journal_value(done, total), what)

        return report

    def step_finished(self) -> None:
        log_module.set_status_line(None)

    # ---- around every hook

    def _around(self, name: str, ctx: InterfaceContext) -> Wrapped:
        started = time.monotonic()
        if ctx.payload is not None:
            with self._lock:
                self._feeds.append(ctx.payload)
        ctx.log.debug("%s started", name)
        try:
            answer = yield
        except RetryableInterfaceError as exc:  # called again, so not done yet
            ctx.log.warning("%s failed after %.2fs: %s", name, time.monotonic() - started, exc)
            raise
        except Exception as exc:
            ctx.log.error("%s failed after %.2fs: %s", name, time.monotonic() - started, exc)
            self._count_done()
            raise
        # states answer with pluggy's list of results; only queries have an answer to show
        shown = "" if answer is None or isinstance(answer, list) else (
            f" -> {getattr(answer, 'value', answer)}"
        )
        ctx.log.info("%s done in %.2fs%s", name, time.monotonic() - started, shown)
        self._count_done()
        return answer

    def _count_done(self) -> None:
        with self._lock:
            self._done += 1
        self._draw()

    def _draw(self) -> None:
        if not self._live:
            return
        with self._lock:
            streamed = sum(getattr(feed, "bytes_read", 0) for feed in self._feeds)
            text = f"{self._step}: {self._done}/{self._members} Components done"
            reports = sorted(self._reports.items())
        if streamed:
            text += f", {streamed / 1048576:.1f} MiB streamed"
        for key, described in reports[:SHOWN_COMPONENTS]:
            text += f"; {key}: {described}"
        if len(reports) > SHOWN_COMPONENTS:
            text += f"; {len(reports) - SHOWN_COMPONENTS} more reporting"
        log_module.set_status_line(text)

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
