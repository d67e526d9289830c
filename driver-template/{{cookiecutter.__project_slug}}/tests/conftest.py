"""The device the tests run against: the one place that knows what the device is.

When you replace the stand-in ``Device`` of ``{{ cookiecutter.package_name }}/driver.py`` with
your real transport, replace ``device`` with your simulator or test rig (a fixture that yields
it ready, with some version installed and running) and ``device_args`` with the
``interface_args`` that reach it. The tests themselves only talk the Interface protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """The stand-in device (a directory), with version 1.0 installed and running."""
    path = tmp_path / "device"
    path.mkdir()
    (path / "serial").write_text("SN-0001\n")
    (path / "firmware.bin").write_bytes(b"old firmware")
    (path / "version").write_text("1.0\n")
    (path / "running").write_text("1.0\n")
    return path


@pytest.fixture
def device_args(device: Path) -> list[str]:
    """The Topology's ``interface_args`` for ``device``."""
    return [f"--device={device}"]
