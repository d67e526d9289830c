"""``make demo`` (examples/demo.py): the virtual vehicle updated, updated, rolled back.

The demo is run as a newcomer runs it; its own checks decide its exit status, so a second
test makes sure those checks do catch a step that goes differently.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from systems import REPO

sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "examples" / "virtual-vehicle"))
from build_artifacts import build
from demo import STEPS, Step, deploy
from vehicle import VirtualVehicle


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in arguments:
            found.append(arguments)
    return found


def test_the_demo_does_what_the_readme_says(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py"), "--workdir",
                             str(workdir)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[ok] vehicle-v1 deployed" in out
    assert "[ok] vehicle-v2 deployed" in out
    assert "[ok] vehicle-v3 failed and rolled back, as it should" in out
    assert "[FAILED]" not in out
    assert " ".join(out.split()).endswith(
        "failed and the whole vehicle rolled back to vehicle-v2.")
    # show-provides and status of each step, as the tool prints them
    assert "ecu_brake_controller.SIM-BRAKE-0042.rootfs-image.canbus.version=" \
           "brake-ecu-firmware-v1.8.3" in out
    assert "left untouched, already runs seat-heating-fw-v1.2.0" in out
    assert "deployment 3: vehicle-v3  status failed" in out
    assert "self-test of tcu-firmware-v2.5.0 failed after the reboot" in out
    # everything it started is gone
    assert processes_mentioning(str(workdir)) == []
    assert (workdir / "logs" / "vehicle-v3.log").exists()


def test_the_demo_notices_a_step_that_goes_differently(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    build(artifacts)
    v1 = STEPS[0]
    wrong = Step(v1.manifest, v1.what, succeeds=False,
                 versions={**v1.versions, "seat_heating": "seat-heating-fw-v9"},
                 status_mentions=("no such text",))
    with VirtualVehicle(tmp_path / "vehicle", artifacts) as vehicle:
        problems = deploy(vehicle, wrong, 1, tmp_path)
    assert problems == [
        "vehicle-v1: expected the deployment to fail, exit status was 0",
        "vehicle-v1: seat_heating runs seat-heating-fw-v1.2.0, expected seat-heating-fw-v9",
        "vehicle-v1: 'status' does not mention 'no such text'",
    ]
    assert processes_mentioning(str(tmp_path / "vehicle")) == []


@pytest.mark.parametrize("module", ["demo.py", "virtual-vehicle/build_artifacts.py"])
def test_the_example_scripts_explain_themselves(module: str) -> None:
    result = subprocess.run([sys.executable, str(REPO / "examples" / module), "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "usage:" in result.stdout
