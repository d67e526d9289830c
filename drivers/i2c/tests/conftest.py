"""Fixtures for the i2c driver's tests; the helpers live in i2c_helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from i2c_helpers import Runner, Sim, component_args, fast_chip
from orchestrator_core.context import Component

from mender_orchestrator_i2c.simulator import Device


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    path = tmp_path / "stm32.bin"
    Device.create(path, fast_chip())
    return Sim(path)


@pytest.fixture
def runner_for(tmp_path: Path) -> Callable[..., Runner]:
    def make(sim: Sim, *extra: str, plugins: Iterable[object] = (), timeout: float = 60) -> Runner:
        component = Component("seat_heating", "i2c", component_args(sim, *extra))
        return Runner(component, tmp_path / "data", tmp_path / "work", plugins, timeout)

    return make


@pytest.fixture(autouse=True)
def private_datastore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The driver keeps its host records in the orchestrator's datastore: each test gets its
    own, never the machine's /var/lib/mender-orchestrator."""
    datastore = tmp_path / "datastore"
    monkeypatch.setenv("MENDER_ORCHESTRATOR_DATASTORE_DIR", str(datastore))
    return datastore
