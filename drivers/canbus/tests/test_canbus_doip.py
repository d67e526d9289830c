"""UDS over DoIP (ISO 13400-2): the driver through a simulated DoIP gateway on 127.0.0.1 with
two ECUs behind it, through the hook path (``Harness``), in parallel, and refused."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from canbus_helpers import (
    BANK,
    OLD_VERSION,
    QUICK_ECU,
    Harness,
    Outcome,
    Reports,
    after,
    pseudo_random,
)
from orchestrator_core.context import Component
from orchestrator_core.errors import InterfaceError, InterfaceTimeout

from mender_orchestrator_canbus.simulator import Ecu, Faults, FlashStore
from mender_orchestrator_canbus.simulator.gateway import DoipGateway

ADDRESSES = (0x0201, 0x0202)
VIN = "MORCSIMULATEDCAR1"
FLASHED = ["download", "artifact_install", "artifact_reboot", "artifact_verify_reboot",
           "artifact_commit", "cleanup"]  # fmt: skip


@dataclass
class Vehicle:
    gateway: DoipGateway
    states: dict[int, Path]

    def args(self, address: int, *extra: str) -> tuple[str, ...]:
        return ("--transport=doip", "--host=127.0.0.1", f"--port={self.gateway.port}",
                f"--logical-address={address:#06x}", f"--memory-size={BANK:#x}",
                "--p2-timeout=0.5", "--p2-star-timeout=2", "--reset-wait=1.5", *extra)  # fmt: skip

    def booting(self, address: int) -> bytes:
        store = FlashStore(self.states[address])
        return store.read(store.layout.boot_bank, 0, BANK)


@pytest.fixture
def vehicle(tmp_path: Path) -> Iterator[Vehicle]:
    ecus, states = {}, {}
    for address in ADDRESSES:
        state = tmp_path / f"ecu-{address:04x}.json"
        FlashStore.create(state, banks=2, bank_size=BANK, serial=f"SIM-DOIP-{address:04X}",
                          version=OLD_VERSION, image=pseudo_random("initial", 12000))  # fmt: skip
        ecus[address] = Ecu(FlashStore(state), QUICK_ECU, Faults())
        states[address] = state
    with DoipGateway(ecus, vin=VIN) as gateway:
        yield Vehicle(gateway, states)


def harness(vehicle: Vehicle, address: int, tmp_path: Path, *extra: str) -> Harness:
    component = Component(
        f"ecu_{address:04x}", "canbus", vehicle.args(address, "--banks=2", *extra)
    )
    return Harness(component, tmp_path / f"{address:04x}", timeout=20)


def test_an_ecu_behind_the_gateway_is_updated_over_doip(vehicle: Vehicle, tmp_path: Path) -> None:
    h = harness(vehicle, 0x0201, tmp_path, f"--vin={VIN}")
    image = pseudo_random("doip-2.0.0", 30000)

    outcome = h.deploy(image, "doip-2.0.0")

    assert outcome.failure is None, outcome.failure
    assert outcome.states == FLASHED
    assert vehicle.booting(0x0201) == image + b"\xff" * (BANK - len(image))
    assert h.query("provides") == {"rootfs-image.canbus.version": "doip-2.0.0"}
    assert FlashStore(vehicle.states[0x0202]).layout.banks[0].version == OLD_VERSION


def test_two_ecus_behind_one_gateway_share_one_connection_in_parallel(
    vehicle: Vehicle, tmp_path: Path
) -> None:
    """As the engine runs Components of one order group: each state of both at once, in
    threads of one process; one TCP connection to the gateway carries both."""
    harnesses = {address: harness(vehicle, address, tmp_path) for address in ADDRESSES}
    images = {address: pseudo_random(f"doip-{address}", 40000) for address in ADDRESSES}
    for address, h in harnesses.items():
        h.component_id = h.query("identity")
        h.work_dir.mkdir(parents=True, mode=0o700)
        h.stage(images[address], f"doip-{address:04x}")
    outcomes = {address: Outcome() for address in ADDRESSES}
    for state in ("artifact_install", "artifact_reboot", "artifact_verify_reboot"):
        errors: list[BaseException] = []

        def run(address: int, state: str = state, errors: list[BaseException] = errors) -> None:
            try:
                harnesses[address].state(state, outcomes[address])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(a,)) for a in ADDRESSES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors

    for address in ADDRESSES:
        assert vehicle.booting(address) == images[address] + b"\xff" * (BANK - 40000)
    shared = [t for t in vehicle.gateway.testers if t.targets == set(ADDRESSES)]
    assert shared, "no connection carried both ECUs' requests"


@pytest.mark.parametrize(
    ("address", "extra", "expected"),
    [
        (0x0299, (), "ecu_0299[0] (interface canbus): ReadDataByIdentifier 0xf18c (0x22): the "
         "DoIP entity refused the diagnostic message for 0x0299: NACK 0x03 UnknownTargetAddress"),
        (0x0201, ("--tester-address=0x0100",), "refused routing activation (type 0x00, tester "
         "address 0x0100): response code 0x00 DeniedUnknownSourceAddress"),
        (0x0201, ("--activation-type=0x05",), "refused routing activation (type 0x05, tester "
         "address 0x0e00): response code 0x06 DeniedUnsupportedActivationType"),
        (0x0201, ("--vin=WRONGVEHICLE00000",), "belongs to the vehicle 'MORCSIMULATEDCAR1', "
         "not --vin=WRONGVEHICLE00000"),
    ],
)  # fmt: skip
def test_the_gateway_refusing_is_reported(
    vehicle: Vehicle, tmp_path: Path, address: int, extra: tuple[str, ...], expected: str
) -> None:
    h = harness(vehicle, address, tmp_path, *extra)
    with pytest.raises(InterfaceError) as raised:
        h.query("identity")
    assert expected in raised.value.message


def test_a_silent_ecu_behind_the_gateway_is_named_by_its_address(tmp_path: Path) -> None:
    state = tmp_path / "dead.json"
    FlashStore.create(state, banks=1, bank_size=BANK, serial="SIM-DEAD", version=OLD_VERSION,
                      image=pseudo_random("initial", 1000))  # fmt: skip
    dead = Ecu(FlashStore(state), QUICK_ECU, Faults.parse(["never-answer"]))
    with DoipGateway({0x0203: dead}) as gateway:
        component = Component("ecu", "canbus", ("--transport=doip", "--host=127.0.0.1",
                              f"--port={gateway.port}", "--logical-address=0x0203",
                              "--p2-timeout=0.2"))  # fmt: skip
        h = Harness(component, tmp_path, timeout=5)
        with pytest.raises(InterfaceError) as raised:
            h.query("identity")
    assert raised.value.message.startswith(
        "ecu[0] (interface canbus): ReadDataByIdentifier 0xf18c (0x22): no answer from the ECU "
        f"(DoIP entity 127.0.0.1:{gateway.port}, logical address 0x0203): "
    )


def test_an_ecu_dying_behind_the_gateway_mid_transfer_ends_the_state_at_its_deadline(
    vehicle: Vehicle, tmp_path: Path
) -> None:
    """After two TransferData blocks the ECU behind the gateway goes silent for good (the
    gateway still acknowledges each request). 50 retries of P2 would outlast the hook's 3 s:
    the deadline ends the state, naming the block."""
    h = harness(vehicle, 0x0201, tmp_path, "--retries=50")
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(pseudo_random("doip-dies", 40000), "doip-dies")
    ecu = vehicle.gateway.ecus[0x0201]
    h.progress = Reports(lambda count: count == 2 and setattr(ecu, "dead", True))
    h.timeout = 3
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout) as raised:
        h.state("artifact_install", Outcome())

    assert time.monotonic() - started < 3 + 1
    assert re.fullmatch(
        r"ecu_0201/SIM-DOIP-0201 \(interface canbus\): the Interface timeout expired during "
        r"TransferData \(0x36\) block 3 of 10, counter 0x03",
        raised.value.message,
    ), raised.value.message


def test_a_gateway_dropping_the_connection_mid_transfer_fails_the_state_at_once(
    vehicle: Vehicle, tmp_path: Path
) -> None:
    """The gateway closes the TCP connection after two blocks: no retry can get through a
    closed connection, so the state fails at once, naming the block and why."""
    h = harness(vehicle, 0x0201, tmp_path, "--retries=50")
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(pseudo_random("doip-dropped", 40000), "doip-dropped")
    h.progress = after(2, vehicle.gateway.drop_connections)
    started = time.monotonic()

    with pytest.raises(InterfaceError) as raised:
        h.state("artifact_install", Outcome())

    assert time.monotonic() - started < 10  # the hook's 20 s were not needed
    assert re.fullmatch(
        r"ecu_0201/SIM-DOIP-0201 \(interface canbus\): TransferData \(0x36\) block [34] of "
        r"10, counter 0x0[34]: .*the DoIP entity closed the connection.*",
        raised.value.message,
    ), raised.value.message


def test_no_gateway_listening_is_reported_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    component = Component("ecu", "canbus", ("--transport=doip", "--host=127.0.0.1",
                                            f"--port={port}", "--logical-address=0x0201"))  # fmt: skip
    h = Harness(component, tmp_path, timeout=5)
    with pytest.raises(InterfaceError, match=rf"ecu\[0\] \(interface canbus\): cannot reach the "
                                             rf"DoIP entity 127.0.0.1:{port}: .*refused"):  # fmt: skip
        h.query("identity")
