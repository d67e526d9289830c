"""Start-up discipline: what the short commands import, not how long they take.

``--version`` is how packages and scripts probe an installation, and the Mender inventory
script runs ``show-inventory`` on every poll: each loads only what it uses. The modules a
command imports are read from ``python -X importtime`` (every import, once, on stderr), so
these tests do not depend on the machine's speed.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest
from systems import CLI, REPO, SIMULATED_UNIT, System

import orchestrator_core

# loaded only by deployments, Artifact writing, signature checks or in-process drivers
DEPLOYMENT_ONLY = {
    "cryptography",
    "sqlite3",
    "stevedore",
    "requests",
    "urllib3",
    "zstandard",
    "importlib.metadata",
    "orchestrator_core.engine",
    "orchestrator_core.journal",
    "orchestrator_core.planner",
    "orchestrator_core.sequence",
    "orchestrator_core.streams",
    "orchestrator_core.artifact",
    "orchestrator_core.artifact.writer",
}
TOPOLOGY = (
    "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
    "  - component_type: a\n    interface: unit\n    interface_args: ['1', 'No', 'Yes']\n"
)
MANIFEST = (
    "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
    "component_types:\n  a: {artifact_name: unit-v2, update_strategy: {order: 1}}\n"
)


def imported(args: list[str], env: Mapping[str, str] | None = None) -> tuple[set[str], str]:
    """The modules ``mender-orchestrator ARGS`` imports, and its stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *CLI[1:], *args],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    names.discard("imported package")  # the header line
    return names, result.stdout


def loaded(names: set[str], modules: set[str]) -> set[str]:
    """Which of ``modules`` (or their submodules) are in ``names``."""
    return {m for m in modules for n in names if n == m or n.startswith(m + ".")}


@pytest.fixture
def unit(system: System, tmp_path: Path) -> tuple[System, Path]:
    """One simulated unit and an unsigned Artifact moving it to v2, in a directory source."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    payload = tmp_path / "firmware.bin"
    payload.write_bytes(b"firmware" * 512)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "unit", "-t", "a", "-n", "unit-v2",
         "--provides", "rootfs-image.unit.version:unit-v2", "-f", str(payload), "-o",
         str(artifacts / "unit-v2.mender")],
        check=True, capture_output=True,
    )
    system.add_interface("unit", SIMULATED_UNIT)
    system.write_topology(TOPOLOGY)
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    return system, artifacts / "unit-v2.mender"


def test_the_version_constant_is_the_distributions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert orchestrator_core.__version__ == importlib.metadata.version(
        orchestrator_core.DISTRIBUTION)


def test_version_loads_no_command_line() -> None:
    names, stdout = imported(["--version"])
    assert stdout == f"mender-orchestrator, version {orchestrator_core.__version__}\n"
    assert not loaded(names, {"click", "yaml", "pluggy", "orchestrator_core.cli",
                              "orchestrator_core.config", *DEPLOYMENT_ONLY})
    # nor typing (9 ms) or threading: the exit checks threads only where they can exist
    assert not loaded(names, {"typing", "threading"})


def test_version_after_other_options_is_clicks_and_the_same(unit: tuple[System, Path]) -> None:
    system, _ = unit
    result = system.run("--log-level", "error", "--version")
    assert result.stdout == f"mender-orchestrator, version {orchestrator_core.__version__}\n"


@pytest.mark.parametrize("command", ["show-inventory", "show-provides"])
def test_queries_load_no_deployment_machinery(unit: tuple[System, Path], command: str) -> None:
    system, _ = unit
    names, stdout = imported([command], system.env)
    assert "a.a-1.rootfs-image.unit.version=factory" in stdout
    # nor, for one Component, a thread pool
    assert not loaded(names, {*DEPLOYMENT_ONLY, "concurrent.futures"})


def test_inspect_of_an_unsigned_artifact_loads_no_cryptography(
    unit: tuple[System, Path],
) -> None:
    system, artifact = unit
    names, stdout = imported(["artifact", "inspect", str(artifact)], system.env)
    assert "  Name: unit-v2" in stdout
    assert not loaded(names, {"cryptography", "pluggy", "sqlite3", "requests", "yaml",
                              "orchestrator_core.artifact.writer",
                              "orchestrator_core.artifact.sources",
                              "orchestrator_core.artifact.cache", "orchestrator_core.config"})


def test_install_of_an_unsigned_artifact_loads_no_cryptography(
    unit: tuple[System, Path], tmp_path: Path,
) -> None:
    system, _ = unit
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    names, _ = imported(["install", str(manifest)], system.env)
    assert system.version("a", "1") == "unit-v2"
    assert not loaded(names, {"cryptography", "stevedore", "requests", "importlib.metadata",
                              "orchestrator_core.artifact.writer",
                              # no zstd section; one Component: no pool of threads
                              "zstandard", "concurrent.futures",
                              # files written atomically without it; no ArtifactsCache entry
                              "tempfile"})


def test_runs_after_a_deployment_load_no_yaml_for_files_parsed_before(
    unit: tuple[System, Path], tmp_path: Path,
) -> None:
    system, _ = unit
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    names, _ = imported(["install", str(manifest)], system.env)
    assert "yaml" in names  # the first run parses
    assert system.version("a", "1") == "unit-v2"
    # the journal now exists: the next run keeps what it parses in the datastore
    assert system.run("show-inventory").returncode == 0
    names, stdout = imported(["show-inventory"], system.env)
    assert "a.a-1.rootfs-image.unit.version=unit-v2" in stdout
    assert not loaded(names, {"yaml", "orchestrator_core.yaml_loader"})
    names, _ = imported(["install", str(manifest)], system.env)  # the same Manifest again
    assert not loaded(names, {"yaml", "orchestrator_core.yaml_loader"})
    # a Topology changed by a single byte is parsed anew
    system.write_topology(TOPOLOGY + "# edited\n")
    names, stdout = imported(["show-inventory"], system.env)
    assert "yaml" in names and "a.a-1.rootfs-image.unit.version=unit-v2" in stdout


# Runs the console script's command line (launcher.run, which main runs before its exit) in a
# fresh interpreter and reports, once the command has ended, whether the cyclic garbage
# collector is on and how many objects it froze.
COLLECTOR_PROBE = """
import gc, sys
from orchestrator_core import launcher
sys.argv = ["mender-orchestrator", *sys.argv[1:]]
try:
    launcher.run()
