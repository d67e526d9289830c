"""Where the Manifest of the last successful deployment is kept (config ``ManifestStore``).

``current.yaml`` is the Manifest the System runs; ``previous.yaml`` the one before it.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator_core import atomic
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.manifest import load_manifest

CURRENT = "current.yaml"
PREVIOUS = "previous.yaml"


def current_name(store: Path) -> str | None:
    """The name of the Manifest the System runs, or None before the first deployment."""
    path = store / CURRENT
    if not path.exists():
        return None
    try:
        return load_manifest(path).name
    except OrchestratorError:
        return None


def record(store: Path, manifest_bytes: bytes) -> None:
    """Keep ``manifest_bytes`` as current, the old current as previous (each step atomic)."""
    atomic.make_private_dir(store)
    current = store / CURRENT
    if current.exists():
        atomic.write_bytes(store / PREVIOUS, current.read_bytes(), mode=0o644)
    atomic.write_bytes(current, manifest_bytes, mode=0o644)
