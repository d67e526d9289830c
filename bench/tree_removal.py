"""The end of a deployment: removing N Components' File API directories, three ways side by
side, in rotation, on the file system you name.

Each round makes the trees of N Components as a deployment leaves them (``filetree.prepare``
with the deployment's shared copies, and ``files/`` holding a payload file linked to one
copy), then times ``filetree.remove_all`` with the Components' directories removed:
  one by one     in the calling thread, however long each takes
  in threads     in ``REMOVERS`` threads after the first (what ``remove_all`` did always)
  adaptive       one by one until one takes over ``SLOW_REMOVAL_SECONDS``, then in threads
                 (what ``remove_all`` does)
Prints the median wall clock and CPU time (this process, threads included) of each, and the
load average. Where every removal waits for the disk, threads overlap the waits; where the
disk keeps up, they only cost the interpreter lock's hand-over at each system call. Run it on
the device's own file system (``--dir``) to see which case it is.

Run: .venv/bin/python bench/tree_removal.py [--components 100] [--rounds 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator_core import filetree

WAYS = {"one by one": float("inf"), "in threads": 0.0,
        "adaptive": filetree.SLOW_REMOVAL_SECONDS}


def make_trees(work: Path, components: int) -> None:
    deployment = work / "1"
    shared = filetree.shared_copies(deployment)
    payload = shared / "payload"
    payload.parent.mkdir(parents=True)
    payload.write_bytes(b"firmware" * 512)
    for index in range(components):
        tree = filetree.prepare(
            deployment / "bench" / f"c{index}", component_type="bench",
            provides={"artifact_name": "bench-v1", "rootfs-image.bench.version": "v1"},
            artifact_name="bench-v2", artifact_group=None, payload_type="bench",
            header_info=b"{}", type_info=b"{}", meta_data=b"{}", shared=shared)
        os.link(payload, filetree.files_dir(tree) / "image.bin")


def removal_time(base: Path, components: int, slow_after: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp) / "work"
        make_trees(work, components)
        filetree.SLOW_REMOVAL_SECONDS = slow_after
        cpu, wall = time.process_time(), time.perf_counter()
        problems = filetree.remove_all(work)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if problems:
            raise SystemExit(f"tree_removal: could not remove: {problems[:3]}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    default = filetree.SLOW_REMOVAL_SECONDS
    walls: dict[str, list[float]] = {way: [] for way in WAYS}
    cpus: dict[str, list[float]] = {way: [] for way in WAYS}
    load = os.getloadavg()[0]
    try:
        for round_number in range(args.rounds):
            ways = list(WAYS.items())
            first = round_number % len(ways)  # each way goes first in turn
            for way, slow_after in ways[first:] + ways[:first]:
                wall, cpu = removal_time(args.dir, args.components, slow_after)
                walls[way].append(wall)
                cpus[way].append(cpu)
    finally:
        filetree.SLOW_REMOVAL_SECONDS = default
    print(f"{args.components} Components' directories under {args.dir}, {args.rounds} rounds; "
          f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    for way in WAYS:
        print(f"  {way:<12} {1000 * statistics.median(walls[way]):7.1f} ms, "
              f"CPU {1000 * statistics.median(cpus[way]):7.1f} ms")


if __name__ == "__main__":
    main()