except SystemExit as exc:
    assert not exc.code, exc.code
print("collector", gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr)
"""


def collector_after(args: list[str], env: Mapping[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", COLLECTOR_PROBE, *args], env=env,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr.splitlines()[-1]


def test_the_collector_is_paused_by_start_up_and_resumed_by_a_deployment(
    unit: tuple[System, Path], tmp_path: Path,
) -> None:
    system, artifact = unit
    # a poll ends with it paused: nothing it made needed collecting
    assert collector_after(["show-inventory"], system.env) == "collector False False"
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    # a deployment may run for hours: it collects again, start-up's objects frozen
    assert collector_after(["install", str(manifest)], system.env) == "collector True True"
    assert system.version("a", "1") == "unit-v2"
    # so do the lazily loaded command groups (an Artifact of gigabytes)
    assert collector_after(["artifact", "inspect", str(artifact)],
                           system.env) == "collector True True"


# a sitecustomize module that tells, on stderr, what the interpreter did at exit: the atexit
# functions ran, and the teardown that frees every module (and with them this global) ran
EXIT_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("atexit functions ran\\n"))
class _Teardown:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")
_probe = _Teardown()
"""


@pytest.mark.parametrize(("args", "status", "stdout"), [
    (["--version"], 0, f"mender-orchestrator, version {orchestrator_core.__version__}\n"),
    (["show-provides"], 0, "a.a-1.device_type=a\na.a-1.rootfs-image.unit.version=factory\n"),
    (["install", "/nonexistent/manifest.yaml"], 2, ""),
])
def test_the_console_script_leaves_without_the_interpreters_teardown(
    unit: tuple[System, Path], tmp_path: Path, args: list[str], status: int, stdout: str,
) -> None:
    system, _ = unit
    (tmp_path / "sitecustomize.py").write_text(EXIT_PROBE)
    env = {**system.env, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [system.env.get("PYTHONPATH")])])}
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                            check=False, timeout=60)
    # the exit status and every byte of output are there, the atexit functions ran (they
    # remove the queries' private directories), and the modules were not freed one by one
    assert (result.returncode, result.stdout) == (status, stdout), result.stderr
    assert result.stderr.endswith("atexit functions ran\n")
    assert "teardown ran" not in result.stderr
    # the same probe sees the teardown of an interpreter that exits the usual way
    plain = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True,
                           text=True, check=True, timeout=60)
    assert plain.stderr == "atexit functions ran\nteardown ran\n"


def test_a_thread_still_running_gets_the_interpreters_usual_exit(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(EXIT_PROBE)
    leaving = ("import threading, time\n"
               "from orchestrator_core import launcher\n"
               "threading.Thread(target=lambda: (time.sleep(0.3), print('thread ended'))).start()\n"
               "launcher._exit(3)\n")
    result = subprocess.run([sys.executable, "-c", leaving], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=False,
                            timeout=60)
    # waited for the thread, then the whole exit, teardown included
    assert (result.returncode, result.stdout) == (3, "thread ended\n"), result.stderr
    assert result.stderr == "atexit functions ran\nteardown ran\n"


def test_resuming_the_collector_leaves_an_embedding_programs_setting() -> None:
    probe = ("import gc; from orchestrator_core import startup; gc.disable(); "
             "startup.resume_collection(); print(gc.isenabled(), gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout == "False 0\n"


# answers the queries from the directory it is run in (its ID: the File API version there, and
# the name of the directory holding it), where it also leaves a file behind
LITTERING_INTERFACE = """#!/bin/sh
case "$1" in
  Identity) echo "id=$(cat version)-$(basename "$(dirname "$PWD")")"; echo left > litter ;;
  Provides) echo "rootfs-image.unit.version=v1" ;;
esac
"""


@pytest.mark.parametrize("litter", [False, True])
def test_queries_run_in_a_private_directory_removed_at_exit(
    system: System, tmp_path: Path, litter: bool,
) -> None:
    system.write_interface("unit", LITTERING_INTERFACE if litter else
                           LITTERING_INTERFACE.replace("; echo left > litter", ""))
    system.write_topology(TOPOLOGY)
    temporary = tmp_path / "tmpdir"
    temporary.mkdir()
    names, stdout = imported(["show-inventory"], {**system.env, "TMPDIR": str(temporary)})
    # the Interface ran in $TMPDIR/<a directory of its own> holding the File API version
    assert "a.1-tmpdir.rootfs-image.unit.version=v1\n" in stdout
    # made in $TMPDIR, and gone at exit, with whatever the Interface left there
    assert list(temporary.iterdir()) == []
    assert not loaded(names, {"tempfile", "shutil"} if not litter else {"tempfile"})
