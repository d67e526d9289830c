"""What a driver learnt about a device, kept on the host so queries need not ask the device.

Some devices can only be read by stopping what they run: an STM32's system bootloader, an
ESP32's ROM loader. A query (Identity, Provides, Inventory) must not restart the application
at every inventory poll, so such a driver writes down what it learnt whenever it had the
loader anyway (an install, a rollback, a query that found the device waiting in its loader)
and answers queries from that record.

A driver declares its record as a frozen dataclass subclassing ``HostRecord``, every field
optional (``None``: not known yet), and names the fields that must never change once known in
``fixed`` (the Identity: it names the Component's directories). ``HostRecordFile`` keeps one
record per device, as JSON under a directory of the driver's choosing (``default_directory``
unless the user gives another), replaced atomically (temporary name, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from orchestrator_core.atomic import make_private_dir, write_bytes
from orchestrator_core.config import ENV_DATASTORE_DIR

DEFAULT_DATASTORE = "/var/lib/mender-orchestrator"

log = logging.getLogger("mender_orchestrator.host_record")


@dataclass(frozen=True)
class HostRecord:
    """Base of a driver's record: subclass it as a frozen dataclass."""

    # fields that keep their first known value (``updated`` leaves them alone once set)
    fixed: ClassVar[tuple[str, ...]] = ()

    def updated(self, **changes: Any) -> Self:
        """A copy with ``changes``, except to ``fixed`` fields already known."""
        kept = {k: v for k, v in changes.items() if k not in self.fixed or getattr(self, k) is None}
        return replace(self, **kept)

    @property
    def complete(self) -> bool:
        """Every field is known."""
        return all(getattr(self, f.name) is not None for f in fields(self))


R = TypeVar("R", bound=HostRecord)


def default_directory(driver: str) -> Path:
    """``<datastore>/<driver>``: the datastore as the orchestrator finds it
    (``$MENDER_ORCHESTRATOR_DATASTORE_DIR``, else ``/var/lib/mender-orchestrator``)."""
    return Path(os.environ.get(ENV_DATASTORE_DIR) or DEFAULT_DATASTORE, driver)


class HostRecordFile(Generic[R]):
    """The record of one device: ``<directory>/<device>.json``, ``device`` made a safe file
    name (a port or bus path's slashes and other characters become ``_``)."""

    def __init__(self, directory: Path, device: str, record_type: type[R]) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", device.strip("/")).lstrip(".")
        self.path = directory / f"{name or '_'}.json"
        self.record_type = record_type

    def load(self) -> R:
        """The record; an empty one when there is none, or when it cannot be read (a query
        then answers as for a device never seen, and the log says why). Keys the record type
        does not have are passed over: a newer driver's file still reads."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            names = {f.name for f in fields(self.record_type)}
            return self.record_type(**{k: v for k, v in raw.items() if k in names})
        except FileNotFoundError:
            return self.record_type()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s is unreadable (%s); ignoring it", self.path, exc)
            return self.record_type()

    def save(self, record: R) -> None:
        """Replace the file with ``record`` atomically, the directory made private (0700);
        raises ``OSError``: the driver decides what a failure costs."""
        make_private_dir(self.path.parent)
        write_bytes(self.path, json.dumps(asdict(record), indent=2).encode() + b"\n")

    def update(self, **changes: Any) -> R:
        """Load, apply ``changes`` (``HostRecord.updated``), save; the record saved."""
        record: R = self.load().updated(**changes)
        self.save(record)
        return record
