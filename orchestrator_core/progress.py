"""Progress of a deployment: a log record per state and query of each Component, and on a
terminal a live status line (order group, state, Components done, bytes streamed).

It is an observer plugin: the engine registers one ``ProgressObserver`` in every
Component's plugin manager, and it wraps the protocol hooks, so the engine itself holds no
reporting code and a vendor can add observers the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any

from orchestrator_core import log as log_module
from orchestrator_core.context import InterfaceContext
from orchestrator_core.hookspecs import hookimpl

Wrapped = Generator[None, Any, Any]


class ProgressObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step = ""
        self._members = 0
        self._done = 0
        self._feeds: list[Any] = []
        self._live = log_module.stderr_is_terminal()

    # ---- what the engine tells it

    def step_started(self, group: int, name: str, members: int) -> None:
        with self._lock:
            self._step = f"order group {group}: {name}"
            self._members, self._done, self._feeds = members, 0, []
        self._draw()

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
        if streamed:
            text += f", {streamed / 1048576:.1f} MiB streamed"
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
