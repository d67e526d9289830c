"""Fixtures for the mcuboot driver's tests; the helpers live in mcuboot_helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcuboot_helpers import Sim, System


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    device = Sim(tmp_path / "device.json")
    device.start()
    yield device
    device.stop()


@pytest.fixture
def system(tmp_path: Path, sim: Sim) -> System:
    return System(tmp_path / "system", sim.udp_args())
