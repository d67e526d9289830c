"""Every failure point of SPEC 7, end to end: a state failing for the Component of the first,
the middle or the last order group, with and without rollback support, checked against the
exact Interface calls SPEC 7 prescribes.

The expected calls come from ``expected_calls`` below, a model of SPEC 7 written for this
test and independent of ``orchestrator_core.sequence``. The System has one Component per
group, each answering NeedsArtifactReboot differently: ``a`` (order 10) Yes, ``b`` (20)
Automatic, ``c`` (30) No.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from systems import SIMULATED_UNIT, System, make_system

UNITS = (("a", "Yes"), ("b", "Automatic"), ("c", "No"))
PLANNING = ["Identity", "Provides"]
DOWNLOAD = ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]


def install_calls(need: str) -> list[str]:
    calls = [*DOWNLOAD, "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot"]
    if need == "Yes":
        calls.append("ArtifactReboot")
    if need in ("Yes", "Automatic"):
        calls.append("ArtifactVerifyReboot")
    return calls


def expected_calls(state: str, failing: str, rollback: bool) -> dict[str, list[str]]:
    """SPEC 7 for one failure: per Component, every call after planning."""
    order = [unit for unit, _ in UNITS]
    need = dict(UNITS)
    calls: dict[str, list[str]] = {unit: [] for unit in order}
    started: list[str] = []
    if state == "ArtifactCommit":
        for unit in order:
            calls[unit] += install_calls(need[unit])
            started.append(unit)
        for unit in order[: order.index(failing) + 1]:
            calls[unit].append("ArtifactCommit")
    else:
        for unit in order:
            started.append(unit)
            full = install_calls(need[unit])
            if unit == failing:
                calls[unit] += full[: full.index(state) + 1]
                break
            calls[unit] += full
    # 7.2: the groups that started, in reverse
    for unit in reversed(started):
        installing = "ArtifactInstall" in calls[unit]
        if installing and rollback:
            asked = "NeedsArtifactReboot" in calls[unit]
            calls[unit].append("ArtifactRollback")
            if not asked:
                calls[unit].append("NeedsArtifactReboot")
            if need[unit] == "Yes":
                calls[unit].append("ArtifactRollbackReboot")
            # Automatic: the system reboots back only where the install path rebooted it,
            # which it did right after asking NeedsArtifactReboot
            if need[unit] == "Yes" or (need[unit] == "Automatic" and asked):
                calls[unit].append("ArtifactVerifyRollbackReboot")
        if installing:
            calls[unit].append("ArtifactFailure")
    for unit in started:
        calls[unit].append("Cleanup")
    return calls


CASES = [
    (state, unit)
    for state in ("Download", "ArtifactInstall", "ArtifactReboot", "ArtifactVerifyReboot",
                  "ArtifactCommit")
    for unit, need in UNITS
    if not (state == "ArtifactReboot" and need != "Yes")
    and not (state == "ArtifactVerifyReboot" and need == "No")
]


@pytest.fixture(scope="module")
def unit_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("unit-artifacts")
    payload = directory / "firmware.bin"
    payload.write_bytes(bytes(range(256)) * 64)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "unit", "-t", "a", "-t", "b", "-t",
         "c", "-n", "unit-v2", "--provides", "rootfs-image.unit.version:unit-v2", "-f",
         str(payload), "-o", str(directory / "unit-v2.mender")],
        check=True, capture_output=True,
    )
    payload.unlink()
    return directory


def three_groups(tmp_path: Path, artifacts: Path, rollback: bool) -> tuple[System, Path]:
    system = make_system(tmp_path / "system")
    system.add_interface("unit", SIMULATED_UNIT)
    answer = "Yes" if rollback else "No"
    system.write_topology(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n" + "".join(
            f"  - component_type: {unit}\n    interface: unit\n"
            f"    interface_args: ['1', '{need}', '{answer}']\n" for unit, need in UNITS))
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "InterfaceTimeoutSeconds": 20})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n" + "".join(
            f"  {unit}: {{artifact_name: unit-v2, update_strategy: {{order: {10 * (i + 1)}}}}}\n"
            for i, (unit, _) in enumerate(UNITS)))
    return system, manifest


def deploy(system: System, manifest: Path) -> subprocess.CompletedProcess[str]:
    """install, then resume after each system reboot, as a device would."""
    result = system.run("install", "--exit-on-reboot", str(manifest))
    while result.returncode == 4:
        result = system.run("resume", "--exit-on-reboot")
    return result


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "no-rollback"])
@pytest.mark.parametrize(("state", "failing"), CASES)
def test_failure_point(tmp_path: Path, unit_artifact: Path, state: str, failing: str,
                       rollback: bool) -> None:
    system, manifest = three_groups(tmp_path, unit_artifact, rollback)
    system.device(failing, "1").mkdir(parents=True)
    (system.device(failing, "1") / f"fail-{state}").touch()

    result = deploy(system, manifest)

    expected = expected_calls(state, failing, rollback)
    for unit, _ in UNITS:
        calls = system.calls(unit, "1")
        assert calls[:2] == PLANNING
        assert calls[2:] == expected[unit], (unit, result.stderr)
    installed = [unit for unit, calls in expected.items() if "ArtifactInstall" in calls]
    if rollback or not installed:
        assert result.returncode == 1, result.stderr
        assert "rolled back" in result.stderr
        for unit, _ in UNITS:
            assert system.version(unit, "1") == "factory"
    else:
        assert result.returncode == 3, result.stderr
        for unit in installed:
            assert f"{unit}/{unit}-1: does not support rollback" in result.stderr
    # the rollback path walks the groups from the highest that ran down to the lowest
    log = (system.devices / "calls").read_text().splitlines()
    failures = [line.split()[0] for line in log if line.endswith(" ArtifactFailure")]
    assert failures == [f"{u}-1" for u in reversed(installed)]


def test_no_system_reboot_rolls_back_an_install_that_never_rebooted(
    tmp_path: Path, unit_artifact: Path
) -> None:
    """b (Automatic) fails ArtifactInstall: the install path never rebooted the system, so
    the rollback path does not either, and verifies no rollback reboot."""
    system, manifest = three_groups(tmp_path, unit_artifact, rollback=True)
    system.device("b", "1").mkdir(parents=True)
    (system.device("b", "1") / "fail-ArtifactInstall").touch()
    result = system.run("install", "--exit-on-reboot", str(manifest))
    assert result.returncode == 1, result.stderr  # never 4: no reboot asked for
    assert system.calls("b", "1") == [
        *PLANNING, *DOWNLOAD, "SupportsRollback", "ArtifactInstall",
        "ArtifactRollback", "NeedsArtifactReboot", "ArtifactFailure", "Cleanup",
    ]
    assert system.calls("a", "1") == [
        *PLANNING, *install_calls("Yes"), "ArtifactRollback", "ArtifactRollbackReboot",
        "ArtifactVerifyRollbackReboot", "ArtifactFailure", "Cleanup",
    ]
    assert system.calls("c", "1") == PLANNING
    assert [system.version(u, "1") for u, _ in UNITS] == ["factory"] * 3


def test_a_hung_interface_is_killed_and_the_system_rolled_back(tmp_path: Path,
                                                               unit_artifact: Path) -> None:
    system, manifest = three_groups(tmp_path, unit_artifact, rollback=True)
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(unit_artifact)}],
                         "InterfaceTimeoutSeconds": 2})
    system.device("b", "1").mkdir(parents=True)
    (system.device("b", "1") / "hang-ArtifactInstall").touch()
    result = deploy(system, manifest)
    assert result.returncode == 1
    assert "ArtifactInstall ran longer than InterfaceTimeoutSeconds (2 s)" in result.stderr
    assert system.calls("b", "1")[2:] == expected_calls("ArtifactInstall", "b", True)["b"]
    assert [system.version(u, "1") for u, _ in UNITS] == ["factory"] * 3
    # the whole process group went: no `sleep 3600` of the hung Interface is left behind
    leftovers = subprocess.run(["pgrep", "-f", "sleep 3600"], capture_output=True, text=True,
                               check=False)
    assert leftovers.stdout == ""
