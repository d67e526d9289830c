"""One orchestrator at a time, really (issue 10, section 3): every command that calls an
Interface holds the lock for as long as it does; ``install`` takes it before planning and
refuses at once, before any Interface call, when a deployment runs or is in progress.

The first command is held in the middle of an Interface call by a gate (unit_systems.py);
the Interfaces' own call log proves the second command asked nothing of any Component."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from systems import CLI, System
from unit_systems import all_calls, build_artifact, close_gate, unit_system, wait_at_gate

BUSY, NOTHING_TO_RESUME = 5, 6
DEPLOYING = "another mender-orchestrator is working on this System"
QUERY_REFUSED = "a deployment is running on this System right now"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("artifacts"), ["a", "b"])


@pytest.fixture
def two_groups(tmp_path: Path, artifacts: Path) -> tuple[System, Path]:
    return unit_system(tmp_path, artifacts, [("a", "No"), ("b", "No")])


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # a failed assertion must not leave a command waiting at a gate
        if process.poll() is None:
            process.kill()
            process.wait()


def start(system: System, started: list[subprocess.Popen[str]], *args: str
          ) -> subprocess.Popen[str]:
    process = subprocess.Popen([*CLI, *args], env=system.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    started.append(process)
    return process


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_install_refuses_while_a_query_calls_an_interface(
    two_groups: tuple[System, Path], tmp_path: Path,
    background: list[subprocess.Popen[str]],
) -> None:
    system, manifest = two_groups
    gate = close_gate(tmp_path, "Identity")
    inventory = start(system, background, "show-inventory")
    wait_at_gate(gate)
    before = all_calls(system)

    install = system.run("install", str(manifest))
    assert install.returncode == BUSY, install.stderr
    assert DEPLOYING in install.stderr
    assert "Traceback" not in install.stderr
    assert all_calls(system) == before  # no Identity, Provides, Download: nothing at all
    assert not (system.datastore / "journal.sqlite").exists()

    gate.unlink()
    code, out, err = finish(inventory)
    assert code == 0, err
    assert "a.a-1.rootfs-image.unit.version=factory" in out.splitlines()
    # the query over, the install goes ahead
    assert system.run("install", str(manifest)).returncode == 0
    assert (system.version("a", "1"), system.version("b", "1")) == ("unit-v2", "unit-v2")


def test_queries_run_side_by_side(
    two_groups: tuple[System, Path], tmp_path: Path,
    background: list[subprocess.Popen[str]],
) -> None:
    system, _ = two_groups
    gate = close_gate(tmp_path, "Inventory")
    inventory = start(system, background, "show-inventory")
    wait_at_gate(gate)
    provides = system.run("show-provides")
    assert provides.returncode == 0, provides.stderr
    assert "a.a-1.rootfs-image.unit.version=factory" in provides.stdout.splitlines()
    gate.unlink()
    assert finish(inventory)[0] == 0


def test_a_second_install_while_one_deploys_is_refused_at_once(
    two_groups: tuple[System, Path], tmp_path: Path,
    background: list[subprocess.Popen[str]],
) -> None:
    system, manifest = two_groups
    gate = close_gate(tmp_path, "ArtifactInstall")
    first = start(system, background, "install", str(manifest))
    wait_at_gate(gate)
    before = all_calls(system)

    second = system.run("install", str(manifest))
    assert second.returncode == BUSY, second.stderr
    assert DEPLOYING in second.stderr
    for query in ("show-provides", "show-inventory", "plan"):
        args = [query, str(manifest)] if query == "plan" else [query]
        refused = system.run(*args)
        assert refused.returncode == BUSY, (query, refused.stderr)
        assert QUERY_REFUSED in refused.stderr
        assert refused.stdout == ""
    for command in ("resume", "rollback"):
        refused = system.run(command)
        assert refused.returncode == BUSY, (command, refused.stderr)
        assert DEPLOYING in refused.stderr
    assert all_calls(system) == before

    gate.unlink()
    code, _, err = finish(first)
    assert code == 0, err
    assert [line for line in all_calls(system) if line.startswith("a-1 ")] == [
        "a-1 Identity", "a-1 Provides", "a-1 NeedsUnpackedArtifact",
        "a-1 ProvidePayloadFileSizes", "a-1 Download", "a-1 SupportsRollback",
        "a-1 ArtifactInstall", "a-1 NeedsArtifactReboot", "a-1 ArtifactCommit", "a-1 Cleanup",
    ]


def test_install_refuses_before_planning_while_a_deployment_is_in_progress(
    two_groups: tuple[System, Path],
) -> None:
    system, manifest = two_groups
    stopped = system.run("install", "--stop-before", "ArtifactCommit", str(manifest))
    assert stopped.returncode == 0, stopped.stderr
    before = all_calls(system)

    again = system.run("install", str(manifest))
    assert again.returncode == BUSY, again.stderr
    assert ("deployment 1 of s-v2 is still in progress; finish it with "
            "'mender-orchestrator resume' or 'rollback' first") in again.stderr
    assert all_calls(system) == before  # not planned: no Component was asked anything

    assert system.run("resume").returncode == 0
    nothing = system.run("resume")
    assert nothing.returncode == NOTHING_TO_RESUME
    assert "nothing to resume" in nothing.stderr
