"""The Artifacts of the upstream demo System, made by Debian's ``mender-artifact`` for each run.

Tests read them from ``systems.FIXTURES``, which ``conftest.py`` fills before collection and
removes at the end; each test process (each pytest-xdist worker too) has its own directory.
What they are, as the upstream demo made them with the same Go tool:

- ``rtos-v1.mender``, ``rtos-v2.mender``: module-image Artifacts for the ``rtos-interface``
  Interface, device type ``rtos``, gzip, unsigned, one empty payload file ``rtos-vN-payload``,
  providing ``rootfs-image.rtos-interface.version`` = the Artifact name (the tool's default
  software version, with the matching ``rootfs-image.rtos-interface.*`` cleared);
- ``manifest-v1.yaml``: examples/system-core/manifest-v1.yaml (``system-core-v1``);
- ``manifest-v1.mender``: that Manifest as a Manifest Artifact for device type ``gateway``
  (payload type ``mender-orchestrator-manifest``, software filesystem ``data-partition``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST_V1 = REPO / "examples" / "system-core" / "manifest-v1.yaml"


def _write(*arguments: str | Path) -> None:
    argv = ["mender-artifact", "write", "module-image", *map(str, arguments)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise pytest.UsageError(f"{argv} failed ({done.returncode}): {done.stderr}{done.stdout}")


def build(directory: Path) -> None:
    """Write the demo's files into ``directory`` (which exists)."""
    if shutil.which("mender-artifact") is None:
        raise pytest.UsageError(
            "the tests build their Artifacts with Debian's mender-artifact: "
            "apt-get install mender-artifact"
        )
    # the payload files live elsewhere: a directory source scanning ``directory`` must find
    # only what the upstream demo shipped
    with tempfile.TemporaryDirectory(prefix="payloads-") as payloads:
        for version in ("rtos-v1", "rtos-v2"):
            payload = Path(payloads) / f"{version}-payload"
            payload.touch()
            _write("-T", "rtos-interface", "-t", "rtos", "-n", version, "-f", payload,
                   "-o", directory / f"{version}.mender")
    manifest = directory / "manifest-v1.yaml"
    shutil.copyfile(MANIFEST_V1, manifest)
    _write("-T", "mender-orchestrator-manifest", "-t", "gateway", "-n", "system-core-v1",
           "-f", manifest, "--software-filesystem", "data-partition",
           "-o", directory / "manifest-v1.mender")
