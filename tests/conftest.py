"""Fixtures shared by the core's tests; the helpers themselves live in systems.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from systems import System, make_system


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    yield make_system(tmp_path / "system")
