"""Benchmark (not a test): ArtifactInstall of a 60 KiB image over a 60 KiB factory image,
on the simulated STM32.

The simulator keeps datasheet timings (STM32G0: 22 ms per page erase, 11 ms per KiB
programmed) but moves bytes instantly. The reference is the chip's own busy time for the
pages this run erased and the bytes it programmed: no driver can be faster. The difference is
the driver's overhead (protocol, BUSY polling, read-back) plus the simulator's file I/O. The
bytes the run moved are also converted to wire time at 400 kHz, what a real bus would add.

    .venv/bin/python bench/i2c_flash.py
"""

from __future__ import annotations

import logging
import random
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from mender_orchestrator_i2c.driver import I2CDriver
from mender_orchestrator_i2c.simulator import Chip, Device, SimulatedBus

from orchestrator_core import drivers
from orchestrator_core.context import ArtifactInfo, Component, InterfaceContext
from orchestrator_core.hookspecs import hookimpl

IMAGE_BYTES = 60 * 1024
BUS_HZ = 400_000


class CountingBus:
    """The simulator, counting the bytes on the wire (each byte is 9 clocks with its ACK)."""

    def __init__(self, inner: SimulatedBus, counter: list[int]) -> None:
        self.inner = inner
        self.counter = counter

    def i2c_rdwr(self, *msgs: Any) -> None:
        self.inner.i2c_rdwr(*msgs)
        self.counter[0] += sum(1 + msg.len for msg in msgs)  # address byte + data

    def close(self) -> None:
        self.inner.close()

    def reset_to_bootloader(self) -> None:
        self.inner.reset_to_bootloader()


class ByteCountingPlugin:
    """Hands the driver its bus through ``i2c_open_bus``, wrapped to count the bytes moved."""

    def __init__(self) -> None:
        self.bytes = [0]

    @hookimpl
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> CountingBus:
        return CountingBus(SimulatedBus(Path(bus.removeprefix("sim:"))), self.bytes)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chip = Chip()  # datasheet timings, 64 KiB, 2 KiB pages
        device = Device.create(root / "stm32.bin", chip)
        device.flash[:IMAGE_BYTES] = random.Random(0).randbytes(IMAGE_BYTES)  # factory image
        device.flash[-chip.page_size :] = random.Random(2).randbytes(chip.page_size)  # its record
        device.save_flash()
        image = struct.pack("<II", 0x2000_2000, 0x0800_0101) + random.Random(1).randbytes(
            IMAGE_BYTES - 8
        )
        (root / "work" / "files").mkdir(parents=True)
        (root / "work" / "files" / "fw.bin").write_bytes(image)
        component = Component("bench", "i2c", (f"--bus=sim:{root / 'stm32.bin'}", "--address=0x48"))
        counter = ByteCountingPlugin()
        resolution = drivers.resolve("i2c", root)
        driver = drivers.ComponentDriver(component, resolution, I2CDriver(component), [counter])
        artifact = ArtifactInfo("bench-1", None, "i2c", {"rootfs-image.i2c.version": "1"})
        ctx = driver.context(
            log=logging.getLogger("bench"), timeout_seconds=600, work_dir=root / "work",
            artifact=artifact,
        )  # fmt: skip

        started = time.perf_counter()
        driver.run_state("artifact_install", ctx)
        elapsed = time.perf_counter() - started

    erased = -(-IMAGE_BYTES // chip.page_size) + 1  # the image's pages + the record's page
    programmed_kib = (IMAGE_BYTES + 32) / 1024  # the image and its record
    floor = erased * chip.page_erase_seconds + programmed_kib * chip.program_seconds_per_kib
    wire = counter.bytes[0] * 9 / BUS_HZ
    print(
        f"driver: ArtifactInstall of {IMAGE_BYTES // 1024} KiB (read back, erase, write, verify) "
        f"in {elapsed:.2f} s"
    )
    print(
        f"reference: the chip's busy time for {erased} page erases and {programmed_kib:.0f} KiB "
        f"programmed: {floor:.2f} s; driver overhead {elapsed - floor:.2f} s "
        f"({elapsed / floor:.2f}x the floor)"
    )
    print(
        f"on a real 400 kHz bus add {wire:.2f} s for the {counter.bytes[0]} bytes moved "
        f"(whole-area read-back for rollback, write, verify): about "
        f"{IMAGE_BYTES / 1024 / (elapsed + wire):.1f} KiB/s end to end"
    )


if __name__ == "__main__":
    main()
