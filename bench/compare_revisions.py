"""Two revisions of the orchestrator side by side: the same deployment, alternating runs.

Each revision is checked out in a temporary git worktree and imported from there (the
worktree comes first on PYTHONPATH; the venv's other packages are shared). Every round
measures the spawn floor, then revision A and revision B (B first in every other round), on
fresh copies of the same System of N no-op Components in one group, or spread over
``--groups`` order groups (as in ``deployment_overhead.py``); medians are printed, the ratios
being medians of each round's ratio, for the wall clock and for the CPU time of the
deployment (the orchestrator's and its Interfaces'). On a machine whose speed drifts, this is
the way to tell whether a change made a deployment faster.

Run: .venv/bin/python bench/compare_revisions.py REV_A REV_B [--components 100] [--rounds 8]
     [--groups 1] [--dir DIR]
"""

from __future__ import annotations

import argparse
import compileall
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deployment_overhead import CALLS_PER_COMPONENT, make_system, spawn_floor

REPO = Path(__file__).resolve().parents[1]


def deployment_time(
    source: Path, components: int, groups: int, base: Path
) -> tuple[float, float]:
    """Wall clock and CPU time (the orchestrator's and its Interfaces') of one deployment."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        env, manifest = make_system(Path(tmp), components, groups)
        env["PYTHONPATH"] = str(source)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator_core", "--log-level", "error",
                        "install", str(manifest)], env=env, cwd="/", check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs=2, metavar="REV")
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--groups", type=int, default=1,
                        help="order groups the Components are spread over, each a component "
                             "type of its own (at most 100)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as checkouts:
        sources = []
        for index, revision in enumerate(args.revisions):
            source = Path(checkouts) / str(index)
            added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach",
                                    str(source), revision], capture_output=True, text=True,
                                   check=False)
            if added.returncode != 0:
                for made in sources:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(made)], check=False)
                sys.exit(f"compare_revisions: cannot check out {revision!r}: "
                         f"{added.stderr.strip()}")
            compileall.compile_dir(source / "orchestrator_core", quiet=1)
            sources.append(source)
        try:
            floors: list[float] = []
            times: list[list[float]] = [[], []]
            cpus: list[list[float]] = [[], []]
            for round_number in range(args.rounds):
                floors.append(spawn_floor(args.components * CALLS_PER_COMPONENT))
                order = (0, 1) if round_number % 2 == 0 else (1, 0)  # neither always second
                for index in order:
                    wall, cpu = deployment_time(
                        sources[index], args.components, args.groups, args.dir)
                    times[index].append(wall)
                    cpus[index].append(cpu)
        finally:
            for source in sources:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(source)], check=False)
            shutil.rmtree(checkouts, ignore_errors=True)
    median = statistics.median
    spread = "one group" if args.groups == 1 else f"{args.groups} groups"
    print(f"{args.components} Components in {spread} under {args.dir}, {args.rounds} rounds; "
          f"spawn floor {median(floors):.3f}s")
    for revision, taken, cpu in zip(args.revisions, times, cpus, strict=True):
        ratio = median(t / f for t, f in zip(taken, floors, strict=True))
        print(f"  {revision:>12}: {median(taken):.3f}s ({ratio:.2f}x the spawn floor), "
              f"CPU {median(cpu):.3f}s")
    wall_ratio = median(b / a for a, b in zip(*times, strict=True))
    cpu_ratio = median(b / a for a, b in zip(*cpus, strict=True))
    print(f"  {args.revisions[1]} against {args.revisions[0]}, median of the rounds' ratios: "
          f"wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
