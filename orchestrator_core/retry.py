"""Retrying a driver call that failed with ``RetryableInterfaceError``.

The policy (docs/drivers.md, "Retryable and fatal failures"): a hook that raises
``RetryableInterfaceError`` is called again, up to ``TRIES`` calls in all, waiting
``FIRST_WAIT`` seconds before the second and twice as long before each next one; it is never
called again when the wait would end past ``ctx.deadline`` (the one deadline of the whole
call, retries included). When the tries or the time run out, the last error is raised as a
plain ``InterfaceError``, saying how many calls were made. Any other error is raised at once,
and so is a transient fault of a ``download`` that had started reading the payload (it
streams once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from orchestrator_core.context import InterfaceContext
from orchestrator_core.errors import InterfaceError, RetryableInterfaceError

T = TypeVar("T")

TRIES = 5
FIRST_WAIT = 0.1  # seconds; then 0.2, 0.4, 0.8


def call_with_retries(call: Callable[[], T], hook: str, ctx: InterfaceContext) -> T:
    wait = FIRST_WAIT
    attempt = 1
    while True:
        try:
            return call()
        except RetryableInterfaceError as exc:
            out_of_time = time.monotonic() + wait >= ctx.deadline
            # the payload streams once: a Download that started reading it cannot start over
            streamed = ctx.payload is not None and ctx.payload.consumed
            if attempt == TRIES or out_of_time or streamed:
                why = "no tries left"
                if streamed:
                    why = "not called again: it had started reading the payload"
                elif out_of_time and attempt < TRIES:
                    why = "no time left before the deadline"
                raise InterfaceError(
                    f"{exc.message} (a transient fault; {hook} was called {attempt} "
                    f"time{'s' if attempt > 1 else ''}, {why})"
                ) from exc
            ctx.log.warning(
                "%s failed with a transient fault, calling it again in %.1fs: %s",
                hook,
                wait,
                exc.message,
            )
            time.sleep(wait)
            wait *= 2
            attempt += 1
