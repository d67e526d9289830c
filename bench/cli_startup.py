"""Start-up and fixed cost of the CLI, next to the floors measured in the same run.

The Mender inventory script runs ``show-inventory`` on every poll, and every deployment state
the Mender client runs starts a process, so the fixed cost matters. Prints, in milliseconds,
the median of ``--runs`` rounds; each round runs every command once, one after the other, so a
figure and its references are taken seconds apart on a machine whose speed drifts:
  /bin/true                            the cost of any process
  python -c pass                       the interpreter's own floor (same Python, same site)
  mender-orchestrator --version        target: under 2x python -c pass
  Interfaces by hand                   the 3 Interfaces' Identity+Provides, one after another
  show-provides / show-inventory       3 Components; "own" is minus the Interfaces by hand
  artifact inspect                     a tiny (4 KiB, uncompressed payload) Artifact
  install                              one Component, a 1 MiB Artifact streamed to a file by
                                       a shell Interface (10 calls), on a device that already
                                       has its journal; target: under 120 ms
  install, a new Manifest              the same, with a Manifest never seen before (a new
                                       name each run): PyYAML is loaded to parse it
Both Systems have a journal, as a device has after its first deployment: the Topology (and a
Manifest installed before) then come from the parsed-YAML cache in the datastore, without
loading PyYAML.
The load average is printed before and after: figures taken above about 1 are noisy. The
package's bytecode is compiled first, as pip does when it installs it (an editable install run
with PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run).

Run: .venv/bin/python bench/cli_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orchestrator_core
from orchestrator_core.journal import Journal

QUERIES = """#!/bin/sh
case "$1" in
  Identity) echo "id=unit-$4" ;;
  Provides) echo "rootfs-image.$(basename "$0").version=v1" ;;
esac
"""
# reads every stream into tmp/, like an Update Module writing an image
STREAMING = """#!/bin/sh
case "$1" in
  Identity) echo "id=unit-$4" ;;
  Provides) echo "rootfs-image.$(basename "$0").version=v1" ;;
  Download)
    while line=$(cat stream-next) && [ -n "$line" ]; do cat "$line" > tmp/image; done ;;
