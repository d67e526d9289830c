"""One orchestrator at a time: the lock file ``<datastore>/lock`` (flock).

A deployment (``install``, ``resume``, ``rollback``) holds it exclusively from before its first
Interface call to its end; ``install`` takes it before planning. Queries (``show-provides``,
``show-inventory``, ``plan``) hold it shared for as long as they call Interfaces: asking a CAN
ECU for its version in the middle of its flashing session, say, could break the very update
the deployment is making, so neither may start while the other runs. Queries may run side by
side.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from orchestrator_core import atomic
from orchestrator_core.config import Config
from orchestrator_core.errors import Busy, OrchestratorError

LOCK_FILE = "lock"


@contextmanager
def exclusive(config: Config) -> Iterator[None]:
    """Hold the lock for a deployment; fail at once if another process holds it."""
    atomic.make_private_dir(config.datastore_dir)
    path = config.datastore_dir / LOCK_FILE
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"another mender-orchestrator is working on this System (lock {path} is held); "
                f"wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


@contextmanager
def shared(config: Config, what: str) -> Iterator[None]:
    """Hold the lock shared while a query calls Interfaces; fail at once if a deployment
    holds it."""
    path = config.datastore_dir / LOCK_FILE
    handle = _open_shared(path)
    if handle is None:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"a deployment is running on this System right now (lock {path} is held); "
                f"{what} would query its Components in the middle of their update, so it "
                f"waits for the next run"
            ) from None
        yield


def _open_shared(path: Path) -> IO[str] | None:
    """The lock file opened for reading, created first if no deployment ever made it; None
    where no deployment can run (no datastore directory, or a read-only one)."""
    try:
        return path.open("r")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OrchestratorError(f"cannot open the lock {path}: {exc.strerror}") from None
    try:
        return path.open("a+") if path.parent.is_dir() else None
    except OSError:
        return None


def held(config: Config) -> bool:
    """Whether a mender-orchestrator holds the lock right now (a deployment is running)."""
    try:
        handle = (config.datastore_dir / LOCK_FILE).open("r")
    except OSError:
        return False  # no lock file (nor a readable one): no deployment holds it
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
