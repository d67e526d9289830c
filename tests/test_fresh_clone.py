"""The README's two commands in a fresh clone, as a newcomer runs them.

The full run is slow and optional: it clones the repository's committed state (HEAD) into a
temporary directory, where ``make demo`` and ``make test`` each build ``.venv`` from nothing
(pip downloads from PyPI) and ``make test`` runs the whole suite once more. It runs only with
MENDER_ORCHESTRATOR_FRESH_CLONE=1 (``.ci/run`` sets it after ``make test``); inside the clone
the variable is removed, so the clone's own suite skips it. The clone has nothing beside it:
the repository must test alone. A quick check of the same (a clone collects every test and
reads the Artifacts it builds) and of the README's package list always runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systems import REPO

ENABLE = "MENDER_ORCHESTRATOR_FRESH_CLONE"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def clone_alone(tmp_path: Path) -> Path:
    """HEAD cloned into an empty directory: nothing lies beside it."""
    clone = tmp_path / "mender-orchestrator"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
                   check=True, capture_output=True, timeout=300)
    assert [path.name for path in tmp_path.iterdir()] == [clone.name]
    return clone


def apt_packages(text: str) -> list[str]:
    """The packages of the (first) ``apt-get install`` command in ``text``."""
    joined = text.replace("\\\n", " ")
    found = re.search(r"apt-get install((?: +[-a-z0-9.+]+)+)", joined)
    assert found is not None, "no apt-get install command"
    return [word for word in found.group(1).split() if not word.startswith("-")]


def newcomer_env(home: Path) -> dict[str, str]:
    """A shell as a newcomer has it: none of this session's venv or orchestrator settings."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and not (venv and entry.startswith(venv)) and ".venv" not in entry]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MENDER_ORCHESTRATOR", "PYTEST", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=os.pathsep.join(path), HOME=str(home))
    return env


def test_the_readme_names_the_packages_ci_installs() -> None:
    readme = apt_packages((REPO / "README.md").read_text())
    assert {"python3", "python3-venv", "make", "mender-artifact"} <= set(readme)
    assert readme == apt_packages((REPO / ".ci" / "run").read_text())


@needs_git
def test_a_clone_alone_collects_and_builds_its_artifacts(tmp_path: Path) -> None:
    clone = clone_alone(tmp_path)
    # the clone's own code first on the path (python -m puts the working directory there)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    pytest_in_clone = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    collected = subprocess.run([*pytest_in_clone, "--collect-only", "tests"], cwd=clone,
                               env=env, capture_output=True, text=True, timeout=600, check=False)
    assert collected.returncode == 0, collected.stdout[-4000:] + collected.stderr[-4000:]
    upstream = subprocess.run(
        [*pytest_in_clone, "tests/artifact/test_artifact_reader.py", "-k", "upstream"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert upstream.returncode == 0, upstream.stdout[-4000:] + upstream.stderr[-4000:]
    assert "2 passed" in upstream.stdout


@needs_git
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.skipif(os.environ.get(ENABLE) != "1",
                    reason=f"slow (builds a venv from nothing, needs PyPI); set {ENABLE}=1")
@pytest.mark.timeout(3600)
def test_the_readme_commands_work_in_a_fresh_clone(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## The two commands.*?```\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md has no code block under '## The two commands'"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()
                if line.strip()]
    assert commands == ["make demo", "make test"]

    clone = clone_alone(tmp_path)
    env = newcomer_env(tmp_path)
    for command in commands:
        result = subprocess.run(command.split(), cwd=clone, env=env, capture_output=True,
                                text=True, timeout=3000, check=False)
        assert result.returncode == 0, (
            f"'{command}' failed with status {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        if command == "make demo":
            assert "Every step did what it should" in result.stdout
