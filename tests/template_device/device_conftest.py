"""The file-backed device of tests/template_device/driver.py, version 1.0 installed."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "device"
    path.mkdir()
    (path / "id").write_text("FILE-7\n")
    (path / "image").write_bytes(b"image 1.0")
    (path / "image.version").write_text("1.0")
    return path


@pytest.fixture
def device_args(device: Path) -> list[str]:
    return [f"--device={device}"]
