"""What the driver knows about a chip without asking it: kept on the host, in ``--state-dir``.

Reading anything from an ESP32 needs its ROM loader, and entering the loader stops the running
application (a door lock, restarted at every inventory poll). So the driver writes down what
the chip will boot whenever it changes otadata (ArtifactInstall, ArtifactVerifyReboot,
ArtifactCommit, ArtifactRollback, ArtifactVerifyRollbackReboot), and the first query that
finds nothing recorded reads the chip once. Queries answer from this record.

The MAC, once recorded, stays: it is the Identity, which names the Component's directories.
One JSON file per serial port, replaced atomically.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from orchestrator_core.driver_api import write_atomically

log = logging.getLogger("mender_orchestrator.esp32")


@dataclass(frozen=True)
class HostRecord:
    mac: str | None = None  # 12 hex digits, lower case
    # the app the bootloader starts (the partition otadata selects), as the driver left it
    version: str | None = None
    partition: str | None = None
    ota_state: str | None = None  # of otadata's active entry: NEW, PENDING_VERIFY, VALID...
    project: str | None = None
    idf_version: str | None = None

    @property
    def complete(self) -> bool:
        """Everything a query reports is known (else the chip is read once)."""
        return all(getattr(self, f.name) is not None for f in fields(self))

    def updated(self, **changes: str | None) -> HostRecord:
        # the first MAC recorded stays: it names the Component's directories
        if self.mac is not None:
            changes.pop("mac", None)
        return replace(self, **changes)


def path_for(state_dir: Path, port: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", port.strip("/"))
    return state_dir / f"{name}.json"


def load(path: Path) -> HostRecord:
    """The record, or an empty one when there is none (or it is unreadable: the next query
    then reads the chip again, and the log says why)."""
    try:
        return HostRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return HostRecord()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s is unreadable (%s); ignoring it", path, exc)
        return HostRecord()


def save(path: Path, record: HostRecord) -> None:
    """Write ``record`` atomically; raises OSError (the caller decides what that costs)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, json.dumps(asdict(record), indent=2).encode() + b"\n")
