"""Orchestration overhead: a deployment of N no-op Components next to the spawn floor.

For N Components (default 1, 10, 100, 500) whose Interface is a no-op shell script, it times
``mender-orchestrator install`` with every Component in one order group (parallel) and with
the Components spread over min(N, 100) groups (orders go up to 100), next to the cost of the
same number of bare ``/bin/true`` spawns run one after another in the same run.

Each Component costs 10 Interface calls (Identity, Provides, NeedsUnpackedArtifact,
ProvidePayloadFileSizes, Download, SupportsRollback, ArtifactInstall, NeedsArtifactReboot,
ArtifactCommit, Cleanup). Targets: at N=100 the one-group deployment within 1.3x the spawn
floor, and linear in N up to 1000 (the fit printed at the end: a fixed cost plus a cost per
Component, and each size's distance from it); one group of N about as long as one Component.

It also prints where the CPU of each one-group deployment went: the Interfaces' share (the
same calls run by hand) and the orchestrator's, per Interface call. On a machine of two cores
the wall clock cannot go under half of their sum, whatever the orchestrator overlaps.

The second target is about Interfaces that take time (flashing an ECU, not a no-op): a no-op
call costs the machine about as much as spawning it, so 100 of them cannot overlap on two
cores. So the run ends with Interfaces that sleep ``--slow-ms`` in every call: one Component
alone, then N of them in one group.

Every figure is the median of ``--runs`` rounds, each round measuring a figure and its
references one right after the other. The Systems live under ``--dir`` (default: the
temporary directory); the File API trees are real files there, so the filesystem shows in
the result: the "tree floor" column is the time to create and remove that many entries in
the same directory, measured in the same run. On ext4 without a journal, the inode allocator
skips inodes freed in the last few seconds, and checks each candidate's inode table to find
them, so after a run has removed thousands of entries, a `mkdir` there can take a fraction of
a millisecond. In such a case ``--dir /dev/shm`` shows the orchestrator without that cost. The
package's bytecode is compiled first, as pip does when it installs it.

Run: .venv/bin/python bench/deployment_overhead.py [--sizes 1 10 100 500] [--runs 5]
     [--dir DIR] [--slow-ms 100] [--one-group-only] [--payload-mib 8]
(``--sizes 1 100 1000 --one-group-only --slow-ms 0`` checks linearity to 1000 in minutes.)
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orchestrator_core

CALLS_PER_COMPONENT = 10
# What one Component's File API tree costs the filesystem: its directory, tmp/, header/, the
# streams tree (a directory and a FIFO) and files/, plus ten files that are hard links to
# copies shared by the deployment (see docs/exec-driver.md)
TREE_DIRECTORIES = ("", "tmp", "header", "streams", "files")
TREE_LINKS = ("version", "current_artifact_group", "current_artifact_name",
              "current_device_type", "header/artifact_group", "header/artifact_name",
              "header/payload_type", "header/header-info", "header/type-info",
              "header/meta-data")
NOOP = """#!/bin/sh
case "$1" in
  Identity) echo "id=$4" ;;
  Provides) echo "rootfs-image.noop.version=old" ;;
esac
"""
SLOW = """#!/bin/sh
sleep {seconds}
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


def interface_floor(count: int, base: Path) -> float:
    """The same number of calls of the no-op Interface itself, one after another."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        noop = Path(tmp) / "noop"
        noop.write_text(NOOP)
        noop.chmod(0o755)
        return spawn_floor(count, [str(noop), "Cleanup", tmp, "noop0", "c0"])


def tree_floor(components: int, base: Path) -> float:
    """Make and remove the File API trees of ``components`` Components under ``base``, one
    after another, with nothing else: what the filesystem costs there."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        start = time.perf_counter()
        shared = Path(tmp) / "shared"
        shared.write_bytes(b"x")
        for index in range(components):
            directory = Path(tmp) / str(index)
            for name in TREE_DIRECTORIES:
                (directory / name).mkdir()
            os.mkfifo(directory / "stream-next")
            for name in TREE_LINKS:
                os.link(shared, directory / name)
        shutil.rmtree(Path(tmp))
        Path(tmp).mkdir()
        return time.perf_counter() - start


