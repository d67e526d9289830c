"""What the driver knows about an MCU without asking it: kept on the host, in ``--state-dir``.

Queries (Identity, Provides, Inventory) must not stop a running application, and the STM32
bootloader is the only thing that can read the part number, the unique ID or the flash's
version record. So the driver writes down what it learnt whenever it had the bootloader
anyway (an install, a rollback, a query that found the MCU waiting in its bootloader) and
answers queries from that. The Identity, once given, is kept as it was: it names the
Component's directories, so it must not change when more becomes known.

One JSON file per bus and address, replaced atomically.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from orchestrator_core.driver_api import write_atomically as write_atomic

log = logging.getLogger("mender_orchestrator.i2c")


@dataclass(frozen=True)
class HostRecord:
    identity: str | None = None
    pid: int | None = None
    bootloader_version: str | None = None
    version: str | None = None  # what runs, as installed (or rolled back to) by the driver

    def updated(self, **changes: object) -> HostRecord:
        # the first Identity given stays: it names the Component's directories
        if self.identity is not None:
            changes.pop("identity", None)
        return replace(self, **changes)  # type: ignore[arg-type]


def path_for(state_dir: Path, bus: str, address: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", bus.strip("/"))
    return state_dir / f"{name}-0x{address:02x}.json"


def load(path: Path) -> HostRecord:
    """The record, or an empty one when there is none (or it is unreadable: a query then
    answers as for a device never installed, and says so in the log)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return HostRecord(**raw)
    except FileNotFoundError:
        return HostRecord()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s is unreadable (%s); ignoring it", path, exc)
        return HostRecord()


def save(path: Path, record: HostRecord) -> None:
    """Write ``record``; a failure is logged, not raised: the record only spares queries
    a trip to the bootloader, and an install must not fail over it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(record), indent=2).encode() + b"\n")
    except OSError as exc:
        log.warning("cannot record the MCU's state in %s: %s", path, exc.strerror or exc)
