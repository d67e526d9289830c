"""Orchestration overhead: a deployment of N no-op Components next to the spawn floor.

For N Components (default 1, 10, 100, 500) whose Interface is a no-op shell script, it times
``mender-orchestrator install`` with every Component in one order group (parallel) and with
the Components spread over min(N, 100) groups (orders go up to 100), next to the cost of the
same number of bare ``/bin/true`` spawns run one after another in the same run.

Each Component costs 10 Interface calls (Identity, Provides, NeedsUnpackedArtifact,
ProvidePayloadFileSizes, Download, SupportsRollback, ArtifactInstall, NeedsArtifactReboot,
ArtifactCommit, Cleanup). Targets: at N=100 the one-group deployment within 1.5x the spawn
floor; one group of N about as long as one Component.

Run: .venv/bin/python bench/deployment_overhead.py [--sizes 1 10 100 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALLS_PER_COMPONENT = 10
NOOP = """#!/bin/sh
case "$1" in
  Identity) echo "id=$4" ;;
  Provides) echo "rootfs-image.noop.version=old" ;;
esac
"""


def spawn_floor(count: int, argv: list[str] | None = None) -> float:
    start = time.perf_counter()
    for _ in range(count):
        subprocess.run(argv or ["/bin/true"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def interface_floor(count: int) -> float:
    """The same number of calls of the no-op Interface itself, one after another."""
    with tempfile.TemporaryDirectory() as tmp:
        noop = Path(tmp) / "noop"
        noop.write_text(NOOP)
        noop.chmod(0o755)
        return spawn_floor(count, [str(noop), "Cleanup", tmp, "noop0", "c0"])


def make_system(root: Path, n: int, groups: int) -> tuple[dict[str, str], Path]:
    interfaces = root / "share" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    for directory in ("etc", "lib", "artifacts"):
        (root / directory).mkdir()
    noop = interfaces / "noop"
    noop.write_text(NOOP)
    noop.chmod(0o755)
    types = [f"noop{g}" for g in range(groups)]
    argv = ["mender-artifact", "write", "module-image", "-T", "noop", "-n", "noop-v2",
            "-o", str(root / "artifacts" / "noop-v2.mender"),
            "--provides", "rootfs-image.noop.version:noop-v2"]
    for component_type in types:
        argv += ["-t", component_type]
    subprocess.run(argv, check=True, capture_output=True)
    lines = ["api_version: mender/v1", "kind: topology", "system_type: bench", "components:"]
    for index in range(n):
        lines += [f"  - component_type: {types[index % groups]}", "    interface: noop",
                  f"    interface_args: ['c{index}']"]
    (root / "lib" / "topology.yaml").write_text("\n".join(lines) + "\n")
    manifest = ["api_version: mender/v1", "kind: manifest", "name: bench-v2",
                "system_types_compatible: [bench]", "component_types:"]
    for order, component_type in enumerate(types, start=1):
        manifest += [f"  {component_type}:", "    artifact_name: noop-v2",
                     f"    update_strategy: {{order: {order}}}"]
    manifest_path = root / "manifest.yaml"
    manifest_path.write_text("\n".join(manifest) + "\n")
    (root / "etc" / "mender-orchestrator.conf").write_text(
        '{"ArtifactSources": [{"Type": "directory", "Path": "%s"}]}' % (root / "artifacts")
    )
    env = dict(os.environ)
    env.update(
        MENDER_ORCHESTRATOR_CONF_DIR=str(root / "etc"),
        MENDER_ORCHESTRATOR_DATA_DIR=str(root / "share"),
        MENDER_ORCHESTRATOR_DATASTORE_DIR=str(root / "lib"),
    )
    return env, manifest_path


def deployment_time(n: int, groups: int) -> float:
    cli = str(Path(sys.executable).parent / "mender-orchestrator")
    with tempfile.TemporaryDirectory() as tmp:
        env, manifest = make_system(Path(tmp), n, groups)
        start = time.perf_counter()
        subprocess.run([cli, "--log-level", "error", "install", str(manifest)], env=env,
                       check=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 500])
    args = parser.parse_args()
    print(f"{'N':>5} {'calls':>6} {'spawn floor':>12} {'Interface':>10} {'one group':>10} "
          f"{'ratio':>6} {'overhead':>9} {'groups':>7} {'N groups':>9} {'ratio':>6}")
    single = None
    for n in args.sizes:
        calls = n * CALLS_PER_COMPONENT
        floor = spawn_floor(calls)
        by_hand = interface_floor(calls)
        one = deployment_time(n, 1)
        groups = min(n, 100)
        many = deployment_time(n, groups)
        single = single if single is not None else one
        overhead = (one - floor) / floor
        print(f"{n:>5} {calls:>6} {floor:>11.2f}s {by_hand:>9.2f}s {one:>9.2f}s "
              f"{one / floor:>5.2f}x {overhead:>8.2f}x {groups:>7} {many:>8.2f}s "
              f"{many / floor:>5.2f}x")
    if single is not None:
        print(f"one Component alone: {single:.2f}s (a group of N in parallel should be close)")
    print("spawn floor: /bin/true run `calls` times in a row; Interface: the no-op Interface "
          "itself run as often; ratio: deployment / spawn floor; overhead: (deployment - "
          "spawn floor) / spawn floor")


if __name__ == "__main__":
    main()
