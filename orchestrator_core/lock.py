"""One orchestrator at a time: the lock file ``<datastore>/lock`` (flock).

A deployment holds it while it runs. Queries (``show-provides``, ``show-inventory``, ``plan``)
check it too: asking a CAN ECU for its version in the middle of its flashing session, say,
could break the very update the deployment is making, so they refuse while it is held.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from orchestrator_core import atomic
from orchestrator_core.config import Config
from orchestrator_core.errors import OrchestratorError

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
            raise OrchestratorError(
                f"another mender-orchestrator is working on this System (lock {path} is held); "
                f"wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


def refuse_while_deploying(config: Config, what: str) -> None:
    """Raise if a deployment is running right now; creates nothing when none ever ran."""
    path = config.datastore_dir / LOCK_FILE
    try:
        handle = path.open("r")
    except OSError:
        return  # no lock file: no deployment has ever run here
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OrchestratorError(
                f"a deployment is running on this System right now (lock {path} is held); "
                f"{what} would query its Components in the middle of their update, so it "
                f"waits for the next run"
            ) from None


def held(config: Config) -> bool:
    """Whether a mender-orchestrator holds the lock right now (a deployment is running)."""
    try:
        refuse_while_deploying(config, "")
    except OrchestratorError:
        return True
    return False
