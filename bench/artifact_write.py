"""Writing an Artifact: our pure-Python writer next to Debian's Go ``mender-artifact``.

For two payloads of SIZE MiB (default 32): random bytes (incompressible, the worst case for
time) and firmware-like bytes (machine code, see payloads.py), it times ``write_artifact`` and
``mender-artifact write module-image`` with the same arguments, for each compression both
support (none, gzip, xz/lzma). Each of our writes runs in a fresh process, which reports its
own peak memory: it must not depend on the payload size (the data section is streamed to a
temporary file, never held in memory; xz's compressor, ``xz -6`` with a 1 MiB dictionary,
about 18 MiB). Reference: the Go tool, in the same run.

Run: .venv/bin/python bench/artifact_write.py [--size-mib 32]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from payloads import write_firmware_like, write_random

from orchestrator_core.artifact.writer import ArtifactSpec, software_version, write_artifact

COMPRESSIONS = (("none", "none"), ("gzip", "gzip"), ("xz", "lzma"))


def write_once(compression: str, payload: Path, output: Path) -> None:
    """In a child process: write one Artifact, print seconds and peak RSS in MiB."""
    key, value, clears = software_version("bench", "bench-v1")
    spec = ArtifactSpec("bench-v1", "bench", ("bench-device",), (payload,), {key: value},
                        clears_provides=(clears,))
    started = time.perf_counter()
    write_artifact(spec, output, compression=compression)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{elapsed} {peak}")


def make_payloads(root: Path, size_mib: int) -> dict[str, Path]:
    random_payload, firmware = root / "random.bin", root / "firmware.bin"
    write_random(random_payload, size_mib << 20)
    write_firmware_like(firmware, size_mib << 20)
    return {"random": random_payload, "firmware-like": firmware}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        write_once(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=32)
    args = parser.parse_args()
    go_tool = shutil.which("mender-artifact")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        print(f"payload size: {args.size_mib} MiB; Go tool: {go_tool or 'not installed'}")
        print(f"{'payload':<14} {'compression':<12} {'ours (s)':>9} {'Go (s)':>8} "
              f"{'ours/Go':>8} {'our peak RSS (MiB)':>19}")
        for kind, payload in make_payloads(root, args.size_mib).items():
            for ours, theirs in COMPRESSIONS:
                output = root / "ours.mender"
                measured = subprocess.run(
                    [sys.executable, __file__, "--one", ours, str(payload), str(output)],
                    check=True, capture_output=True, text=True,
                ).stdout.split()
                our_seconds, peak = float(measured[0]), float(measured[1])
                go_seconds = float("nan")
                if go_tool:
                    started = time.perf_counter()
                    subprocess.run(
                        [go_tool, "write", "module-image", "-T", "bench", "-t", "bench-device",
                         "-n", "bench-v1", "-f", str(payload), "--compression", theirs,
                         "-o", str(root / "go.mender")],
                        check=True, capture_output=True,
                    )
                    go_seconds = time.perf_counter() - started
                print(f"{kind:<14} {ours:<12} {our_seconds:>9.2f} {go_seconds:>8.2f} "
                      f"{our_seconds / go_seconds:>8.2f} {peak:>19.1f}")
                output.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