def make_system(
    root: Path, n: int, groups: int, interface: str = NOOP, payload_mib: int = 0
) -> tuple[dict[str, str], Path]:
    interfaces = root / "share" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    for directory in ("etc", "lib", "artifacts"):
        (root / directory).mkdir()
    noop = interfaces / "noop"
    noop.write_text(interface)
    noop.chmod(0o755)
    types = [f"noop{g}" for g in range(groups)]
    argv = ["mender-artifact", "write", "module-image", "-T", "noop", "-n", "noop-v2",
            "-o", str(root / "artifacts" / "noop-v2.mender"),
            "--provides", "rootfs-image.noop.version:noop-v2"]
    for component_type in types:
        argv += ["-t", component_type]
    if payload_mib:  # one file, which the no-op Interface leaves to files/
        payload = root / "firmware.bin"
        payload.write_bytes(os.urandom(payload_mib << 20))
        argv += ["-f", str(payload), "--compression", "none"]
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


def deployment_time(
    n: int, groups: int, base: Path, interface: str = NOOP, payload_mib: int = 0
) -> float:
    cli = str(Path(sys.executable).parent / "mender-orchestrator")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        env, manifest = make_system(Path(tmp), n, groups, interface, payload_mib)
        start = time.perf_counter()
        subprocess.run([cli, "--log-level", "error", "install", str(manifest)], env=env,
                       check=True)
        return time.perf_counter() - start


def children_cpu() -> float:
    """User + system CPU seconds of every child process reaped so far (with theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rounds(
    runs: int, measures: dict[str, Callable[[], float]], cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Each measure once per round, one after the other, for ``runs`` rounds: a figure and
    its reference are then taken within seconds of each other, which matters on a machine
    whose speed drifts (a shared VM). ``cpu``, when given, gets the CPU time of the child
    processes of each measure (the orchestrator and its Interfaces; the Interfaces alone)."""
    taken: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(runs):
        for name, measure in measures.items():
            before = children_cpu()
            taken[name].append(measure())
            if cpu is not None:
                cpu.setdefault(name, []).append(children_cpu() - before)
    return taken


def print_cpu(n: int, cpu: dict[str, list[float]]) -> None:
    """Where the CPU of the one-group deployment went: a no-op Interface costs the machine
    about as much as the orchestrator's work around the call, and two cores bound the wall
    clock from below at (both) / 2."""
    median = statistics.median
    total, interfaces = median(cpu["one"]), median(cpu["by_hand"])
    ours = total - interfaces
    calls = n * CALLS_PER_COMPONENT
    cores = os.cpu_count() or 1
    print(f"  CPU of the one-group deployment of {n}: {total:.2f} s, of which the Interfaces "
          f"(as run by hand) {interfaces:.2f} s and the orchestrator {ours:.2f} s "
          f"({ours / calls * 1000:.2f} ms per Interface call, start-up included); on {cores} "
          f"cores the wall clock cannot go under {total / cores:.2f} s")


