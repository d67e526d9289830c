"""Streaming a payload to an Interface, next to the floors measured in the same run.

A module-image Artifact (written by Debian's ``mender-artifact``) with one random payload
file is streamed through the real path: the Artifact reader (sha256 of every byte), the
``exec`` driver's streams tree, and an Interface that reads its stream with
``cat >/dev/null``. Prints, in seconds:
  openssl dgst -sha256 payload     floor 1: hashing every byte once
  cat payload | cat >/dev/null     floor 2: moving every byte through one pipe
  streamed to the Interface        target: at most 1.25x the slower floor
and the streaming process's peak RSS (target: under 64 MiB, whatever the size).

Each figure is the median of ``--runs`` runs, the three measured in turn.

Run: .venv/bin/python bench/streaming.py [--size-mib 1024] [--runs 3] [--compression none]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERFACE = """#!/bin/sh
case "$1" in
  Download)
    while line="$(cat stream-next)" && [ -n "$line" ]; do cat "$line" > /dev/null; done ;;
esac
"""


def stream(data_dir: Path, artifact: Path, work: Path) -> None:
    """The measured part, run in a process of its own so its RSS is its alone."""
    from orchestrator_core import drivers
    from orchestrator_core.artifact import ArtifactPayload, read_header
    from orchestrator_core.context import Component

    with artifact.open("rb") as source:
        digest = read_header(source, source_name=str(artifact)).manifest_digest
    driver = drivers.load(Component("bench", "reader"), data_dir)
    started = time.perf_counter()
    with artifact.open("rb") as source:
        feed = ArtifactPayload(
            source, source_name=str(artifact), manifest_digest=digest, verify_keys=()
        )
        ctx = driver.context(
            log=logging.getLogger("bench"), timeout_seconds=3600, work_dir=work, payload=feed
        )
        driver.run_state("download", ctx)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{elapsed} {peak_mib}")


def timed(command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compression", default="none", choices=["none", "gzip", "lzma"])
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch files go")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stream(*(Path(p) for p in args.child))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        payload = root / "payload.bin"
        with payload.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1 << 20))
        artifact = root / "bench.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "--type", "reader",
             "--device-type", "bench", "--artifact-name", "bench-v1",
             "--compression", args.compression, "--file", str(payload),
             "--output-path", str(artifact)],
            check=True, capture_output=True,
        )  # fmt: skip
        interfaces = root / "data" / "interfaces" / "v1"
        interfaces.mkdir(parents=True)
        (interfaces / "reader").write_text(INTERFACE)
        (interfaces / "reader").chmod(0o755)
        work = root / "work"
        work.mkdir(mode=0o700)

        timed(f"cat {artifact} {payload} > /dev/null")  # same page-cache state for all
        samples: dict[str, list[float]] = {"hashing": [], "piping": [], "streaming": []}
        peak = 0.0
        for _ in range(args.runs):
            samples["hashing"].append(timed(f"openssl dgst -sha256 {payload}"))
            samples["piping"].append(timed(f"cat {payload} | cat > /dev/null"))
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(root / "data"), str(artifact), str(work)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            elapsed, child_peak = (float(v) for v in child.stdout.split())
            samples["streaming"].append(elapsed)
            peak = max(peak, child_peak)
        hashing, piping, elapsed = (statistics.median(v) for v in samples.values())

    floor = max(hashing, piping)
    print(
        f"payload: {args.size_mib} MiB, Artifact compression {args.compression}, "
        f"median of {args.runs} runs"
    )
    print(f"  openssl dgst -sha256 payload   {hashing:7.2f} s")
    print(f"  cat payload | cat >/dev/null   {piping:7.2f} s")
    print(f"  streamed to the Interface      {elapsed:7.2f} s   "
          f"{elapsed / floor:.2f}x the slower floor (target <= 1.25x)")  # fmt: skip
    print(f"  peak RSS of the streaming process {peak:.0f} MiB (target < 64 MiB)")


if __name__ == "__main__":
    main()
