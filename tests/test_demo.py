"""``make demo`` (examples/demo.py): the virtual vehicle updated, updated, rolled back.

The demo is run as a newcomer runs it; its own checks decide its exit status, so a second
test makes sure those checks do catch a step that goes differently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from systems import REPO

sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "examples" / "virtual-vehicle"))
from build_artifacts import build
from demo import STEPS, Step, deploy, status_summary
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
    assert "Traceback" not in result.stderr
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
    assert "door_lock.esp32-240ac4d00701.rootfs-image.esp32.version=door-lock-fw-v1.1.0" in out
    assert "  group  20 rollback ArtifactVerifyRollbackReboot door_lock/esp32-240ac4d00701" in out
    assert "deployment 3: vehicle-v3  status failed" in out
    # successful deployments are summed up, the failed one is shown state by state
    assert "(40 states ran and succeeded; `mender-orchestrator status` lists each" in out
    assert "(16 states ran and succeeded;" in out
    assert "  group  10 rollback ArtifactVerifyRollbackReboot ecu_brake_controller/" in out
    assert "self-test of tcu-firmware-v2.5.0 failed after the reboot" in out
    # everything it started is gone
    assert processes_mentioning(str(workdir)) == []
    assert (workdir / "logs" / "vehicle-v3.log").exists()
    assert (workdir / "logs" / "vehicle-v3.html").exists()
    assert f"$ mender-orchestrator report -o {workdir / 'logs' / 'vehicle-v3.html'}" in " ".join(
        out.split())
    assert max(len(line) for line in out.splitlines()) <= 120


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


def test_a_status_summary_keeps_what_did_not_go_well() -> None:
    status = "\n".join([
        "deployment 7: box-2  status failed, rolled back",
        "  deployment of box-2 failed and the System was rolled back: x",
        "  group  10 install  Download         a/1   0.01s  ok",
        "  group  10 install  SupportsRollback a/1   0.00s  ok = Yes",
        "  group  10 install  ArtifactInstall  a/1   1.50s  FAILED: a/1: no",
        "  group  10 rollback ArtifactRollback a/1   0.20s  ok",
    ])  # fmt: skip
    assert status_summary(status).splitlines() == [
        "deployment 7: box-2  status failed, rolled back",
        "  deployment of box-2 failed and the System was rolled back: x",
        "  group  10 install  ArtifactInstall  a/1   1.50s  FAILED: a/1: no",
        "  (3 states ran and succeeded; `mender-orchestrator status` lists each with its time)",
    ]  # fmt: skip


@pytest.mark.parametrize("used", ["a file", "a directory with something in it"])
def test_the_demo_refuses_a_used_workdir(tmp_path: Path, used: str) -> None:
    workdir = tmp_path / "work"
    if used == "a file":
        workdir.write_text("")
    else:
        workdir.mkdir()
        (workdir / "vehicle").mkdir()
    result = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py"), "--workdir",
                             str(workdir)], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        f"error: --workdir {workdir}: expected a new or empty directory (a previous run's "
        f"devices would not be factory-fresh)"
    )
    assert result.stdout == ""


def test_the_modem_says_why_its_rollback_is_not_verified(tmp_path: Path) -> None:
    modem = tmp_path / "tcu"
    modem.mkdir()
    for name, value in (("imei", "1"), ("running", "b"), ("permanent", "a"), ("health", "ok")):
        (modem / name).write_text(value + "\n")
    interface = REPO / "examples" / "virtual-vehicle" / "interfaces" / "cellular-ota"
    result = subprocess.run([str(interface), "ArtifactVerifyRollbackReboot", str(tmp_path),
                             "telematics_control_unit", str(modem)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "cellular-ota: after the rollback the modem runs slot b (ok), not its permanent slot a\n"
    )


@pytest.mark.parametrize(
    ("state", "active", "message"),
    [
        ("ArtifactVerifyReboot", "rtos-v1", "rtos 1 runs rtos-v1 after the reboot, not rtos-v2\n"),
        ("ArtifactVerifyRollbackReboot", "rtos-v2",
         "rtos 1 still runs rtos-v2 after the rollback\n"),
    ],
)  # fmt: skip
def test_the_simulated_unit_says_why_a_verify_fails(
    tmp_path: Path, state: str, active: str, message: str
) -> None:
    devices, work = tmp_path / "devices", tmp_path / "work"
    (devices / "rtos-1").mkdir(parents=True)
    (devices / "rtos-1" / "active").write_text(active + "\n")
    (work / "header").mkdir(parents=True)
    (work / "header" / "artifact_name").write_text("rtos-v2")
    interface = REPO / "examples" / "system-core" / "interfaces" / "simulated-unit"
    result = subprocess.run([str(interface), state, str(work), "rtos", "1"], cwd=work,
                            env={**os.environ, "SIM_STATE_DIR": str(devices)},
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == message
