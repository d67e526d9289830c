"""Fixtures: ``start_ecu`` runs the ECU simulator on a fresh python-can ``virtual`` bus in a
thread; ``harness`` drives a canbus Component through the engine's call sequence."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canbus_helpers import BANK, OLD_VERSION, QUICK_ECU, SERIAL, Harness, SimEcu, pseudo_random
from orchestrator_core.context import Component

from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import Ecu, EcuConfig, EcuServer, Faults, FlashStore


@pytest.fixture
def start_ecu(tmp_path: Path) -> Iterator[Callable[..., SimEcu]]:
    servers: list[EcuServer] = []

    def start(
        *,
        banks: int = 1,
        faults: tuple[str, ...] = (),
        config: EcuConfig = QUICK_ECU,
        link: LinkSettings | None = None,
        state: Path | None = None,
    ) -> SimEcu:
        if link is None:
            link = LinkSettings(interface="virtual", channel=f"canbus-test-{uuid.uuid4().hex}")
        image = pseudo_random("initial", 12000)
        if state is None:
            state = tmp_path / f"ecu-{len(servers)}.json"
            FlashStore.create(
                state, banks=banks, bank_size=BANK, serial=SERIAL, version=OLD_VERSION, image=image
            )
        ecu = Ecu(FlashStore(state), config, Faults.parse(faults))
        server = EcuServer(link.mirrored(), ecu)
        server.start()
        servers.append(server)
        return SimEcu(state, ecu, server, link, image)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Callable[..., Harness]:
    def make(ecu: SimEcu, *extra: str, timeout: float = 30.0) -> Harness:
        component = Component("ecu_brake", "canbus", ecu.driver_args(*extra))
        return Harness(component, tmp_path, timeout)

    return make
