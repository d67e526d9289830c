"""Benchmark: flash 256 KiB with the canbus driver, next to a raw can-isotp transfer.

Both run in this process on python-can ``virtual`` buses, alternating, best of ``ROUNDS``:

* raw: a can-isotp sender pushes the same bytes, in PDUs as large as the driver's
  TransferData blocks, to a can-isotp receiver; no UDS, no acknowledgement beyond ISO-TP's
  own flow control. This is the ceiling for the link.
* driver: ``artifact_install`` through ``orchestrator_core.drivers.load`` (entry point,
  ComponentDriver) against the ECU simulator (dual bank, so the whole install is erase,
  RequestDownload, TransferData blocks, RequestTransferExit, version, check); the figure
  is the TransferData phase the driver logs, and the whole install for reference.

Run: ``.venv/bin/python bench/canbus_flash.py`` (after ``pip install -e drivers/canbus``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

import isotp
from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import Ecu, EcuConfig, EcuServer, Faults, FlashStore

from orchestrator_core.context import ArtifactInfo, Component
from orchestrator_core.drivers import load

SIZE = 256 * 1024
BLOCK = 4095 - 2  # data per TransferData block: maxNumberOfBlockLength minus SID and counter
ROUNDS = 5


def raw_isotp(data: bytes) -> float:
    """Seconds to move ``data`` one way over can-isotp in ``BLOCK``-sized PDUs."""
    link = LinkSettings(interface="virtual", channel=f"bench-raw-{uuid.uuid4().hex}")
    ends = []
    for side in (link, link.mirrored()):
        bus = side.open_bus()
        # the same stack class and parameters the driver uses
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


class _TransferRate(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"\(([\d.]+) KiB/s\)", record.getMessage())
        if found:
            self.rates.append(float(found.group(1)))


def driver_install(data: bytes, directory: Path) -> tuple[float, float]:
    """(seconds for the whole artifact_install, KiB/s of its TransferData phase)."""
    link = LinkSettings(interface="virtual", channel=f"bench-uds-{uuid.uuid4().hex}")
    state = directory / f"ecu-{uuid.uuid4().hex}.json"
    FlashStore.create(
        state, banks=2, bank_size=SIZE, serial="BENCH", version="v1", image=b"\x00" * 1024
    )
    ecu = Ecu(FlashStore(state), EcuConfig(erase_time=0.001, check_time=0.001), Faults())
    component = Component(
        "ecu", "canbus",
        (f"--interface={link.interface}", f"--channel={link.channel}", "--banks=2",
         f"--memory-size={SIZE:#x}"),
    )  # fmt: skip
    work = directory / f"work-{uuid.uuid4().hex}"
    (work / "files").mkdir(parents=True)
    (work / "files" / "image.bin").write_bytes(data)
    log = logging.getLogger("bench")
    rate = _TransferRate()
    log.addHandler(rate)
    log.setLevel(logging.INFO)
    log.propagate = False
    with EcuServer(link.mirrored(), ecu):
        driver = load(component, directory)
        ctx = driver.context(
            log=log, timeout_seconds=600, component_id="BENCH", work_dir=work,
            artifact=ArtifactInfo(name="v2", group=None, payload_type="canbus"),
        )  # fmt: skip
        started = time.perf_counter()
        driver.run_state("artifact_install", ctx)
        elapsed = time.perf_counter() - started
    assert FlashStore(state).read(1, 0, SIZE) == data
    log.removeHandler(rate)
    return elapsed, rate.rates[-1]


def main() -> None:
    data = os.urandom(SIZE)
    with tempfile.TemporaryDirectory() as scratch:
        # alternate the two, so that load from elsewhere on the machine hits both alike
        raws, installs = [], []
        for _ in range(ROUNDS):
            raws.append(raw_isotp(data))
            installs.append(driver_install(data, Path(scratch)))
        raw = min(raws)
    raw_rate = SIZE / raw / 1024
    best_install = min(seconds for seconds, _ in installs)
    transfer_rate = max(rate for _, rate in installs)
    print(f"payload: {SIZE // 1024} KiB in {BLOCK}-byte blocks, virtual bus, best of {ROUNDS}")
    print(f"raw can-isotp transfer:      {raw_rate:8.1f} KiB/s  ({raw:.2f} s)")
    print(
        f"driver TransferData phase:   {transfer_rate:8.1f} KiB/s  "
        f"({100 * transfer_rate / raw_rate:.0f}% of raw; target >= 80%)"
    )
    whole = SIZE / best_install / 1024
    print(
        f"driver whole ArtifactInstall:{whole:8.1f} KiB/s  ({best_install:.2f} s, "
        f"{100 * raw / best_install:.0f}% of raw)"
    )


if __name__ == "__main__":
    main()
