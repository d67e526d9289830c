"""Reading an Artifact's payload, next to the hashing floor measured in the same run.

A module-image Artifact with one payload file (base64 text of random bytes, so gzip has
something to do) is written by Debian's ``mender-artifact`` (``none`` and ``gzip``), then:
  openssl dgst -sha256 payload     the floor: hashing every payload byte once
  reader                           ArtifactPayload.files(): tar, decompression, sha256 check
Each is run three times and the best time kept; the reader runs in a process of its own so
its peak RSS is its alone. Targets: the reader at least 85% of openssl's throughput for
``none``; peak RSS under 64 MiB whatever the size.

Run: .venv/bin/python bench/artifact_read.py [--size-mib 1024] [--compression none gzip]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 3


def read_payload(artifact: Path) -> None:
    """The measured part (in a child process): every payload byte read and verified."""
    from orchestrator_core.artifact import ArtifactPayload, read_header

    with artifact.open("rb") as source:
        digest = read_header(source, source_name=str(artifact)).manifest_digest
    buffer = bytearray(1 << 20)
    started = time.perf_counter()
    total = 0
    with artifact.open("rb") as source:
        feed = ArtifactPayload(
            source, source_name=str(artifact), manifest_digest=digest, verify_keys=()
        )
        for payload in feed.files():
            while count := payload.readinto(buffer):
                total += count
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{elapsed} {peak_mib} {total}")


def make_payload(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            chunk = base64.b64encode(os.urandom(3 << 18))[:left]  # 1 MiB of text
            out.write(chunk)
            left -= len(chunk)


def best_of(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def measure_reader(artifact: Path) -> tuple[float, float]:
    results = []
    for _ in range(RUNS):
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(artifact)],
            check=True,
            capture_output=True,
            text=True,
        )
        elapsed, peak, _ = done.stdout.split()
        results.append((float(elapsed), float(peak)))
    return min(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="payload size (MiB)")
    parser.add_argument(
        "--compression", nargs="+", default=["none", "gzip"], choices=["none", "gzip", "lzma"]
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        read_payload(args.child)
        return
    tool = shutil.which("mender-artifact")
    if tool is None:
        sys.exit("needs Debian's mender-artifact (apt-get install mender-artifact)")
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="artifact-bench-") as work:
        root = Path(work)
        payload = root / "payload.bin"
        make_payload(payload, size)
        floor = best_of(["openssl", "dgst", "-sha256", str(payload)])
        mib = size / (1 << 20)
        print(f"payload: {args.size_mib} MiB; best of {RUNS} runs")
        print(f"  openssl dgst -sha256 payload   {floor:7.2f} s  {mib / floor:8.1f} MiB/s")
        for compression in args.compression:
            artifact = root / f"{compression}.mender"
            subprocess.run(
                [tool, "write", "module-image", "-n", "bench", "-t", "bench", "-T", "bench",
                 "-f", str(payload), "-o", str(artifact), "--compression", compression],
                check=True, capture_output=True,
            )  # fmt: skip
            elapsed, peak = measure_reader(artifact)
            share = floor / elapsed * 100
            print(
                f"  reader, {compression:<5} ({artifact.stat().st_size >> 20} MiB .mender) "
                f"{elapsed:7.2f} s  {mib / elapsed:8.1f} MiB/s  {share:5.1f}% of openssl  "
                f"peak RSS {peak:.1f} MiB"
            )


if __name__ == "__main__":
    main()
