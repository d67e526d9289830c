"""Fixtures for the esp32 driver's tests; the helpers live in esp32_helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from esp32_helpers import Sim, create_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    """A chip running app 1.0.0 from ota_0, served on a pty for the test's duration."""
    device = create_sim(tmp_path)
    device.start()
    yield device
    device.stop()
