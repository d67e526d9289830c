"""In-process drivers cannot fool or hang the engine (issue 10, section 9).

Each driver is a real package registered through a real entry point: a module and its
``.dist-info`` (METADATA, entry_points.txt) on the orchestrator's PYTHONPATH, found by
``importlib.metadata`` and loaded by stevedore like any installed driver.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from systems import CLI, System

DRIVER = '''
import time
from pathlib import Path

from orchestrator_core.hookspecs import hookimpl

LOG = Path({log!r})


class Driver:
    def __init__(self, component):
        self.component = component

    def _note(self, what):
        with LOG.open("a") as log:
            log.write(what + "\\n")

    @hookimpl
    def identity(self, ctx):
        return "d1"

    @hookimpl
    def provides(self, ctx):
        return {{"rootfs-image.{name}.version": "v1"}}

    @hookimpl
    def supports_rollback(self, ctx):
        return True

    {install}

    @hookimpl
    def artifact_rollback(self, ctx):
        self._note("ArtifactRollback")

    @hookimpl
    def artifact_failure(self, ctx):
        self._note("ArtifactFailure")

    @hookimpl
    def cleanup(self, ctx):
        self._note("Cleanup")
'''

HANGS = '''@hookimpl
    def artifact_install(self, ctx):
        self._note("ArtifactInstall")
        while True:  # ignores ctx.deadline and ctx.cancelled
            time.sleep(3600)'''

LISTENS = '''@hookimpl
    def artifact_install(self, ctx):
        self._note("ArtifactInstall")
        ctx.cancelled.wait()  # the documented way a transport is told to stop
        self._note("cancelled")
        raise RuntimeError("stopped")'''

MISSPELT = '''@hookimpl
    def artifact_instal(self, ctx):
        self._note("ArtifactInstall")'''


def register_driver(root: Path, name: str, install: str, log: Path) -> Path:
    """A driver package ``name`` on a directory for PYTHONPATH; returns the directory."""
    site = root / "site"
    module = f"test_driver_{name}"
    (site / f"{module}-1.0.dist-info").mkdir(parents=True)
    (site / f"{module}-1.0.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n"
    )
    (site / f"{module}-1.0.dist-info" / "entry_points.txt").write_text(
        f"[mender_orchestrator.drivers]\n{name} = {module}:Driver\n"
    )
    (site / f"{module}.py").write_text(
        textwrap.dedent(DRIVER).format(log=str(log), name=name, install=install)
    )
    return site


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("driver-artifacts")
    payload = directory / "firmware.bin"
    payload.write_bytes(b"\x02" * 1024)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "dev", "-t", "dev", "-n", "dev-v2",
         "-f", str(payload), "-o", str(directory / "dev-v2.mender")],
        check=True, capture_output=True,
    )  # fmt: skip
    payload.unlink()
    return directory


def driver_system(
    system: System, artifacts: Path, name: str, install: str, timeout: int = 1
) -> tuple[Path, Path]:
    """A System of one Component served by the in-process driver ``name``: (log, manifest)."""
    log = system.root / "driver-calls"
    site = register_driver(system.root, name, install, log)
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        f"  - component_type: dev\n    interface: {name}\n"
    )
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": timeout})  # fmt: skip
    manifest = system.root / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n  dev: {artifact_name: dev-v2, update_strategy: {order: 1}}\n"
    )
    (system.root / "pythonpath").write_text(str(site))
    return log, manifest


def run(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    site = (system.root / "pythonpath").read_text()
    return system.run(*args, env={"PYTHONPATH": site}, timeout=60)


def test_a_driver_ignoring_its_deadline_fails_the_call_and_the_process_ends(
    system: System, artifact: Path
) -> None:
    log, manifest = driver_system(system, artifact, "hangs", HANGS)
    started = time.monotonic()
    result = run(system, "install", str(manifest))
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "artifact_install ran longer than InterfaceTimeoutSeconds (1 s)" in result.stderr
    assert "ctx.cancelled" in result.stderr
    assert log.read_text().split() == ["ArtifactInstall", "ArtifactRollback", "ArtifactFailure",
                                       "Cleanup"]  # fmt: skip
    assert elapsed < 20  # the timeout, the grace, the rollback: never the hung thread


def test_a_misspelt_hook_name_is_a_load_error(system: System, artifact: Path) -> None:
    log, manifest = driver_system(system, artifact, "misspelt", MISSPELT)
    result = run(system, "install", str(manifest))
    assert result.returncode == 2, result.stderr
    assert "driver 'misspelt' (test_driver_misspelt:Driver)" in result.stderr
    assert "marks artifact_instal with @hookimpl, but no hook has that name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not log.exists()  # no state ran, none "succeeded" as a no-op
    listed = run(system, "drivers")
    assert listed.returncode == 2
    assert "artifact_instal" in listed.stderr


def test_sigterm_tells_an_in_process_driver_to_stop(system: System, artifact: Path) -> None:
    log, manifest = driver_system(system, artifact, "listens", LISTENS, timeout=60)
    env = {**system.env, "PYTHONPATH": (system.root / "pythonpath").read_text()}
    orchestrator = subprocess.Popen([*CLI, "install", str(manifest)], env=env,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not log.exists() or "ArtifactInstall" not in log.read_text():
        assert orchestrator.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    orchestrator.send_signal(signal.SIGTERM)
    _, stderr = orchestrator.communicate(timeout=15)
    assert orchestrator.returncode == 7, stderr
    assert log.read_text().split() == ["ArtifactInstall", "cancelled"]
    assert "mender-orchestrator resume" in stderr
