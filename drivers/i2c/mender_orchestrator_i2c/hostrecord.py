"""What the driver knows about an MCU without asking it: kept on the host, in ``--state-dir``.

Queries (Identity, Provides, Inventory) must not stop a running application, and the STM32
bootloader is the only thing that can read the part number, the unique ID or the flash's
version record. So the driver writes down what it learnt whenever it had the bootloader
anyway (an install, a rollback, a query that found the MCU waiting in its bootloader) and
answers queries from that, through the core's ``HostRecordFile`` (one JSON file per bus and
address, replaced atomically). The Identity, once given, is kept as it was: it names the
Component's directories, so it must not change when more becomes known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from orchestrator_core.driver_api import HostRecord, HostRecordFile

log = logging.getLogger("mender_orchestrator.i2c")


@dataclass(frozen=True)
class MCURecord(HostRecord):
    fixed: ClassVar[tuple[str, ...]] = ("identity",)

    identity: str | None = None
    pid: int | None = None
    bootloader_version: str | None = None
    version: str | None = None  # what runs, as installed (or rolled back to) by the driver


def file_for(state_dir: Path, bus: str, address: int) -> HostRecordFile[MCURecord]:
    return HostRecordFile(state_dir, f"{bus}-0x{address:02x}", MCURecord)


def save(records: HostRecordFile[MCURecord], record: MCURecord) -> None:
    """Write ``record``; a failure is logged, not raised: the record only spares queries
    a trip to the bootloader, and an install must not fail over it."""
    try:
        records.save(record)
    except OSError as exc:
        log.warning("cannot record the MCU's state in %s: %s", records.path, exc.strerror or exc)
