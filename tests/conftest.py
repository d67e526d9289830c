"""Fixtures shared by the core's tests; the helpers themselves live in systems.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import demo_artifacts
import pytest
from systems import FIXTURES, System, make_system


def pytest_configure(config: pytest.Config) -> None:
    # before collection: some test modules read an Artifact header at import
    demo_artifacts.build(FIXTURES)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(FIXTURES, ignore_errors=True)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    yield make_system(tmp_path / "system")