def print_fit(one_group: dict[int, float]) -> None:
    """Least squares of the one-group times: fixed cost + cost per Component, and how far each
    size is from the line (linear: every size close to it)."""
    if len(one_group) < 2:
        return
    sizes = list(one_group)
    mean_n = statistics.fmean(sizes)
    mean_t = statistics.fmean(one_group.values())
    slope = (sum((n - mean_n) * (t - mean_t) for n, t in one_group.items())
             / sum((n - mean_n) ** 2 for n in sizes))
    fixed = mean_t - slope * mean_n
    print(f"fit of the one-group times: {fixed:.2f} s + {slope * 1000:.2f} ms per Component; "
          + ", ".join(f"N={n}: {t / (fixed + slope * n):.2f}x the fit"
                      for n, t in one_group.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--runs", type=int, default=5, help="rounds; medians are printed")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the Systems are made (default: the temporary directory)")
    parser.add_argument("--slow-ms", type=int, default=100,
                        help="how long each call of the slow Interface takes (0: skip)")
    parser.add_argument("--payload-mib", type=int, default=0,
                        help="give the Artifact one payload file of this size, which every "
                             "Component takes from files/ (0: an empty payload)")
    parser.add_argument("--one-group-only", action="store_true",
                        help="skip the deployments spread over many groups (long at large N)")
    args = parser.parse_args()
    compileall.compile_dir(Path(orchestrator_core.__file__).parent, quiet=1)
    median = statistics.median
    print(f"Systems under {args.dir}; medians of {args.runs} rounds (a ratio is the median of "
          f"each round's ratio); payload {args.payload_mib} MiB; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'N':>5} {'calls':>6} {'spawn floor':>12} {'Interface':>10} {'tree floor':>11} "
          f"{'one group':>10} {'ratio':>6} {'overhead':>9} {'groups':>7} {'N groups':>9} "
          f"{'ratio':>6}")
    one_group: dict[int, float] = {}
    cpu_by_size: dict[int, dict[str, list[float]]] = {}
    for n in args.sizes:
        calls = n * CALLS_PER_COMPONENT
        groups = min(n, 100)
        measures = {
            "floor": partial(spawn_floor, calls),
            "by_hand": partial(interface_floor, calls, args.dir),
            "tree": partial(tree_floor, n, args.dir),
            "one": partial(deployment_time, n, 1, args.dir, NOOP, args.payload_mib),
        }
        if not args.one_group_only:
            measures["many"] = partial(deployment_time, n, groups, args.dir, NOOP,
                                       args.payload_mib)
        cpu: dict[str, list[float]] = {}
        taken = rounds(args.runs, measures, cpu)
        cpu_by_size[n] = cpu
        floors = taken["floor"]
        one_ratio = median(one / floor for one, floor in zip(taken["one"], floors, strict=True))
        one_group[n] = median(taken["one"])
        spread = "(skipped)"
        if "many" in taken:
            many_ratio = median(m / floor for m, floor in zip(taken["many"], floors, strict=True))
            spread = f"{groups:>7} {median(taken['many']):>8.2f}s {many_ratio:>5.2f}x"
        print(f"{n:>5} {calls:>6} {median(floors):>11.2f}s {median(taken['by_hand']):>9.2f}s "
              f"{median(taken['tree']):>10.2f}s {median(taken['one']):>9.2f}s "
              f"{one_ratio:>5.2f}x {one_ratio - 1:>8.2f}x {spread}")
    print("spawn floor: /bin/true run `calls` times in a row; Interface: the no-op Interface "
          "itself run as often; tree floor: creating and removing the File API entries of N "
          "Components in the same directory; ratio: deployment / spawn floor; overhead: "
          "(deployment - spawn floor) / spawn floor")

    print("CPU (medians):")
    for n, cpu in cpu_by_size.items():
        print_cpu(n, cpu)
    print_fit(one_group)
    if args.slow_ms <= 0:
        return
    slow = SLOW.format(seconds=args.slow_ms / 1000)
    print(f"\nInterfaces taking {args.slow_ms} ms per call ({CALLS_PER_COMPONENT} calls "
          f"per Component), one group of N next to one Component alone:")
    for n in [size for size in args.sizes if size > 1]:
        taken = rounds(args.runs, {
            "alone": partial(deployment_time, 1, 1, args.dir, slow),
            "together": partial(deployment_time, n, 1, args.dir, slow),
        })
        ratio = median(t / a for t, a in zip(taken["together"], taken["alone"], strict=True))
        print(f"  {n:>4} Components: {median(taken['together']):.2f}s, alone "
              f"{median(taken['alone']):.2f}s ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
