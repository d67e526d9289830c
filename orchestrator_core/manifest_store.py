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
    """Keep ``manifest_bytes`` as current, the old current as previous (each step atomic).

    Recording the current Manifest again changes nothing: a deployment that crashed after
    this and before its end was journaled records it again on ``resume``, and must not
    push the Manifest before it out of ``previous``.
    """
    atomic.make_private_dir(store)
    current = store / CURRENT
    if current.exists():
        old = current.read_bytes()
        if old == manifest_bytes:
            return
        atomic.write_bytes(store / PREVIOUS, old, mode=0o644)
    atomic.write_bytes(current, manifest_bytes, mode=0o644)
