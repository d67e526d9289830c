"""Every check of ``mender-orchestrator check-interface`` on the canbus driver in DoIP mode
(``--transport=doip``): a dual-bank ECU behind the simulated DoIP gateway on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from canbus_helpers import BANK, OLD_VERSION, QUICK_ECU, SERIAL, pseudo_random

from mender_orchestrator_canbus.simulator import Ecu, Faults, FlashStore
from mender_orchestrator_canbus.simulator.gateway import DoipGateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[DoipGateway]:
    state = tmp_path / "ecu.json"
    FlashStore.create(state, banks=2, bank_size=BANK, serial=SERIAL, version=OLD_VERSION,
                      image=pseudo_random("initial", 12000))  # fmt: skip
    with DoipGateway({0x0201: Ecu(FlashStore(state), QUICK_ECU, Faults())}) as running:
        yield running


pytestmark = pytest.mark.mender_interface(
    "canbus",
    component_type="ecu_brake",
    args=lambda gateway: ["--transport=doip", "--host=127.0.0.1", f"--port={gateway.port}",
                          "--logical-address=0x0201", "--banks=2", f"--memory-size={BANK:#x}",
                          "--p2-timeout=0.5", "--p2-star-timeout=2", "--reset-wait=1.5"],
    artifacts=lambda artifact_factory: [
        artifact_factory("9.0.0", payload_type="canbus", component_type="ecu_brake",
                         files={"ecu.bin": pseudo_random("new", 12000)}).path
    ],
)  # fmt: skip
