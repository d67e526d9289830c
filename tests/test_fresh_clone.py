"""The README's two commands in a fresh clone, as a newcomer runs them.

Slow and optional: it clones the repository's committed state (HEAD) into a temporary
directory, where ``make demo`` and ``make test`` each build ``.venv`` from nothing (pip
downloads from PyPI) and ``make test`` runs the whole suite once more. It runs only with
MENDER_ORCHESTRATOR_FRESH_CLONE=1 (``.ci/run`` sets it after ``make test``); inside the clone
the variable is removed, so the clone's own suite skips this test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from systems import REPO

ENABLE = "MENDER_ORCHESTRATOR_FRESH_CLONE"

pytestmark = [
    pytest.mark.skipif(os.environ.get(ENABLE) != "1",
                       reason=f"slow (builds a venv from nothing, needs PyPI); set {ENABLE}=1"),
    pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                       reason="needs git and make"),
    pytest.mark.timeout(3600),
]


def newcomer_env(home: Path) -> dict[str, str]:
    """A shell as a newcomer has it: none of this session's venv or orchestrator settings."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and not (venv and entry.startswith(venv)) and ".venv" not in entry]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MENDER_ORCHESTRATOR", "PYTEST", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=os.pathsep.join(path), HOME=str(home))
    return env


def test_the_readme_commands_work_in_a_fresh_clone(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## The two commands.*?```\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md has no code block under '## The two commands'"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()
                if line.strip()]
    assert commands == ["make demo", "make test"]

    clone = tmp_path / "mender-orchestrator"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
                   check=True, capture_output=True, timeout=300)
    # as in CI and on a developer's machine, shared/ (the fixtures) lies beside the clone
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
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
