"""One call to a Component's driver, measured: how long it took, how much it printed, and
what it changed in the File API directory outside ``tmp/``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestrator_core import filetree
from orchestrator_core.context import ArtifactInfo, InterfaceContext
from orchestrator_core.drivers import ComponentDriver
from orchestrator_core.errors import InterfaceTimeout, OrchestratorError
from orchestrator_core.log import ROOT

T = TypeVar("T")
# More log output than this from one call is a flood, not a report: a query answer is capped
# at 1 MiB by the exec driver, and a state's progress fits in far less.
OUTPUT_LIMIT = 1 << 20
# entries of the File API directory the orchestrator itself writes while a call runs
_ORCHESTRATOR_OWNED = (filetree.STREAM_NEXT, filetree.STREAMS)


@dataclass(frozen=True)
class Call:
    """One hook call as it happened."""

    hook: str  # the protocol name: Identity, Download, ArtifactInstall...
    seconds: float
    error: str | None
    timed_out: bool
    output_bytes: int
    outside_tmp: tuple[str, ...]  # File API paths it created, changed or removed


class CallFailed(Exception):
    """A call failed; the call is recorded already."""

    def __init__(self, hook: str, message: str) -> None:
        super().__init__(message)
        self.hook = hook
        self.message = message


class _CountingLog(logging.LoggerAdapter[logging.Logger]):
    """The call's logger, counting the bytes of what the Interface reports through it (the
    exec driver relays an executable's stdout and stderr here, line by line)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.getLogger(f"{ROOT}.component"), {"mender_name": name})
        self.count = 0

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        self.count += len(text.encode("utf-8", "replace"))
        super().log(level, msg, *args, **kwargs)


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry outside ``tmp/`` (and the streams tree): kind, size, modification time."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root, dirs, files in os.walk(directory):
        relative = os.path.relpath(root, directory)
        if relative == ".":
            dirs[:] = [d for d in dirs if d not in (filetree.TMP, *_ORCHESTRATOR_OWNED)]
            files = [f for f in files if f not in _ORCHESTRATOR_OWNED]
        for name in (*dirs, *files):
            if relative == "." and name == filetree.FILES:
                continue  # made by the orchestrator (the streams/ of Download); its entries count
            path = os.path.normpath(os.path.join(relative, name))
            info = os.lstat(os.path.join(root, name))
            kind = info.st_mode & 0o170000
            # a directory's own times change with what is made inside it; its entries tell
            seen[path] = (kind, 0, 0) if name in dirs else (kind, info.st_size, info.st_mtime_ns)
    return seen


def _changed(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
             ) -> tuple[str, ...]:
    return tuple(sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)))


class Probe:
    """Calls one Component's driver as the engine does, and keeps a record of every call."""

    def __init__(self, driver: ComponentDriver, timeout_seconds: float) -> None:
        self.driver = driver
        self.timeout_seconds = timeout_seconds
        self.component_id: str | None = None
        self.work_dir: Path | None = None  # set during a walk: the File API directory
        self.artifact: ArtifactInfo | None = None
        self.calls: list[Call] = []

    def call(self, hook: str, action: Callable[[InterfaceContext], T]) -> T:
        """Run ``action`` with a fresh context; raise ``CallFailed`` if it failed."""
        label = f"{self.component_id or self.driver.component.label} " \
                f"(interface {self.driver.component.interface})"
        log = _CountingLog(label)
        ctx = self.driver.context(
            log=log,
            timeout_seconds=self.timeout_seconds,
            component_id=self.component_id,
            work_dir=self.work_dir,
            artifact=self.artifact,
        )
        work_dir = self.work_dir
        before = _snapshot(work_dir) if work_dir is not None else {}
        error: str | None = None
        timed_out = False
        started = time.monotonic()
        try:
            return action(ctx)
        except OrchestratorError as exc:
            error, timed_out = exc.message, isinstance(exc, InterfaceTimeout)
            raise CallFailed(hook, error) from exc
        except Exception as exc:  # a driver's bug outside ComponentDriver's own wrapping
            error = f"{hook}: the driver raised {type(exc).__name__}: {exc}"
            raise CallFailed(hook, error) from exc
        finally:
            seconds = time.monotonic() - started
            after = _snapshot(work_dir) if work_dir is not None else {}
            self.calls.append(
                Call(hook, seconds, error, timed_out or seconds > self.timeout_seconds,
                     log.count, _changed(before, after))
            )
