"""What each Component last installed, kept so a driver can always reinstall it.

A driver that sets ``keeps_previous_artifact = True`` (on its class or factory) gets
``ctx.previous_artifact`` in every state of a deployment: the Artifact the Component ran
before this deployment began, with its verified payload files on disk. Rolling back then means
flashing that payload again: no read-back of the device (``RequestUpload``, a backup through a
protected bootloader) is needed.

Layout under ``<datastore>/installed/<quoted component key>/``: one directory per Artifact
kept (``d-<deployment id>``: ``artifact.json`` and ``files/``), and ``current``, a symbolic
link to the one the Component runs. Download stores the new payload next to the current one;
only the end of a successful deployment moves ``current`` to it (one ``rename`` of a new link:
a power cut leaves the old link or the new one). Anything ``current`` does not name is removed
at the end of every deployment, so at most two copies exist per Component at any time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from orchestrator_core.atomic import fsync_dir, make_private_dir, write_bytes
from orchestrator_core.context import ArtifactInfo
from orchestrator_core.errors import ArtifactError

log = logging.getLogger("mender_orchestrator.installed")

CURRENT = "current"
RECORD = "artifact.json"


class PreviousArtifact(NamedTuple):
    """The Artifact a Component ran before this deployment: its header facts and its
    payload files (verified when they were stored; read them, do not change them)."""

    info: ArtifactInfo
    files: tuple[Path, ...]

    def file(self, name: str) -> Path:
        """The stored payload file ``name``; ``KeyError`` when the Artifact had none."""
        for path in self.files:
            if path.name == name:
                return path
        raise KeyError(name)


class StoredPayloadFile:
    """A payload file read back from the store (``context.PayloadFile``)."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.size = path.stat().st_size
        self._stream = path.open("rb")

    def read(self, n: int = -1, /) -> bytes:
        if self._stream.closed:
            return b""
        data = self._stream.read(n)
        if not data or self._stream.tell() >= self.size:
            self._stream.close()
        return data


class StoredPayload:
    """The feed a keeping driver's ``Download`` reads: the files just stored (and verified)
    rather than the Artifact stream, which the store has already read."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = list(files)
        self._consumed = False

    @property
    def consumed(self) -> bool:
        return self._consumed

    def files(self) -> Iterator[StoredPayloadFile]:
        self._consumed = True
        for path in self._files:
            yield StoredPayloadFile(path)

    def save_to(self, directory: Path) -> list[Path]:
        """Copies in the File API ``files/`` (not links: an Interface may change its copy)."""
        make_private_dir(directory)
        self._consumed = True
        return [Path(shutil.copyfile(path, directory / path.name)) for path in self._files]

    def whole_artifact(self) -> Iterator[bytes]:
        raise ArtifactError(
            "the whole .mender file is not available to a driver that keeps the previous "
            "Artifact: read ctx.payload.files()"
        )


class InstalledArtifacts:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, key: str) -> Path:
        return self.root / quote(key, safe="")

    def previous(self, key: str) -> PreviousArtifact | None:
        """What ``current`` names for the Component, or ``None`` when nothing was kept yet
        (its first deployment with this driver) or the record cannot be read."""
        kept = self._entry(key) / CURRENT
        try:
            record = json.loads((kept / RECORD).read_text())
            info = ArtifactInfo(
                name=record["name"],
                group=record.get("group"),
                payload_type=record.get("payload_type"),
                provides={k: v for k, v in record.get("provides", {}).items()},
                files=tuple((f["name"], int(f["size"])) for f in record["files"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: the record of the Artifact it last installed cannot be read (%s); "
                        "going on as if none was kept", key, exc)
            return None
        files = tuple(kept / "files" / name for name, _ in info.files)
        return PreviousArtifact(info, files)

    def stage(self, key: str, deployment_id: int, info: ArtifactInfo,
              save_to: Callable[[Path], list[Path]]) -> list[Path]:
        """Store the payload being downloaded (verified as it is written) beside the current
        entry; it becomes current only through ``promote``."""
        staged = self._entry(key) / f"d-{deployment_id}"
        if staged.exists():  # a Download run again after a resume starts from nothing
            shutil.rmtree(staged)
        files_dir = make_private_dir(staged / "files")
        stored = save_to(files_dir)
        record = {
            "name": info.name,
            "group": info.group,
            "payload_type": info.payload_type,
            "provides": dict(info.provides),
            "files": [{"name": p.name, "size": p.stat().st_size} for p in stored],
        }
        write_bytes(staged / RECORD, json.dumps(record, indent=1).encode())
        return stored

    def promote(self, key: str, deployment_id: int) -> None:
        """Make what this deployment stored the Component's current entry."""
        entry = self._entry(key)
        staged = entry / f"d-{deployment_id}"
        if not (staged / RECORD).is_file():
            return
        link = entry / ".current.new"
        link.unlink(missing_ok=True)
        os.symlink(staged.name, link)
        os.replace(link, entry / CURRENT)
        fsync_dir(entry)

    def tidy(self) -> None:
        """Remove every stored Artifact that no ``current`` names (stages of a deployment that
        failed or ended; what a crash left)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if not entry.is_dir():
                continue
            current = os.readlink(entry / CURRENT) if (entry / CURRENT).is_symlink() else None
            for child in entry.iterdir():
                if child.name in (CURRENT, current):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
