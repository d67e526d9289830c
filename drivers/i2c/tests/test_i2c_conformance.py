"""Every check of ``mender-orchestrator check-interface`` on the i2c driver and its simulator,
through the core's pytest plugin (one line: the ``mender_interface`` marker)."""

from __future__ import annotations

import struct

import pytest
from i2c_helpers import component_args

# an STM32 image the driver accepts: initial stack pointer in SRAM, reset handler in flash
VECTORS = struct.pack("<II", 0x2000_2000, 0x0800_0101)

pytestmark = pytest.mark.mender_interface(
    "i2c",
    component_type="seat_heating",
    args=lambda sim: list(component_args(sim)),
    artifacts=lambda artifact_factory: [
        artifact_factory("9.0.0", payload_type="i2c", component_type="seat_heating",
                         files={"seat.bin": VECTORS + b"seat 9.0.0" * 400}).path
    ],
)
