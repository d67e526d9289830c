"""Writing an Artifact: our pure-Python writer next to Debian's Go ``mender-artifact``.

For a payload of SIZE MiB (default 64, incompressible bytes, the worst case for time) it
times ``write_artifact`` and ``mender-artifact write module-image`` with the same arguments,
for each compression both support (none, gzip, xz/lzma), and reports our process's peak
memory growth, which must not depend on the payload size (the data section is streamed to a
temporary file, never held in memory). Reference: the Go tool in the same run.

Run: .venv/bin/python bench/artifact_write.py [--size-mib 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator_core.artifact.writer import ArtifactSpec, software_version, write_artifact


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args()
    go_tool = shutil.which("mender-artifact")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        payload = root / "firmware.bin"
        with payload.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1 << 20))
        key, value, clears = software_version("bench", "bench-v1")
        spec = ArtifactSpec("bench-v1", "bench", ("bench-device",), (payload,), {key: value},
                            clears_provides=(clears,))
        print(f"payload: {args.size_mib} MiB of random bytes")
        print(f"{'compression':<12} {'ours (s)':>9} {'mender-artifact (s)':>20} {'ratio':>6}")
        baseline = peak_rss_mib()
        for ours, theirs in (("none", "none"), ("gzip", "gzip"), ("xz", "lzma")):
            started = time.perf_counter()
            write_artifact(spec, root / f"ours-{ours}.mender", compression=ours)
            our_seconds = time.perf_counter() - started
            go_seconds = float("nan")
            if go_tool:
                started = time.perf_counter()
                subprocess.run(
                    [go_tool, "write", "module-image", "-T", "bench", "-t", "bench-device",
                     "-n", "bench-v1", "-f", str(payload), "--compression", theirs,
                     "-o", str(root / f"go-{ours}.mender")],
                    check=True, capture_output=True,
                )
                go_seconds = time.perf_counter() - started
            print(f"{ours:<12} {our_seconds:>9.2f} {go_seconds:>20.2f} "
                  f"{our_seconds / go_seconds:>6.2f}")
            (root / f"ours-{ours}.mender").unlink()
        growth = peak_rss_mib() - baseline
        print(f"peak memory growth while writing: {growth:.1f} MiB "
              f"(payload {args.size_mib} MiB; must stay far below it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