esac
"""


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_system(root: Path, interface: str, names: list[str]) -> dict[str, str]:
    interfaces = root / "share" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    for directory in ("lib", "etc", "artifacts"):
        (root / directory).mkdir()
    for name in names:
        path = interfaces / name
        path.write_text(interface)
        path.chmod(0o755)
    (root / "lib" / "topology.yaml").write_text(
        "api_version: mender/v1\nkind: topology\nsystem_type: bench\ncomponents:\n"
        + "".join(f"  - component_type: {n}\n    interface: {n}\n    interface_args: ['1']\n"
                  for n in names))
    (root / "etc" / "mender-orchestrator.conf").write_text(
        '{"ArtifactSources": [{"Type": "directory", "Path": "%s"}]}' % (root / "artifacts"))
    env = dict(os.environ)
    env.update(
        MENDER_ORCHESTRATOR_CONF_DIR=str(root / "etc"),
        MENDER_ORCHESTRATOR_DATA_DIR=str(root / "share"),
        MENDER_ORCHESTRATOR_DATASTORE_DIR=str(root / "lib"),
    )
    return env


def write_artifact(output: Path, size: int, device_type: str) -> None:
    payload = output.with_suffix(".bin")
    payload.write_bytes(os.urandom(size))
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", device_type, "-t", device_type,
         "-n", output.stem, "--provides", f"rootfs-image.{device_type}.version:{output.stem}",
         "--compression", "none", "-f", str(payload), "-o", str(output)],
        check=True, capture_output=True)
    payload.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    compileall.compile_dir(Path(orchestrator_core.__file__).parent, quiet=1)
    cli = str(Path(sys.executable).parent / "mender-orchestrator")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        units = ["tcu", "brakes", "seats"]
        queries_env = make_system(root / "queries", QUERIES, units)
        Journal(root / "queries" / "lib" / "journal.sqlite").close()  # as after a deployment
        interfaces = root / "queries" / "share" / "interfaces" / "v1"
        tiny = root / "tiny.mender"
        write_artifact(tiny, 4096, "tiny")

        install_env = make_system(root / "install", STREAMING, ["unit"])
        install_root = root / "install"
        write_artifact(install_root / "artifacts" / "unit-v2.mender", 1 << 20, "unit")
        manifest = install_root / "manifest.yaml"
        manifest.write_text(
            "api_version: mender/v1\nkind: manifest\nname: bench-v2\n"
            "system_types_compatible: [bench]\ncomponent_types:\n"
            "  unit: {artifact_name: unit-v2, update_strategy: {order: 1}}\n")

        def by_hand() -> float:
            start = time.perf_counter()
            for unit in units:
                for query in ("Identity", "Provides"):
                    subprocess.run([str(interfaces / unit), query, tmp, unit, "1"], check=True,
                                   stdout=subprocess.DEVNULL)
            return time.perf_counter() - start

        def install() -> float:
            # the Interface always reports v1: every run installs v2 again, and the journal
            # (made by the first run, before the rounds) grows by one deployment each time
            return run([cli, "--log-level", "error", "install", str(manifest)], install_env)

        fresh = install_root / "fresh.yaml"
        fresh_runs = iter(range(1 << 30))

        def install_fresh() -> float:
            fresh.write_text(manifest.read_text().replace(
                "name: bench-v2", f"name: bench-v2-{next(fresh_runs)}"))
            return run([cli, "--log-level", "error", "install", str(fresh)], install_env)

        install()

        measures: dict[str, Callable[[], float]] = {
            "/bin/true": lambda: run(["/bin/true"], queries_env),
            "python -c pass": lambda: run([sys.executable, "-c", "pass"], queries_env),
            "--version": lambda: run([cli, "--version"], queries_env),
            "Interfaces by hand (6 calls)": by_hand,
            "show-provides": lambda: run([cli, "show-provides"], queries_env),
            "show-inventory": lambda: run([cli, "show-inventory"], queries_env),
            "artifact inspect (4 KiB)": lambda: run([cli, "artifact", "inspect", str(tiny)],
                                                    queries_env),
            "install (1 MiB, 1 Component)": install,
            "install, a new Manifest": install_fresh,
        }
        taken: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(args.runs):
            for name, measure in measures.items():
                taken[name].append(measure())

    def ms(name: str) -> float:
        return statistics.median(taken[name]) * 1000

    def ratio(name: str, reference: str) -> float:
        return statistics.median(a / b for a, b in zip(taken[name], taken[reference], strict=True))

    print(f"medians of {args.runs} rounds; load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")
    for name in ("/bin/true", "python -c pass"):
        print(f"{name:<32} {ms(name):8.1f} ms")
    print(f"{'--version':<32} {ms('--version'):8.1f} ms  "
          f"({ratio('--version', 'python -c pass'):.2f}x python -c pass; target < 2x)")
    print(f"{'Interfaces by hand (6 calls)':<32} {ms('Interfaces by hand (6 calls)'):8.1f} ms")
    for name in ("show-provides", "show-inventory"):
        own = ms(name) - ms("Interfaces by hand (6 calls)")
        print(f"{name:<32} {ms(name):8.1f} ms  (own {own:.1f} ms = "
              f"{own / ms('python -c pass'):.2f}x python -c pass)")
    for name in ("artifact inspect (4 KiB)", "install (1 MiB, 1 Component)",
                 "install, a new Manifest"):
        print(f"{name:<32} {ms(name):8.1f} ms  ({ratio(name, 'python -c pass'):.2f}x python -c "
              f"pass)")
    print("install target: under 120 ms")


if __name__ == "__main__":
    main()
