"""``orchestrator_core.testing``, the pytest plugin, as a vendor's test suite uses it: a
separate pytest run (the plugin comes in through the ``pytest11`` entry point, nothing else)
on test modules written here, against the simulated unit executable and broken copies of it.
The plugin's use by a generated driver package is in test_driver_template.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from systems import SIMULATED_UNIT, make_system

from orchestrator_core import testing

CHECKS = ["identity-valid", "identity-stable", "provides-version-key", "provides-no-device-type",
          "provides-stable", "queries-valid", "rollback-after-ArtifactInstall",
          "rollback-after-ArtifactReboot", "rollback-after-ArtifactVerifyReboot",
          "rollback-after-ArtifactCommit", "walk", "download", "install", "artifact-failure",
          "cleanup-twice", "left-as-found", "deadline", "output-size", "file-api-tmp-only"]

CONFTEST = '''
import pytest

@pytest.fixture(autouse=True)
def devices(tmp_path, monkeypatch):
    # where the simulated unit keeps its devices; unit 7 of type rtos runs "factory"
    path = tmp_path / "devices"
    path.mkdir()
    monkeypatch.setenv("SIM_STATE_DIR", str(path))
    return path

@pytest.fixture
def unit():
    return "7"
'''

MARKED = '''
import pytest

pytestmark = pytest.mark.mender_interface(
    "rtos-interface", component_type="rtos", executable={executable!r},
    args=lambda unit: [unit],
)
'''


def vendor_run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MENDER_ORCHESTRATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         "-o", "addopts=", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def suite(tmp_path: Path, executable: Path, extra: str = "") -> Path:
    directory = tmp_path / "vendor"
    directory.mkdir()
    (directory / "conftest.py").write_text(CONFTEST)
    (directory / "test_unit.py").write_text(MARKED.format(executable=str(executable)) + extra)
    return directory


def broken_unit(tmp_path: Path, case: str, replacement: str) -> Path:
    text = SIMULATED_UNIT.read_text()
    start = text.index(f"\n    {case})")
    end = text.index("\n", text.index(";;", start))
    path = tmp_path / "broken-unit"
    path.write_text(text[:start] + "\n" + replacement + text[end:])
    return path


def outcomes(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED") and "::test_mender_interface[" in rest:
            found[rest.split("[", 1)[1].split("]", 1)[0]] = word
    return found


def test_the_plugin_knows_every_check_that_check_interface_reports(tmp_path: Path) -> None:
    system = make_system(tmp_path / "system")
    system.add_interface("rtos-interface")
    result = system.run("check-interface", "rtos-interface", "--component-type", "rtos",
                        "--arg", "1", "--json")
    assert result.returncode == 0, result.stderr
    reported = [check["name"] for check in json.loads(result.stdout)["checks"]]
    assert [name for name in testing.CHECKS if name in reported] == reported
    assert testing.CHECKS == (*CHECKS,)


def test_the_marker_is_registered() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--markers"], capture_output=True, text=True, check=False)
    assert "@pytest.mark.mender_interface(interface, *, component_type" in result.stdout


def test_one_line_turns_on_every_check_as_its_own_item(tmp_path: Path) -> None:
    result = vendor_run(suite(tmp_path, SIMULATED_UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result.stdout) == dict.fromkeys(CHECKS, "PASSED")


def test_a_broken_rollback_fails_the_items_that_name_it(tmp_path: Path) -> None:
    unit = broken_unit(tmp_path, "ArtifactRollback", "    ArtifactRollback) : ;;")
    result = vendor_run(suite(tmp_path, unit))
    assert result.returncode == 1
    seen = outcomes(result.stdout)
    failed = sorted(name for name, outcome in seen.items() if outcome == "FAILED")
    assert failed == ["rollback-after-ArtifactCommit", "rollback-after-ArtifactReboot",
                      "rollback-after-ArtifactVerifyReboot"]
    assert seen["left-as-found"] == seen["rollback-after-ArtifactInstall"] == "PASSED"
    assert ("check-interface rollback-after-ArtifactReboot FAILED: after the rollback path "
            "(Download, ArtifactInstall, ArtifactReboot, ArtifactRollback, ") in result.stdout
    assert "not the previous version factory" in result.stdout


GIVEN_ARTIFACT = '''
import pytest

pytestmark = pytest.mark.mender_interface(
    "rtos-interface", component_type="rtos", executable={executable!r}, args=["7"],
    artifacts=lambda artifact_factory: [
        # the simulated unit reports the Artifact's name as its version
        artifact_factory({name!r}, payload_type="rtos-interface", component_type="rtos",
                         name={name!r}).path],
)
'''


@pytest.mark.parametrize("name", ["firmware-5.0", "factory"])
def test_artifacts_of_its_own_for_a_device_that_takes_real_firmware_only(
    tmp_path: Path, name: str
) -> None:
    directory = suite(tmp_path, SIMULATED_UNIT)
    (directory / "test_unit.py").write_text(
        GIVEN_ARTIFACT.format(executable=str(SIMULATED_UNIT), name=name))
    result = vendor_run(directory, "-k", "install and not rollback")
    if name == "firmware-5.0":
        assert result.returncode == 0, result.stdout + result.stderr
        assert outcomes(result.stdout) == {"install": "PASSED"}
    else:  # the simulated unit runs "factory", the version this Artifact installs: refused
        assert result.returncode == 1
        assert "check-interface could not start: " in result.stdout
        assert "factory.mender: the Component already runs factory" in result.stdout


def test_an_unstable_identity_fails_its_item_and_the_rest_say_why_they_did_not_run(
    tmp_path: Path,
) -> None:
    unit = broken_unit(tmp_path, "Identity", '    Identity) echo "id=x-$RANDOM$RANDOM" ;;')
    result = vendor_run(suite(tmp_path, unit))
    assert result.returncode == 1
    assert [n for n, o in outcomes(result.stdout).items() if o == "FAILED"] == ["identity-stable"]
    assert "check-interface identity-stable FAILED: 3 calls answered 'x-" in result.stdout
    assert "install: not run, because identity-stable failed first" in result.stdout


FIXTURES = '''

def test_deploy_installs_and_reports_what_it_saw(artifact_factory, deploy, unit):
    artifact = artifact_factory("2.0", payload_type="rtos-interface", component_type="rtos",
                                files={{"image.bin": b"two"}})
    result = deploy(artifact, args=[unit], executable={executable!r})
    assert result.exit_code == 0, result.output
    # the simulated unit reports the name of the Artifact it runs as its version
    assert (result.version_before, result.version_after) == ("factory", "rtos-interface-2.0")
    assert result.calls == ["Download", "SupportsRollback", "ArtifactInstall",
                            "NeedsArtifactReboot", "ArtifactReboot", "ArtifactVerifyReboot",
                            "ArtifactCommit", "Cleanup"], result.calls


def test_interface_hooks_call_one_state_at_a_time(artifact_factory, interface_hooks, unit):
    hooks = interface_hooks("rtos-interface", [unit], "rtos", executable={executable!r})
    artifact = artifact_factory("3.0", payload_type="rtos-interface", component_type="rtos")
    assert hooks.query("identity") == "rtos-7"
    assert hooks.version() == "factory"
    hooks.state("download", artifact)
    hooks.state("artifact_install", artifact)
    hooks.state("artifact_rollback", artifact)
    hooks.state("cleanup", artifact)
    assert hooks.version() == "factory"
'''


AUTOMATIC = '''

def test_deploy_never_reboots_the_machine(artifact_factory, deploy, unit):
    artifact = artifact_factory("2.0", payload_type="rtos-interface", component_type="rtos")
    result = deploy(artifact, args=[unit], executable={executable!r})
    assert result.exit_code == 1
    assert "RebootCommand ['false'] exited with 1" in result.output
    assert result.calls == ["Download", "SupportsRollback", "ArtifactInstall",
                            "NeedsArtifactReboot", "ArtifactRollback", "ArtifactFailure",
                            "Cleanup"], result.calls
    assert result.version_after == "factory"
'''


def test_deploy_never_reboots_the_machine_running_the_tests(tmp_path: Path) -> None:
    unit = broken_unit(tmp_path, "NeedsArtifactReboot",
                       "    NeedsArtifactReboot) echo Automatic ;;")
    directory = suite(tmp_path, unit, AUTOMATIC.format(executable=str(unit)))
    result = vendor_run(directory, "-k", "reboots")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_artifact_factory_deploy_and_interface_hooks(tmp_path: Path) -> None:
    directory = suite(tmp_path, SIMULATED_UNIT,
                      FIXTURES.format(executable=str(SIMULATED_UNIT)))
    result = vendor_run(directory, "-k", "deploy or hooks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.parametrize("module", ["orchestrator_core.testing"])
def test_the_plugin_imports_nothing_heavy(module: str) -> None:
    # pytest loads it in every run of every project in the environment
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; "
         "print(sorted(m for m in sys.modules if m.startswith('orchestrator_core')))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "['orchestrator_core', 'orchestrator_core.testing']"
