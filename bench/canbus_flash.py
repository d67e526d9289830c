"""Benchmark: flash 256 KiB with the canbus driver over each transport, next to its limit.

Everything runs in this process; the driver is called through ``orchestrator_core.drivers.load``
(entry point, ComponentDriver) for ``artifact_install`` on a dual-bank simulated ECU (erase,
RequestDownload, TransferData blocks, RequestTransferExit, version, check). The figure is the
TransferData phase the driver logs.

* classic CAN, 500 kbit/s: the ``paced`` bus (frames take their time on the wire, the sender
  has socketcan's 10-frame transmit queue and gets ENOBUFS when it is full), next to the link's
  computed limit: ISO-TP consecutive frames back to back with typical bit stuffing
  (``mender_orchestrator_canbus.timing``), about 28 KiB/s. Target: at least 90%.
  Then the same with ``--max-bus-load=50``: the share of the wire the tester's frames took in
  any second, measured on the paced wire, stays at or below half.
* CAN FD, 500 kbit/s arbitration / 2 Mbit/s data: the same, next to about 170 KiB/s.
* DoIP on 127.0.0.1: through the simulated gateway, next to a raw TCP transfer of the same
  bytes over 127.0.0.1 (no DoIP, no UDS).
* Python overhead: on an unpaced ``virtual`` bus nothing but Python limits the rate; the
  driver next to a raw can-isotp transfer of the same blocks shows what UDS and the driver add.

Run: ``.venv/bin/python bench/canbus_flash.py`` (after ``pip install -e drivers/canbus``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import isotp
from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import Ecu, EcuConfig, EcuServer, Faults, FlashStore
from mender_orchestrator_canbus.simulator.gateway import DoipGateway
from mender_orchestrator_canbus.simulator.pacedbus import Wire
from mender_orchestrator_canbus.timing import isotp_limit

from orchestrator_core.context import ArtifactInfo, Component
from orchestrator_core.drivers import load

SIZE = 256 * 1024
BLOCK = 4095 - 2  # data per TransferData block: maxNumberOfBlockLength minus SID and counter
ROUNDS = 3  # best of, for the quick transports; the paced classic bus runs once (10 s)
QUICK_ECU = EcuConfig(erase_time=0.001, check_time=0.001)
Serve = Callable[[Ecu], Iterator[tuple[str, ...]]]  # runs the ECU, yields the driver's args


def raw_isotp(data: bytes) -> float:
    """Seconds to move ``data`` one way over can-isotp in ``BLOCK``-sized PDUs."""
    link = LinkSettings(interface="virtual", channel=f"bench-raw-{uuid.uuid4().hex}")
    ends = []
    for side in (link, link.mirrored()):
        bus = side.open_bus()
        stack = isotp.CanStack(
            bus, address=side.isotp_address(),
            params=side.isotp_params(timeout=1.0, max_frame_size=0xFFFF, logger="bench.isotp"),
            read_timeout=0.01,
        )  # fmt: skip
        stack.start()
        ends.append((bus, stack))
    received: list[bytes] = []

    def receive() -> None:
        total = 0
        while total < len(data):
            pdu = ends[1][1].recv(block=True, timeout=2)
            if pdu is None:
                raise RuntimeError("raw transfer stalled")
            received.append(bytes(pdu))
            total += len(pdu)

    receiver = threading.Thread(target=receive)
    receiver.start()
    started = time.perf_counter()
    for offset in range(0, len(data), BLOCK):
        ends[0][1].send(data[offset : offset + BLOCK])
    receiver.join()
    elapsed = time.perf_counter() - started
    for bus, stack in ends:
        stack.stop()
        bus.shutdown()
    assert b"".join(received) == data
    return elapsed


def raw_tcp(data: bytes, block: int | None = None) -> float:
    """Seconds to move ``data`` one way over a TCP connection on 127.0.0.1: one stream, or
    ``block``-sized messages each answered with 2 bytes before the next (TransferData's
    request/answer rhythm without DoIP or UDS)."""
    step = block or len(data)
    with socket.create_server(("127.0.0.1", 0)) as server:
        got = bytearray()

        def receive() -> None:
            connection, _ = server.accept()
            with connection:
                while len(got) < len(data):
                    wanted = min(len(got) + step, len(data))
                    while len(got) < wanted:
                        got.extend(connection.recv(wanted - len(got)))
                    if block:
                        connection.sendall(b"\x76\x01")

        receiver = threading.Thread(target=receive)
        receiver.start()
        started = time.perf_counter()
        with socket.create_connection(server.getsockname()) as sender:
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for offset in range(0, len(data), step):
                sender.sendall(data[offset : offset + step])
                if block:
                    sender.recv(2)
            receiver.join()
        elapsed = time.perf_counter() - started
    assert bytes(got) == data
    return elapsed


class _TransferRate(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"\(([\d.]+) KiB/s\)", record.getMessage())
        if found:
            self.rates.append(float(found.group(1)))


def driver_install(data: bytes, directory: Path, serve: Serve) -> float:
    """KiB/s of the TransferData phase of one ``artifact_install`` of ``data``."""
    state = directory / f"ecu-{uuid.uuid4().hex}.json"
    FlashStore.create(
        state, banks=2, bank_size=SIZE, serial="BENCH", version="v1", image=b"\x00" * 1024
    )
    ecu = Ecu(FlashStore(state), QUICK_ECU, Faults())
    work = directory / f"work-{uuid.uuid4().hex}"
    (work / "files").mkdir(parents=True)
    (work / "files" / "image.bin").write_bytes(data)
    log = logging.getLogger("bench")
    rate = _TransferRate()
    log.addHandler(rate)
    log.setLevel(logging.INFO)
    log.propagate = False
    for args in serve(ecu):
        component = Component("ecu", "canbus", (*args, "--banks=2", f"--memory-size={SIZE:#x}"))
        driver = load(component, directory)
        ctx = driver.context(
            log=log, timeout_seconds=600, component_id="BENCH", work_dir=work,
            artifact=ArtifactInfo(name="v2", group=None, payload_type="canbus"),
        )  # fmt: skip
        driver.run_state("artifact_install", ctx)
    assert FlashStore(state).read(1, 0, SIZE) == data
    log.removeHandler(rate)
    return rate.rates[-1]


WIRES: list[Wire] = []  # the paced runs' wires, the last one's figures printed after its line
TESTER_ID = 0x7E0


def wire_detail(wire: Wire) -> str:
    """What the tester's frames took of the paced wire, measured on it."""
    highest, _mean = wire.load(TESTER_ID, window=1.0)
    return (
        f"    ({wire.frames} frames on the wire, {wire.refused} sends refused: ENOBUFS; "
        f"the tester's frames took up to {100 * highest:.0f}% of the wire in a second)"
    )


