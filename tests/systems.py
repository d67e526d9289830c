"""A private System on disk (config, data, datastore dirs) and a way to run the CLI on it.

Every test System lives under a temporary directory and is reached only through the
environment variables of SPEC 11, exactly as a device's would be through /etc, /usr/share
and /var/lib. (A module of its own, not conftest.py: the driver packages have conftest
modules too, and ``from conftest import`` would pick whichever was imported first.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the upstream demo's Artifacts (see demo_artifacts.py), made for this test process by
# conftest.py before collection
FIXTURES = Path(tempfile.mkdtemp(prefix="orchestrator-fixtures-"))
SIMULATED_UNIT = REPO / "examples" / "system-core" / "interfaces" / "simulated-unit"
CLI = [sys.executable, "-m", "orchestrator_core"]


@dataclass
class System:
    root: Path
    conf_dir: Path
    data_dir: Path
    datastore: Path
    devices: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MENDER_ORCHESTRATOR_CONF_DIR=str(self.conf_dir),
            MENDER_ORCHESTRATOR_DATA_DIR=str(self.data_dir),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(self.datastore),
            SIM_STATE_DIR=str(self.devices),
        )
        for name in ("MENDER_ORCHESTRATOR_TOPOLOGY_DIR",
                     "MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE",
                     "MENDER_ORCHESTRATOR_MANIFEST_STORE_DIR",
                     "MENDER_ORCHESTRATOR_ARTIFACTS_CACHE_DIR",
                     # the views wrap at COLUMNS: a test runner's own (pytest-xdist sets 80)
                     # must not change what the tests read
                     "COLUMNS", "LINES"):
            env.pop(name, None)
        return env

    @property
    def interfaces(self) -> Path:
        return self.data_dir / "interfaces" / "v1"

    def add_interface(self, name: str, source: Path = SIMULATED_UNIT) -> Path:
        target = self.interfaces / name
        shutil.copy(source, target)
        target.chmod(0o755)
        return target

    def write_interface(self, name: str, script: str) -> Path:
        target = self.interfaces / name
        target.write_text(script)
        target.chmod(0o755)
        return target

    def write_topology(self, text: str) -> Path:
        path = self.datastore / "topology.yaml"
        path.write_text(text)
        return path

    def write_config(self, options: Mapping[str, object]) -> Path:
        path = self.conf_dir / "mender-orchestrator.conf"
        path.write_text(json.dumps(options))
        return path

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        merged = self.env
        if env:
            merged.update(env)
        return subprocess.run(
            [*CLI, *args], env=merged, capture_output=True, text=True, timeout=timeout,
            check=False,
        )

    def device(self, component_type: str, unit: str) -> Path:
        return self.devices / f"{component_type}-{unit}"

    def version(self, component_type: str, unit: str) -> str:
        return (self.device(component_type, unit) / "active").read_text().strip()

    def calls(self, component_type: str, unit: str) -> list[str]:
        path = self.device(component_type, unit) / "calls"
        return path.read_text().split() if path.exists() else []




def make_system(root: Path) -> System:
    made = System(root, root / "etc", root / "usr-share", root / "var-lib", root / "devices")
    for directory in (made.conf_dir, made.interfaces, made.datastore, made.devices):
        directory.mkdir(parents=True)
    return made
