"""Every check of ``mender-orchestrator check-interface`` on the canbus driver and a dual-bank
simulated ECU, through the core's pytest plugin (one line: the ``mender_interface`` marker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from canbus_helpers import SimEcu, pseudo_random


@pytest.fixture
def ecu(start_ecu: Callable[..., SimEcu]) -> SimEcu:
    return start_ecu(banks=2)


pytestmark = pytest.mark.mender_interface(
    "canbus",
    component_type="ecu_brake",
    args=lambda ecu: list(ecu.driver_args()),
    artifacts=lambda artifact_factory: [
        artifact_factory(
            "9.0.0",
            payload_type="canbus",
            component_type="ecu_brake",
            files={"ecu.bin": pseudo_random("new", 12000)},
        ).path
    ],
)