def can_bus(
    interface: str,
    bitrate: int | None = None,
    data_bitrate: int | None = None,
    extra: tuple[str, ...] = (),
) -> Serve:
    @contextmanager
    def running(ecu: Ecu) -> Iterator[tuple[str, ...]]:
        name = f"bench-{uuid.uuid4().hex}"
        channel = f"virtual:{name}" if interface == "paced" else name
        link = LinkSettings(interface=interface, channel=channel, bitrate=bitrate,
                            fd=data_bitrate is not None, data_bitrate=data_bitrate)  # fmt: skip
        args = [f"--interface={interface}", f"--channel={channel}"]
        if bitrate is not None:
            args.append(f"--bitrate={bitrate}")
        if data_bitrate is not None:
            args.append(f"--data-bitrate={data_bitrate}")
        args.extend(extra)
        with EcuServer(link.mirrored(), ecu):
            yield tuple(args)
        if interface == "paced":
            WIRES.append(Wire.get(channel))

    def serve(ecu: Ecu) -> Iterator[tuple[str, ...]]:
        with running(ecu) as args:
            yield args

    return serve


def doip(ecu: Ecu) -> Iterator[tuple[str, ...]]:
    with DoipGateway({0x0201: ecu}) as gateway:
        yield ("--transport=doip", "--host=127.0.0.1", f"--port={gateway.port}",
               "--logical-address=0x0201")  # fmt: skip


def best(rounds: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(rounds))


def report(label: str, rate: float, note: str) -> None:
    print(f"{label:<48} {rate:7.1f} KiB/s, {note}")


def main() -> None:
    data = os.urandom(SIZE)
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch)
        print(f"payload: {SIZE // 1024} KiB in {BLOCK}-byte TransferData blocks, dual-bank ECU; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip

        limit = isotp_limit(fd=False, bitrate=500_000) / 1024
        rate = driver_install(data, where, can_bus("paced", 500_000))
        note = f"{100 * rate / limit:.0f}% of the link's {limit:.1f} KiB/s (target >= 90%)"
        report("classic CAN 500 kbit/s (paced, 10-frame queue):", rate, note)
        print(wire_detail(WIRES[-1]))

        capped = ("--max-bus-load=50",)
        rate = driver_install(data, where, can_bus("paced", 500_000, extra=capped))
        report("  the same with --max-bus-load=50:", rate,
               f"{100 * rate / limit:.0f}% of the link's {limit:.1f} KiB/s")  # fmt: skip
        print(wire_detail(WIRES[-1]))

        limit = isotp_limit(fd=True, bitrate=500_000, data_bitrate=2_000_000) / 1024
        fd = can_bus("paced", 500_000, 2_000_000)
        rate = best(ROUNDS, lambda: driver_install(data, where, fd))
        report("CAN FD 500k/2M (paced, 10-frame queue):", rate,
               f"{100 * rate / limit:.0f}% of the link's {limit:.1f} KiB/s")  # fmt: skip
        print(wire_detail(WIRES[-1]))

        tcp = SIZE / min(raw_tcp(data) for _ in range(ROUNDS)) / 1024
        exchanges = SIZE / min(raw_tcp(data, BLOCK) for _ in range(ROUNDS)) / 1024
        rate = best(ROUNDS, lambda: driver_install(data, where, doip))
        report("DoIP on 127.0.0.1 (simulated gateway):", rate,
               f"{100 * rate / tcp:.1f}% of a raw TCP transfer ({tcp:.0f} KiB/s), "
               f"{100 * rate / exchanges:.0f}% of raw TCP in {BLOCK}-byte request/answer "
               f"exchanges ({exchanges:.0f} KiB/s)")  # fmt: skip

        raw = SIZE / min(raw_isotp(data) for _ in range(ROUNDS)) / 1024
        rate = best(ROUNDS, lambda: driver_install(data, where, can_bus("virtual")))
        note = f"{100 * rate / raw:.0f}% of a raw can-isotp transfer ({raw:.1f} KiB/s)"
        report("Python overhead (unpaced virtual bus):", rate, note)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
