#!/usr/bin/env python3
"""Run the tests with every runtime dependency at its floor (a `--resolution lowest`-style run).

    python support/lowest_versions.py [--venv DIR] [--print-constraints] [PYTEST_ARG...]

The floors are read from the `dependencies` of every distribution in this repository
(pyproject.toml and drivers/*/pyproject.toml), never from a list kept here, so a dependency
added to a pyproject file is pinned to its floor on the next run. A fresh venv (default
.venv/lowest) gets the distributions installed editable with `pip install -c` of a constraints
file `NAME==FLOOR`; the test tools (the `test` extras) resolve as usual. The installed versions
are checked against the floors, then the tests that exercise each dependency run (or the
PYTEST_ARGs given). Exit status: pytest's, or 2 when a floor is missing or not what got installed.
Why each floor is what it is: docs/packaging.md, "Dependency floors".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# What the run exercises: click (the CLI, the global options), pluggy and stevedore (the
# engine, both driver kinds, the driver API), PyYAML (Topology and Manifest), cryptography
# (signed Artifacts read and written), zstandard (zstd payloads), requests and urllib3 (HTTP
# and HTTPS Artifact sources); each driver distribution's own tests are added below.
CORE_TESTS = [
    "tests/test_cli.py",
    "tests/test_global_options.py",
    "tests/test_engine.py",
    "tests/test_exec_driver.py",
    "tests/test_inprocess_drivers.py",
    "tests/test_driver_api.py",
    "tests/test_models.py",
    "tests/test_writer.py",
    "tests/artifact/test_artifact_reader.py",
    "tests/artifact/test_artifact_payload.py",
    "tests/artifact/test_artifact_sources.py",
]

# Left out, to keep the run short: they test no dependency (the journal's crash safety at each
# write, a wheel's contents, mypy on a driver)
NOT_DEPENDENCY_TESTS = (
    "not kill_9_at_every_journal_write and not core_wheel_ships_py_typed"
    " and not mypy_checks_a_driver"
)


def distribution_dirs() -> list[Path]:
    return [ROOT, *sorted(p.parent for p in ROOT.glob("drivers/*/pyproject.toml"))]


def read_project(directory: Path) -> dict[str, object]:
    with (directory / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def floor_of(req: Requirement, source: Path) -> str:
    floors = [s.version for s in req.specifier if s.operator in (">=", "~=", "==")]
    if len(floors) != 1:
        raise SystemExit(f"lowest_versions: {source}: {req}: expected one '>=' floor")
    return floors[0]


def collect_floors() -> dict[str, str]:
    """NAME -> floor over every distribution here (the highest, where two share a dependency)."""
    dirs = distribution_dirs()
    ours = {str(read_project(d)["name"]).lower() for d in dirs}
    floors: dict[str, str] = {}
    for directory in dirs:
        source = directory.relative_to(ROOT) / "pyproject.toml"
        for line in read_project(directory).get("dependencies", []):  # type: ignore[attr-defined]
            req = Requirement(line)
            name = req.name.lower()
            if name in ours or (req.marker is not None and not req.marker.evaluate()):
                continue
            version = floor_of(req, source)
            if name not in floors or Version(version) > Version(floors[name]):
                floors[name] = version
    return dict(sorted(floors.items()))


def run(argv: list[str], **kwargs: object) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def build_venv(venv: Path, floors: dict[str, str]) -> Path:
    constraints = venv.parent / f"{venv.name}-constraints.txt"
    run([sys.executable, "-m", "venv", "--clear", str(venv)])
    constraints.write_text("".join(f"{name}=={v}\n" for name, v in floors.items()))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-c", str(constraints)]
    editables = [arg for d in distribution_dirs() for arg in ("-e", f"{d}[test]")]
    print("+", " ".join([*pip, *editables]), flush=True)
    done = subprocess.run([*pip, *editables], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # a dependency of a dependency that needs more than a floor: pip names both
        said = (done.stdout + done.stderr).splitlines()
        print("\n".join(line for line in said if "depends on" in line or "ERROR" in line
                        or "requested" in line), file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, done.args)
    return venv / "bin" / "python"


def installed_versions(python: Path, names: list[str]) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run([str(python), "-c", script, *names], check=True,
                         capture_output=True, text=True).stdout
    versions: dict[str, str] = json.loads(out)
    return versions


def check_installed(python: Path, floors: dict[str, str]) -> bool:
    versions = installed_versions(python, list(floors))
    print(f"{'dependency':<20} {'floor':<10} installed")
    wrong = []
    for name, floor in floors.items():
        print(f"{name:<20} {floor:<10} {versions[name]}")
        # "2.0" is the floor of a requirement met by the release "2.0" or "2.0.0"
        if Requirement(f"{name}=={floor}").specifier.contains(versions[name]) is False:
            wrong.append(name)
    if wrong:
        print(f"lowest_versions: not at the floor: {', '.join(wrong)}", file=sys.stderr)
    return not wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv" / "lowest")
    parser.add_argument("--print-constraints", action="store_true",
                        help="print NAME==FLOOR for every dependency and stop")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    floors = collect_floors()
    if args.print_constraints:
        print("".join(f"{name}=={v}\n" for name, v in floors.items()), end="")
        return 0
    started = time.monotonic()
    try:
        python = build_venv(args.venv.resolve(), floors)
    except subprocess.CalledProcessError as exc:
        # pip has said why (a conflict names the requirement that wants more than a floor)
        print(f"lowest_versions: python {' '.join(exc.cmd[1:4])} failed with exit status "
              f"{exc.returncode}", file=sys.stderr)
        return 2
    installed = time.monotonic()
    if not check_installed(python, floors):
        return 2
    tests = args.pytest_args or [
        *CORE_TESTS,
        *(str(d / "tests") for d in distribution_dirs()[1:] if (d / "tests").is_dir()),
        "-k", NOT_DEPENDENCY_TESTS,
    ]
    rc = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests],
                        cwd=ROOT).returncode
    done = time.monotonic()
    print(f"lowest_versions: venv {installed - started:.0f} s, tests {done - installed:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
