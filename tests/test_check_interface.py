"""``mender-orchestrator check-interface`` against real Interfaces: the example executables,
the bundled drivers on their simulators, and broken Interfaces that each check must catch."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from systems import CLI, REPO, SIMULATED_UNIT, System

sys.path.insert(0, str(REPO / "examples" / "virtual-vehicle"))
from build_artifacts import Firmware, brake_ecu, seat_heater, telematics
from vehicle import FACTORY, VirtualVehicle

from orchestrator_core.artifact.writer import write_artifact
from orchestrator_core.artifact_write import build_spec

QUERY_CHECKS = ["identity-valid", "identity-stable", "provides-version-key",
                "provides-no-device-type", "provides-stable", "queries-valid"]
ROLLBACK_CHECKS = ["rollback-after-ArtifactInstall", "rollback-after-ArtifactReboot",
                   "rollback-after-ArtifactVerifyReboot", "rollback-after-ArtifactCommit"]
WALK_CHECKS = ["download", "install", "artifact-failure", "cleanup-twice", "left-as-found"]
CALL_CHECKS = ["deadline", "output-size", "file-api-tmp-only"]


def check(system: System, interface: str, *args: str, component_type: str = "rtos",
          log_level: str = "info") -> tuple[int, dict[str, Any], str]:
    """Run check-interface --json; exit code, the report, stderr."""
    result = system.run("--log-level", log_level, "check-interface", interface,
                        "--component-type", component_type, "--json", *args)
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def failed(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}


def test_the_simulated_unit_passes_every_check_and_is_left_as_found(system: System) -> None:
    system.add_interface("rtos-interface")
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 0, report
    assert set(report) == {"interface", "kind", "target", "component_type", "component_id",
                           "version_before", "version_after", "passed", "checks", "calls"}
    assert report["passed"] is True
    assert report["kind"] == "executable"
    assert report["target"] == str(system.interfaces / "rtos-interface")
    assert report["component_id"] == "rtos-1"
    assert report["version_before"] == report["version_after"] == "factory"
    assert [c["name"] for c in report["checks"]] == [
        *QUERY_CHECKS, *ROLLBACK_CHECKS, *WALK_CHECKS, *CALL_CHECKS]
    assert set(statuses(report).values()) == {"pass"}
    for entry in report["checks"]:
        assert set(entry) == {"name", "status", "detail"}
    assert {"hook", "seconds", "error", "output_bytes"} == set(report["calls"][0])
    assert report["calls"][0]["hook"] == "Identity"
    # the Interface saw the engine's sequences: a rollback from after the reboot ...
    calls = system.calls("rtos", "1")
    assert "ArtifactReboot ArtifactRollback ArtifactRollbackReboot ArtifactVerifyRollbackReboot" \
           in " ".join(calls)
    # ... a deployment that commits, and the device put back on the version it ran
    assert calls.count("ArtifactCommit") >= 3
    assert system.version("rtos", "1") == "factory"
    assert not list(system.devices.glob("rtos-1/staged*"))


def test_the_table_for_people_and_its_exit_code(system: System) -> None:
    system.add_interface("rtos-interface")
    result = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                        "--arg", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("check-interface rtos-interface (executable ")
    assert lines[1].split() == ["CHECK", "RESULT", "DETAIL"]
    assert any(line.split()[:2] == ["rollback-after-ArtifactCommit", "pass"] for line in lines)
    assert lines[-1] == "all 18 checks that ran passed (0 skipped)"


def test_without_rollback_support_it_installs_the_running_version_again(system: System) -> None:
    system.add_interface("rtos-interface")
    code, report, _ = check(system, "rtos-interface", "--arg", "1", "--arg", "No",
                            "--arg", "No")
    assert code == 0, report
    result = statuses(report)
    assert [result[name] for name in ROLLBACK_CHECKS] == ["skip"] * 4
    assert result["artifact-failure"] == result["install"] == result["left-as-found"] == "pass"
    assert system.version("rtos", "1") == "factory"
    # the failed install: no rollback states, ArtifactFailure then Cleanup
    calls = " ".join(system.calls("rtos", "1"))
    assert "ArtifactRollback" not in calls
    assert "ArtifactInstall NeedsArtifactReboot Provides ArtifactFailure" not in calls
    assert "ArtifactInstall Provides ArtifactFailure Provides Cleanup" in calls


def test_dry_only_asks_the_queries(system: System) -> None:
    system.add_interface("rtos-interface")
    code, report, _ = check(system, "rtos-interface", "--arg", "1", "--dry")
    assert code == 0, report
    assert statuses(report) == {**{name: "pass" for name in QUERY_CHECKS}, "walks": "skip",
                                "deadline": "pass", "output-size": "pass",
                                "file-api-tmp-only": "skip"}
    assert set(system.calls("rtos", "1")) == {
        "Identity", "Provides", "Inventory", "NeedsUnpackedArtifact", "ProvidePayloadFileSizes",
        "SupportsRollback", "NeedsArtifactReboot"}


def test_leave_installed_leaves_the_new_version(system: System) -> None:
    system.add_interface("rtos-interface")
    code, report, _ = check(system, "rtos-interface", "--arg", "1", "--leave-installed")
    assert code == 0, report
    assert statuses(report)["left-installed"] == "pass"
    assert report["version_after"].startswith("check-interface-")
    assert system.version("rtos", "1") == report["version_after"]


# --------------------------------------------------------------------------- broken Interfaces


def broken(system: System, name: str, case: str, replacement: str) -> None:
    """The simulated unit with one state (or query) of its ``case`` replaced."""
    text = SIMULATED_UNIT.read_text()
    start = text.index(f"\n    {case})")
    end = text.index("\n", text.index(";;", start))
    system.write_interface(name, text[:start] + "\n" + replacement + text[end:])


def test_a_rollback_that_does_nothing_is_caught(system: System) -> None:
    broken(system, "rtos-interface", "ArtifactRollback", "    ArtifactRollback) : ;;")
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    assert report["passed"] is False
    failures = failed(report)
    # before the reboot nothing was activated yet; from then on the new version stays
    assert set(failures) == {"rollback-after-ArtifactReboot",
                             "rollback-after-ArtifactVerifyReboot",
                             "rollback-after-ArtifactCommit"}
    assert "runs check-interface-" in failures["rollback-after-ArtifactReboot"]
    assert "not the previous version factory" in failures["rollback-after-ArtifactReboot"]
    # the checker put it back with an Artifact of the version it ran
    assert system.version("rtos", "1") == "factory"
    assert statuses(report)["left-as-found"] == "pass"


def test_an_unstable_identity_is_caught(system: System) -> None:
    broken(system, "rtos-interface", "Identity",
           '    Identity) echo "id=$ctype-$unit-$RANDOM$RANDOM" ;;')
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    assert failed(report).keys() == {"identity-stable"}
    assert "3 calls answered" in failed(report)["identity-stable"]
    assert "Download" not in system.calls("rtos", "1")  # nothing is installed on a doubt


@pytest.mark.parametrize(("case", "replacement", "name", "message"), [
    ("Identity", '    Identity) echo "id=a/b" ;;', "identity-valid",
     "the Identity query gave id='a/b'"),
    ("NeedsArtifactReboot", "    NeedsArtifactReboot) echo Maybe ;;", "queries-valid",
     "answered the NeedsArtifactReboot query with 'Maybe"),
    ("Provides", "    Provides) echo version=1 ;;", "provides-version-key",
     "did not report rootfs-image.rtos-interface.version"),
])  # fmt: skip
def test_bad_query_answers_are_caught_with_dry(system: System, case: str, replacement: str,
                                                name: str, message: str) -> None:
    broken(system, "rtos-interface", case, replacement)
    code, report, _ = check(system, "rtos-interface", "--arg", "1", "--dry")
    assert code == 1
    assert failed(report).keys() == {name}
    assert message in failed(report)[name]


def test_a_cleanup_that_fails_the_second_time_is_caught(system: System) -> None:
    broken(system, "rtos-interface", "ArtifactFailure | Cleanup",
           '    ArtifactFailure) : ;;\n'
           '    Cleanup)\n'
           '        if [ -e tmp/cleaned ]; then echo "already clean" >&2; exit 1; fi\n'
           '        touch tmp/cleaned ;;')
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    assert failed(report).keys() == {"cleanup-twice"}
    assert failed(report)["cleanup-twice"].startswith("the second Cleanup in a row failed: ")
    assert "already clean" in failed(report)["cleanup-twice"]


def test_an_artifact_failure_that_fails_is_caught(system: System) -> None:
    broken(system, "rtos-interface", "ArtifactFailure | Cleanup",
           '    ArtifactFailure) exit 3 ;;\n    Cleanup) : ;;')
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    assert failed(report).keys() == {"artifact-failure"}
    assert "exited with status 3" in failed(report)["artifact-failure"]


def test_writing_outside_tmp_and_device_type_are_caught(system: System) -> None:
    broken(system, "rtos-interface", "Provides",
           '    Provides) provides; echo "device_type=rtos" ;;')
    text = (system.interfaces / "rtos-interface").read_text().replace(
        '    ArtifactCommit) : ;;', '    ArtifactCommit) echo done >"$work/committed" ;;')
    system.write_interface("rtos-interface", text)
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    failures = failed(report)
    assert failures.keys() == {"provides-no-device-type", "file-api-tmp-only"}
    assert failures["file-api-tmp-only"].startswith("ArtifactCommit wrote committed")


def test_a_state_past_the_deadline_is_caught(system: System) -> None:
    system.write_config({"InterfaceTimeoutSeconds": 1})
    broken(system, "rtos-interface", "ArtifactCommit", "    ArtifactCommit) sleep 5 ;;")
    code, report, _ = check(system, "rtos-interface", "--arg", "1")
    assert code == 1
    failures = failed(report)
    assert "ArtifactCommit ran" in failures["deadline"]
    assert "past InterfaceTimeoutSeconds (1 s)" in failures["deadline"]
    assert "install" in failures
    assert system.version("rtos", "1") == "factory"


def test_flooding_stderr_is_caught(system: System) -> None:
    broken(system, "rtos-interface", "ArtifactInstall",
           '    ArtifactInstall)\n'
           '        head -c 2000000 /dev/zero | tr "\\0" x | fold -w 100 >&2\n'
           '        cat "$work/header/artifact_name" >"$dev/staged"\n'
           '        : >"$dev/staged.provides" ;;')
    code, report, _ = check(system, "rtos-interface", "--arg", "1", log_level="error")
    assert code == 1
    assert failed(report).keys() == {"output-size"}
    assert "ArtifactInstall printed " in failed(report)["output-size"]


# --------------------------------------------------------------------------- refusals


def test_it_refuses_while_a_deployment_holds_the_lock(system: System) -> None:
    system.add_interface("rtos-interface")
    with (system.datastore / "lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                            "--arg", "1")
        dry = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                         "--arg", "1", "--dry")
    assert result.returncode == 5
    assert "another mender-orchestrator is working on this System" in result.stderr
    assert dry.returncode == 5
    assert "a deployment is running on this System right now" in dry.stderr
    assert "check-interface" in dry.stderr
    assert system.calls("rtos", "1") == []


def test_it_installs_nothing_while_a_deployment_is_in_progress(system: System) -> None:
    """Between the Update Module's states no process holds the lock, but the deployment is
    still in progress: installing on one of its Components then would break it."""
    system.add_interface("rtos-interface")
    system.write_topology(
        'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "s"\ncomponents:\n'
        '  - component_type: rtos\n    interface: rtos-interface\n    interface_args: ["1"]\n'
    )
    manifest = system.root / "manifest.yaml"
    artifact = system.root / "rtos-v2.mender"
    made = system.run("artifact", "write", "-T", "rtos-interface", "-t", "rtos",
                      "-n", "rtos-v2", "--provides", "rootfs-image.rtos-interface.version:rtos-v2",
                      "-o", str(artifact))
    assert made.returncode == 0, made.stderr
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "m"\n'
        'system_types_compatible: ["s"]\ncomponent_types:\n'
        f'  rtos:\n    artifact_path: {artifact}\n    artifact_name: rtos-v2\n'
        '    update_strategy: {order: 10}\n'
    )
    stopped = system.run("install", "--stop-before", "ArtifactInstall", str(manifest))
    assert stopped.returncode == 0, stopped.stderr
    calls = system.calls("rtos", "1")
    result = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                        "--arg", "1")
    assert result.returncode == 5
    assert "is still in progress" in result.stderr
    assert system.calls("rtos", "1") == calls


def test_no_deployment_or_second_check_starts_while_it_installs(system: System) -> None:
    broken(system, "rtos-interface", "ArtifactCommit",
           '    ArtifactCommit)\n'
           '        for _ in $(seq 200); do\n'
           '            [ -e "$SIM_STATE_DIR/go" ] && break; sleep 0.1\n'
           '        done ;;')
    first = subprocess.Popen(
        [*CLI, "check-interface", "rtos-interface", "--component-type", "rtos", "--arg", "1"],
        env=system.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "ArtifactCommit" not in system.calls("rtos", "1"):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                            "--arg", "1")
        assert second.returncode == 5
        assert "lock" in second.stderr
    finally:
        (system.devices / "go").touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err


def test_without_rollback_one_artifact_is_not_enough(system: System, tmp_path: Path) -> None:
    system.add_interface("rtos-interface")
    new = firmware_artifact(tmp_path, Firmware("v2", "rtos", "rtos-interface", b"x"))
    code, _, stderr = check(system, "rtos-interface", "--arg", "1", "--arg", "No",
                            "--arg", "No", "--artifact", str(new))
    assert code == 2
    assert "answers SupportsRollback No: putting it back on factory needs an Artifact of " \
           "that version as a second --artifact" in stderr
    assert "Download" not in system.calls("rtos", "1")


def test_bad_input_is_one_line_and_exit_2(system: System, tmp_path: Path) -> None:
    system.add_interface("rtos-interface")
    code, _, stderr = check(system, "no-such-interface")
    assert code == 2
    assert "Interface 'no-such-interface' not found" in stderr
    missing = tmp_path / "missing.mender"
    code, _, stderr = check(system, "rtos-interface", "--arg", "1", "--artifact", str(missing))
    assert code == 2
    assert f"--artifact {missing}: cannot read it" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_an_artifact_for_another_type_is_refused(system: System, tmp_path: Path) -> None:
    system.add_interface("rtos-interface")
    other = firmware_artifact(tmp_path, Firmware("other-1", "gpu", "rtos-interface", b"x"))
    code, _, stderr = check(system, "rtos-interface", "--arg", "1", "--artifact", str(other))
    assert code == 2
    assert "is not for this Component" in stderr


# --------------------------------------------------------------------------- the vehicle


def firmware_artifact(directory: Path, firmware: Firmware) -> Path:
    image = directory / f"{firmware.artifact_name}.bin"
    image.write_bytes(firmware.image)
    spec = build_spec(
        payload_type=firmware.interface, artifact_name=firmware.artifact_name,
        device_types=[firmware.component_type], files=[image], provides={}, depends={},
        clears_provides=(), provides_group=None, depends_groups=(), artifact_name_depends=(),
        meta_data=None,
    )
    path = directory / f"{firmware.artifact_name}.mender"
    write_artifact(spec, path)
    return path


@pytest.fixture(scope="module")
def vehicle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("vehicle")
    with VirtualVehicle(root / "vehicle", root / "artifacts") as running:
        yield running


def vehicle_check(vehicle: VirtualVehicle, interface: str, component_type: str,
                  args: list[str], new: Firmware, old: Firmware) -> dict[str, Any]:
    artifacts = vehicle.root / "check-artifacts"
    artifacts.mkdir(exist_ok=True)
    result = vehicle.run(
        "check-interface", interface, "--component-type", component_type,
        *[f"--arg={arg}" for arg in args],
        "--artifact", firmware_artifact(artifacts, new),
        "--artifact", firmware_artifact(artifacts, old), "--json",
    )
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert (result.returncode == 0) is report["passed"], result.stderr
    return report


def test_the_cellular_modem_interface_passes(vehicle: VirtualVehicle) -> None:
    report = vehicle_check(vehicle, "cellular-ota", "telematics_control_unit",
                           [str(vehicle.state / "tcu")], telematics("9.0.0"), telematics("2.3.0"))
    assert failed(report) == {}
    assert report["kind"] == "executable"
    assert report["version_before"] == report["version_after"] == \
           FACTORY["telematics_control_unit"]
    assert statuses(report)["download"] == "pass"
    assert "left the payload to files/" in next(
        c["detail"] for c in report["checks"] if c["name"] == "download")


def test_the_canbus_driver_on_its_simulator(vehicle: VirtualVehicle) -> None:
    args = ["--interface=remote", f"--channel=127.0.0.1:{vehicle.port}",
            "--memory-size=0x10000", "--reset-wait=5"]
    report = vehicle_check(vehicle, "canbus", "ecu_brake_controller", args,
                           brake_ecu("9.0.0"), brake_ecu("1.7.0"))
    assert report["kind"] == "driver"
    assert failed(report) == {}
    assert report["version_before"] == report["version_after"] == FACTORY["ecu_brake_controller"]


def test_the_i2c_driver_on_its_simulator(vehicle: VirtualVehicle) -> None:
    args = [f"--bus=sim:{vehicle.state}/seat-heater.bin", "--address=0x48",
            "--uid-address=0x1FFF7590"]
    report = vehicle_check(vehicle, "i2c", "seat_heating", args, seat_heater("9.0.0"),
                           seat_heater("1.1.0"))
    assert report["kind"] == "driver"
    assert failed(report) == {}
    assert report["version_before"] == report["version_after"] == FACTORY["seat_heating"]
