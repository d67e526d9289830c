"""Every check of ``mender-orchestrator check-interface`` on the esp32 driver with
``--chip=esp32s2`` against a simulated ESP32-S2: told by its magic value, flashed through
esptool's stub, its app started by its RTC watchdog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from esp32_helpers import Sim, component_args, create_sim, make_image

S2_CHIP_ID = 2  # esp_image_header_t.chip_id of an ESP32-S2 app


@pytest.fixture
def s2_sim(tmp_path: Path) -> Iterator[Sim]:
    device = create_sim(tmp_path, model="esp32s2")
    device.start()
    yield device
    device.stop()


pytestmark = pytest.mark.mender_interface(
    "esp32",
    component_type="door_lock",
    args=lambda s2_sim: component_args(s2_sim, "--chip=esp32s2", "--after=watchdog-reset"),
    artifacts=lambda artifact_factory: [
        artifact_factory("9.0.0", payload_type="esp32", component_type="door_lock",
                         files={"door-lock.bin": make_image("9.0.0", chip_id=S2_CHIP_ID)}).path,
        artifact_factory("1.0.0", payload_type="esp32", component_type="door_lock",
                         files={"door-lock.bin": make_image("1.0.0", seed=1,
                                                            chip_id=S2_CHIP_ID)}).path,
    ],
)  # fmt: skip
