"""Systems of simulated units (examples/system-core/interfaces/simulated-unit), one order group
per Component, with an Artifact built here by Debian's mender-artifact.

Every Interface call passes a gate first: while the file ``<root>/gate-<STATE>`` exists, a
call of STATE notes ``<root>/gate-<STATE>.reached`` and waits, so a test can hold one
command in the middle of an Interface call while it runs another.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from systems import SIMULATED_UNIT, System, make_system

ARTIFACT = "unit-v2"


def build_artifact(directory: Path, types: Sequence[str]) -> Path:
    """``unit-v2.mender`` (module-image) for every component_type of ``types``."""
    payload = directory / "firmware.bin"
    payload.write_bytes(bytes(range(256)) * 16)
    targets = [arg for name in types for arg in ("-t", name)]
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "unit", *targets, "-n", ARTIFACT,
         "--provides", f"rootfs-image.unit.version:{ARTIFACT}", "-f", str(payload), "-o",
         str(directory / f"{ARTIFACT}.mender")],
        check=True, capture_output=True,
    )
    payload.unlink()
    return directory


def unit_system(root: Path, artifacts: Path, units: Sequence[tuple[str, str]],
                retries: int = 3) -> tuple[System, Path]:
    """A System whose Components (component_type, NeedsArtifactReboot answer) support
    rollback, each its own order group in the order given; and the Manifest to ``unit-v2``."""
    system = make_system(root / "system")
    real = root / "real"
    real.mkdir()
    shutil.copy(SIMULATED_UNIT, real / "unit")  # named "unit": it reports rootfs-image.unit.*
    system.write_interface(
        "unit",
        f'#!/bin/sh\ngate="{root}/gate-$1"\n'
        'if [ -e "$gate" ]; then\n    : >"$gate.reached"\n'
        '    while [ -e "$gate" ]; do sleep 0.02; done\nfi\n'
        f'exec "{real}/unit" "$@"\n',
    )
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n" + "".join(
            f"  - component_type: {name}\n    interface: unit\n"
            f"    interface_args: ['1', '{need}', 'Yes']\n" for name, need in units))
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 30, "RollbackRebootRetries": retries})
    manifest = root / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n" + "".join(
            f"  {name}: {{artifact_name: {ARTIFACT}, update_strategy: {{order: {10 * (i + 1)}}}}}\n"
            for i, (name, _) in enumerate(units)))
    return system, manifest


def close_gate(root: Path, state: str) -> Path:
    gate = root / f"gate-{state}"
    gate.touch()
    return gate


def wait_at_gate(gate: Path, timeout: float = 60) -> None:
    """Until an Interface call waits at ``gate``."""
    reached = gate.with_name(gate.name + ".reached")
    deadline = time.monotonic() + timeout
    while not reached.exists():
        assert time.monotonic() < deadline, f"no Interface call reached {gate.name}"
        time.sleep(0.02)


def all_calls(system: System) -> list[str]:
    """Every Interface call so far, as '<type>-<unit> <STATE>', in the order made."""
    log = system.devices / "calls"
    return log.read_text().splitlines() if log.exists() else []
