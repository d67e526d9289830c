"""Every check of ``mender-orchestrator check-interface`` on the esp32 driver and its simulator,
through the core's pytest plugin (the ``mender_interface`` marker)."""

from __future__ import annotations

import pytest
from esp32_helpers import component_args, make_image

pytestmark = pytest.mark.mender_interface(
    "esp32",
    component_type="door_lock",
    args=lambda sim: component_args(sim),
    artifacts=lambda artifact_factory: [
        artifact_factory("9.0.0", payload_type="esp32", component_type="door_lock",
                         files={"door-lock.bin": make_image("9.0.0")}).path,
        artifact_factory("1.0.0", payload_type="esp32", component_type="door_lock",
                         files={"door-lock.bin": make_image("1.0.0", seed=1)}).path,
    ],
)  # fmt: skip
