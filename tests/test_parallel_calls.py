"""How many Components are called at once, and a System larger than the open-file limit."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systems import FIXTURES, System

from orchestrator_core.drivers import DESCRIPTORS_KEPT, DESCRIPTORS_PER_CALL, MAX_PARALLEL_CALLS


def parallel_calls_under(soft: int, hard: int) -> tuple[int, int]:
    """``parallel_calls()`` in a process started with these limits, and its soft limit after."""
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from orchestrator_core.drivers import parallel_calls\n"
        "print(parallel_calls(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_the_soft_limit_is_raised_to_hold_every_call() -> None:
    wanted = MAX_PARALLEL_CALLS * DESCRIPTORS_PER_CALL + DESCRIPTORS_KEPT
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit here ({hard}) is below {wanted}")
    assert parallel_calls_under(256, hard) == (MAX_PARALLEL_CALLS, wanted)


def test_a_low_hard_limit_means_fewer_calls_at_once() -> None:
    assert parallel_calls_under(256, 256) == ((256 - DESCRIPTORS_KEPT) // DESCRIPTORS_PER_CALL, 256)


def test_a_system_larger_than_the_open_file_limit_deploys(system: System, tmp_path: Path) -> None:
    """80 Components updated at once would need more than 256 open files; with that hard
    limit the deployment calls fewer at a time instead of failing with EMFILE."""
    units = 80
    system.add_interface("rtos-interface")
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: system-core\ncomponents:\n"
        + "".join(f"  - component_type: rtos\n    interface: rtos-interface\n"
                  f"    interface_args: ['{unit}', 'No']\n" for unit in range(units))
    )
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    shutil.copy(FIXTURES / "rtos-v2.mender", artifacts)
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: fleet-v2\n"
        "system_types_compatible: [system-core]\n"
        "component_types:\n  rtos:\n    artifact_name: rtos-v2\n    update_strategy: {order: 1}\n"
    )
    result = subprocess.run(
        ["prlimit", "--nofile=256:256", sys.executable, "-m", "orchestrator_core", "install",
         str(manifest)],
        env=system.env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {system.version("rtos", str(unit)) for unit in range(units)} == {"rtos-v2"}
