"""``InterfaceTimeoutSeconds`` for in-process drivers, held by the engine itself.

An executable Interface is killed at its deadline; a driver's hook runs in our own process
and cannot be killed. So the hook runs in a thread of its own, and the caller waits for it
until ``ctx.deadline``. Then ``ctx.cancelled`` is set, the one way a driver's transport is
told to stop (also on SIGTERM, SIGHUP and SIGINT); a driver that returns within
``STOP_GRACE_SECONDS`` of it ends the call its own way. One that does not is abandoned: the
call fails with ``InterfaceTimeout``, the System takes the failure path, and the thread,
a daemon thread, cannot keep the process alive when the run ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator_core import processes
from orchestrator_core.context import InterfaceContext
from orchestrator_core.errors import InterfaceError, InterfaceTimeout

STOP_GRACE_SECONDS = 2.0  # from ctx.cancelled to giving the call up, as TERM to KILL
_POLL_SECONDS = 0.1  # how often the wait looks at ctx.cancelled (set by a signal)


class _Call:
    def __init__(self, hook: Callable[..., Any], ctx: InterfaceContext) -> None:
        self.done = threading.Event()
        self.answer: Any = None
        self.error: BaseException | None = None
        self._hook = hook
        self._ctx = ctx

    def run(self) -> None:
        try:
            self.answer = self._hook(ctx=self._ctx)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.answer


def call(hook: Callable[..., Any], name: str, ctx: InterfaceContext, target: str) -> Any:
    """``hook(ctx=ctx)``, given up at ``ctx.deadline`` plus the grace if it has not returned."""
    running = _Call(hook, ctx)
    thread = threading.Thread(target=running.run, name=f"driver {name}", daemon=True)
    with processes.cancellable(ctx.cancelled):
        thread.start()
        while not running.done.wait(min(_POLL_SECONDS, max(0.0, ctx.deadline - time.monotonic()))):
            if ctx.cancelled.is_set() or time.monotonic() >= ctx.deadline:
                break
        if running.done.is_set():
            return running.result()
        ctx.cancelled.set()
        if running.done.wait(STOP_GRACE_SECONDS):
            return running.result()
    if processes.interrupted():
        raise InterfaceError(
            f"{ctx.name}: {name} did not stop within {STOP_GRACE_SECONDS:g} s of the stop "
            f"signal; driver {target} was abandoned"
        )
    raise InterfaceTimeout(
        f"{ctx.name}: {name} ran longer than InterfaceTimeoutSeconds "
        f"({ctx.timeout_seconds:g} s) and did not return within {STOP_GRACE_SECONDS:g} s of "
        f"being told to stop (ctx.cancelled); driver {target} was abandoned"
    )
