"""Every check of ``mender-orchestrator check-interface`` on the mcuboot driver and its
simulator over UDP, through the core's pytest plugin (the ``mender_interface`` marker)."""

from __future__ import annotations

import pytest
from mcuboot_helpers import body

pytestmark = pytest.mark.mender_interface(
    "mcuboot",
    component_type="sensor_mcu",
    args=lambda sim: list(sim.udp_args()),
    artifacts=lambda artifact_factory, sim: [
        artifact_factory("9.0.0", payload_type="mcuboot", component_type="sensor_mcu",
                         files={"sensor.signed.bin": sim.sign("9.0.0", body(9000, 9))}).path
    ],
)
