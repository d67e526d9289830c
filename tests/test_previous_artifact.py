"""``ctx.previous_artifact``: the core keeps what each Component last installed, so a driver
rolls back by installing it again (issues 13 and 14: no read-back of the device needed).

The driver is a real package found through its entry point; its "device" is a file it
flashes, so the tests read the bytes the rollback left there.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from systems import System

DRIVER = '''
import json
from pathlib import Path

from orchestrator_core.driver_api import DriverBase, InterfaceError, hookimpl

ROOT = Path({root!r})
DEVICE = ROOT / "device.bin"
VERSION = ROOT / "device.version"
LOG = ROOT / "driver-calls"


class Driver(DriverBase):
    keeps_previous_artifact = True

    def _note(self, state, ctx):
        previous = ctx.previous_artifact
        seen = "none" if previous is None else previous.info.name
        with LOG.open("a") as log:
            log.write(f"{{state}} previous={{seen}}\\n")

    @hookimpl
    def identity(self, ctx):
        return "d1"

    @hookimpl
    def provides(self, ctx):
        version = VERSION.read_text() if VERSION.exists() else "factory"
        return {{"rootfs-image.keeping.version": version}}

    @hookimpl
    def supports_rollback(self, ctx):
        return True

    @hookimpl
    def download(self, ctx):
        self._note("Download", ctx)
        for payload in ctx.payload.files():
            (ctx.work_dir / "image").write_bytes(payload.read())

    @hookimpl
    def artifact_install(self, ctx):
        self._note("ArtifactInstall", ctx)
        DEVICE.write_bytes((ctx.work_dir / "image").read_bytes())
        VERSION.write_text(ctx.artifact.name)

    @hookimpl
    def artifact_commit(self, ctx):
        self._note("ArtifactCommit", ctx)
        if DEVICE.read_bytes().startswith(b"bad"):
            raise InterfaceError("the new image does not start")

    @hookimpl
    def artifact_rollback(self, ctx):
        self._note("ArtifactRollback", ctx)
        previous = ctx.previous_artifact
        if previous is None:
            raise InterfaceError("nothing to roll back to")
        DEVICE.write_bytes(previous.file("firmware.bin").read_bytes())
        VERSION.write_text(previous.info.name)
'''


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("previous-artifacts")
    for name, content in (("dev-v2", b"good v2"), ("dev-v3", b"bad v3"), ("dev-v4", b"good v4")):
        payload = directory / "firmware.bin"
        payload.write_bytes(content)
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "dev", "-t", "dev", "-n", name,
             "-f", str(payload), "-o", str(directory / f"{name}.mender")],
            check=True, capture_output=True,
        )  # fmt: skip
        payload.unlink()
    return directory


@pytest.fixture()
def keeping_system(system: System, artifacts: Path) -> System:
    site = system.root / "site"
    (site / "keeping_driver-1.0.dist-info").mkdir(parents=True)
    (site / "keeping_driver-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: keeping_driver\nVersion: 1.0\n"
    )
    (site / "keeping_driver-1.0.dist-info" / "entry_points.txt").write_text(
        "[mender_orchestrator.drivers]\nkeeping = keeping_driver:Driver\n"
    )
    (site / "keeping_driver.py").write_text(textwrap.dedent(DRIVER).format(root=str(system.root)))
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        "  - component_type: dev\n    interface: keeping\n"
    )
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    return system


def deploy(system: System, artifact_name: str) -> subprocess.CompletedProcess[str]:
    manifest = system.root / f"{artifact_name}.yaml"
    manifest.write_text(
        f"api_version: mender/v1\nkind: manifest\nname: s-{artifact_name}\n"
        "system_types_compatible: [s]\ncomponent_types:\n"
        f"  dev: {{artifact_name: {artifact_name}, update_strategy: {{order: 1}}}}\n"
    )
    return system.run("install", str(manifest), env={"PYTHONPATH": str(system.root / "site")},
                      timeout=60)


def calls(system: System) -> list[str]:
    log = system.root / "driver-calls"
    lines = log.read_text().splitlines()
    log.unlink()
    return lines


def kept(system: System) -> list[str]:
    entry = system.datastore / "installed" / "dev%2Fd1"
    return sorted(os.listdir(entry))


def test_a_failed_update_is_rolled_back_by_reinstalling_the_previous_artifact(
    keeping_system: System,
) -> None:
    system = keeping_system
    first = deploy(system, "dev-v2")
    assert first.returncode == 0, first.stderr
    # the first deployment has nothing kept: a driver must cope with None
    assert calls(system) == ["Download previous=none", "ArtifactInstall previous=none",
                             "ArtifactCommit previous=none"]  # fmt: skip
    assert (system.root / "device.bin").read_bytes() == b"good v2"

    failed = deploy(system, "dev-v3")
    assert failed.returncode == 1, failed.stderr
    assert calls(system) == ["Download previous=dev-v2", "ArtifactInstall previous=dev-v2",
                             "ArtifactCommit previous=dev-v2",
                             "ArtifactRollback previous=dev-v2"]  # fmt: skip
    # the bytes the rollback wrote are the previous Artifact's payload, and they are recorded
    # as what runs: the failed one's stored copy is gone
    assert (system.root / "device.bin").read_bytes() == b"good v2"
    assert (system.root / "device.version").read_text() == "dev-v2"
    assert len(kept(system)) == 2  # current and the one directory it names

    later = deploy(system, "dev-v4")
    assert later.returncode == 0, later.stderr
    assert calls(system)[0] == "Download previous=dev-v2"
    assert (system.root / "device.bin").read_bytes() == b"good v4"
    entry = system.datastore / "installed" / "dev%2Fd1"
    current = entry / "current"
    assert (current / "files" / "firmware.bin").read_bytes() == b"good v4"
    assert '"name": "dev-v4"' in (current / "artifact.json").read_text()
    assert len(kept(system)) == 2
    assert (os.stat(entry / os.readlink(current)).st_mode & 0o777) == 0o700


def test_a_driver_that_does_not_ask_keeps_nothing(system: System, artifacts: Path) -> None:
    system.add_interface("unit")
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        "  - component_type: dev\n    interface: unit\n"
    )
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    result = deploy(system, "dev-v2")
    assert result.returncode == 0, result.stderr
    assert not (system.datastore / "installed").exists() or not any(
        (system.datastore / "installed").iterdir()
    )
