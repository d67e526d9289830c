"""Start-up cost of the CLI, next to the floors measured in the same run.

The Mender inventory script runs ``show-inventory`` on every poll, so start-up matters.
Prints, in milliseconds (median of N runs):
  python -c pass                       the interpreter's own floor
  mender-orchestrator --version        target: within 5x of python -c pass
  the 3 Interfaces' Identity+Provides  run by hand, sequentially (what show-provides must do)
  mender-orchestrator show-provides    target: its time minus the Interfaces' within 10x

Run: .venv/bin/python bench/cli_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERFACE = """#!/bin/sh
case "$1" in
  Identity) echo "id=unit-$4" ;;
  Provides) echo "rootfs-image.$(basename "$0").version=v1" ;;
esac
"""


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    cli = str(bin_dir / "mender-orchestrator")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        interfaces = root / "share" / "interfaces" / "v1"
        interfaces.mkdir(parents=True)
        (root / "lib").mkdir()
        (root / "etc").mkdir()
        units = []
        for name in ("tcu", "brakes", "seats"):
            path = interfaces / name
            path.write_text(INTERFACE)
            path.chmod(0o755)
            units.append(path)
        (root / "lib" / "topology.yaml").write_text(
            "api_version: mender/v1\nkind: topology\nsystem_type: bench\ncomponents:\n"
            + "".join(f"  - component_type: {u.name}\n    interface_args: ['1']\n" for u in units)
        )
        env = dict(os.environ)
        env.update(
            MENDER_ORCHESTRATOR_CONF_DIR=str(root / "etc"),
            MENDER_ORCHESTRATOR_DATA_DIR=str(root / "share"),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(root / "lib"),
        )
        python_pass = timed([sys.executable, "-c", "pass"], env, args.runs)
        version = timed([cli, "--version"], env, args.runs)

        def by_hand() -> None:
            for unit in units:
                for query in ("Identity", "Provides"):
                    subprocess.run([str(unit), query, tmp, unit.name, "1"], check=True,
                                   stdout=subprocess.DEVNULL)

        samples = []
        for _ in range(args.runs):
            start = time.perf_counter()
            by_hand()
            samples.append(time.perf_counter() - start)
        interfaces_ms = statistics.median(samples) * 1000
        show = timed([cli, "show-provides"], env, args.runs)

    overhead = show - interfaces_ms
    print(f"python -c pass                      {python_pass:8.1f} ms")
    print(f"mender-orchestrator --version       {version:8.1f} ms  "
          f"({version / python_pass:.2f}x python -c pass; target <= 5x)")
    print(f"Interfaces by hand (6 calls)        {interfaces_ms:8.1f} ms")
    print(f"mender-orchestrator show-provides   {show:8.1f} ms  "
          f"(overhead {overhead:.1f} ms = {overhead / python_pass:.2f}x python -c pass; "
          f"target <= 10x)")


if __name__ == "__main__":
    main()
