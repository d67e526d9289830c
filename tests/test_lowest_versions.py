"""support/lowest_versions.py: the floors come from the pyproject files, not from a list."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lowest_versions", REPO / "support" / "lowest_versions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dependency_of_every_distribution_is_pinned_to_its_floor() -> None:
    floors = load_script().collect_floors()
    expected: dict[str, str] = {}
    for path in [REPO / "pyproject.toml", *sorted(REPO.glob("drivers/*/pyproject.toml"))]:
        for line in tomllib.loads(path.read_text())["project"]["dependencies"]:
            req = Requirement(line)
            if not req.name.startswith("mender-orchestrator"):
                lower = next(s.version for s in req.specifier if s.operator == ">=")
                # two distributions may name one dependency: the higher floor holds
                known = expected.get(req.name.lower())
                if known is None or Version(lower) > Version(known):
                    expected[req.name.lower()] = lower
    assert floors == expected
    assert floors["pluggy"] == "1.4" and floors["can-isotp"] == "2.0.6"
    assert not any(name.startswith("mender-orchestrator") for name in floors)


def test_a_dependency_without_a_floor_is_a_one_line_error() -> None:
    script = load_script()
    with pytest.raises(SystemExit, match=r"^lowest_versions: x/pyproject.toml: requests<3: "
                                         r"expected one '>=' floor$"):
        script.floor_of(Requirement("requests<3"), Path("x/pyproject.toml"))
