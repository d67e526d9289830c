"""What the driver knows about a chip without asking it: kept on the host, in ``--state-dir``.

Reading anything from an ESP32 needs its ROM loader, and entering the loader stops the running
application (a door lock, restarted at every inventory poll). So the driver writes down what
the chip will boot whenever it changes otadata (ArtifactInstall, ArtifactVerifyReboot,
ArtifactCommit, ArtifactRollback, ArtifactVerifyRollbackReboot), and the first query that
finds nothing recorded reads the chip once. Queries answer from this record, kept through the
core's ``HostRecordFile`` (one JSON file per serial port, replaced atomically).

The MAC, once recorded, stays: it is the Identity, which names the Component's directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from orchestrator_core.driver_api import HostRecord, HostRecordFile


@dataclass(frozen=True)
class ChipRecord(HostRecord):
    fixed: ClassVar[tuple[str, ...]] = ("mac",)

    mac: str | None = None  # 12 hex digits, lower case
    # the app the bootloader starts (the partition otadata selects), as the driver left it
    version: str | None = None
    partition: str | None = None
    ota_state: str | None = None  # of otadata's active entry: NEW, PENDING_VERIFY, VALID...
    project: str | None = None
    idf_version: str | None = None


def file_for(state_dir: Path, port: str) -> HostRecordFile[ChipRecord]:
    return HostRecordFile(state_dir, port, ChipRecord)
