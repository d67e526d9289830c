"""Benchmark (not a test): ArtifactInstall of a 256 KiB image on the simulated STM32, next to
the computed bus limit at 400 kHz with AN4221 framing.

The limit: every byte of every Write Memory frame of the image (command, address, data, the
ACKs, each with its address byte; 9 clocks a byte), the Erase frames, and the chip's own busy
time for the pages erased and the bytes programmed (datasheet timings, STM32G0: 22 ms per
2 KiB page, 11 ms per KiB). The host waits for each ACK, so none of this overlaps: about 12 s
for 256 KiB. No driver can be faster.

The driver's time: the simulator keeps the chip's busy time (real waits) but moves bytes
instantly and spends time on its own files; so the figure is the run's wall time, less the
time spent inside the simulator, plus the bytes the driver moved converted to wire time at
400 kHz (BUSY polls overlap the chip's busy time and are not added). Two runs: the usual
one (the previous Artifact kept by the core, so no backup) and the first deployment through
the orchestrator (the flash read back once, for a rollback); then a first deployment with
``--bank-swap=yes`` on a dual-bank STM32L47x with the same timings (the other bank is written,
nothing read back).

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
from mender_orchestrator_i2c.record import VersionRecord
from mender_orchestrator_i2c.simulator import Chip, Device, SimulatedBus

from orchestrator_core import drivers
from orchestrator_core.context import ArtifactInfo, Component, InterfaceContext
from orchestrator_core.hookspecs import hookimpl
from orchestrator_core.installed import PreviousArtifact

IMAGE_BYTES = 256 * 1024
BUS_HZ = 400_000
CLOCKS_PER_BYTE = 9  # 8 data bits and the ACK bit
BUSY = 0x76
ERASE_BATCH = 32  # pages per no-stretch Erase, as the driver sends them


class CountingBus:
    """The simulator, counting the bytes on the wire and the time spent inside it."""

    def __init__(self, inner: SimulatedBus, plugin: CountingPlugin) -> None:
        self.inner = inner
        self.plugin = plugin

    def i2c_rdwr(self, *msgs: Any) -> None:
        started = time.perf_counter()
        try:
            self.inner.i2c_rdwr(*msgs)
        finally:
            self.plugin.inside += time.perf_counter() - started
        for msg in msgs:
            is_busy_poll = msg.flags & 1 and msg.len == 1 and bytes(msg)[0] == BUSY
            if not is_busy_poll:
                self.plugin.bytes += 1 + msg.len  # the address byte, then the data

    def close(self) -> None:
        self.inner.close()

    def reset_to_bootloader(self) -> None:
        self.inner.reset_to_bootloader()


class CountingPlugin:
    """Hands the driver its bus through ``i2c_open_bus``, wrapped to count."""

    def __init__(self) -> None:
        self.bytes = 0
        self.inside = 0.0

    @hookimpl
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> CountingBus:
        return CountingBus(SimulatedBus(Path(bus.removeprefix("sim:"))), self)


def wire_seconds(count: int) -> float:
    return count * CLOCKS_PER_BYTE / BUS_HZ


def bus_limit(chip: Chip, image_bytes: int) -> tuple[float, float, float]:
    """(wire, erase, program) seconds no driver can beat for ``image_bytes`` and a record."""
    writes = -(-image_bytes // 256) + 1  # 256-byte Write Memory frames, and the record's
    # command + ACK, address + ACK, N + 256 data bytes + checksum, ACK: each transfer
    # also carries its address byte
    per_write = (1 + 2) + (1 + 1) + (1 + 5) + (1 + 1) + (1 + 1 + 256 + 1) + (1 + 1)
    pages = -(-image_bytes // chip.page_size) + 1
    erases = -(-pages // ERASE_BATCH)
    per_erase = (1 + 2) + (1 + 1) + (1 + 3) + (1 + 1) + (1 + 2 * ERASE_BATCH + 1) + (1 + 1)
    wire = wire_seconds(writes * per_write + erases * per_erase)
    erase = pages * chip.page_erase_seconds
    program = (image_bytes + 32) / 1024 * chip.program_seconds_per_kib
    return wire, erase, program


def run(
    root: Path, chip: Chip, keep_previous: bool, *extra: str
) -> tuple[float, int]:
    """One ArtifactInstall over a factory image; (estimated seconds on a real bus, bytes)."""
    area = IMAGE_BYTES + chip.page_size  # the image and the version record's page
    device = Device.create(root / "stm32.bin", chip)
    factory = struct.pack("<II", 0x2000_2000, 0x0800_0101) + random.Random(0).randbytes(
        IMAGE_BYTES - 8
    )
    device.flash[:IMAGE_BYTES] = factory
    record = VersionRecord.for_image("1", factory).encode()
    device.flash[IMAGE_BYTES : IMAGE_BYTES + len(record)] = record
    device.save_flash()
    kept = root / "kept" / "fw.bin"
    kept.parent.mkdir()
    kept.write_bytes(factory)
    image = struct.pack("<II", 0x2000_2000, 0x0800_0101) + random.Random(1).randbytes(
        IMAGE_BYTES - 8
    )
    (root / "work" / "files").mkdir(parents=True)
    (root / "work" / "files" / "fw.bin").write_bytes(image)
    component = Component(
        "bench",
        "i2c",
        (
            f"--bus=sim:{root / 'stm32.bin'}",
            "--address=0x48",
            f"--flash-size={area}",
            f"--state-dir={root / 'state'}",
            *extra,
        ),
    )
    counter = CountingPlugin()
    resolution = drivers.resolve("i2c", root)
    driver = drivers.ComponentDriver(component, resolution, I2CDriver(component), [counter])
    artifact = ArtifactInfo("bench-2", None, "i2c", {"rootfs-image.i2c.version": "2"})
    previous = ArtifactInfo("bench-1", None, "i2c", {"rootfs-image.i2c.version": "1"})
    ctx = driver.context(
        log=logging.getLogger("bench"), timeout_seconds=600, work_dir=root / "work",
        artifact=artifact,
        previous_artifact=PreviousArtifact(previous, (kept,)) if keep_previous else None,
    )  # fmt: skip
    started = time.perf_counter()
    driver.run_state("artifact_install", ctx)
    elapsed = time.perf_counter() - started
    return elapsed - counter.inside + wire_seconds(counter.bytes), counter.bytes


def main() -> None:
    # an STM32G0B1 (512 KiB, 2 KiB pages) with bootloader v1.2 (Get Checksum), datasheet timings
    chip = Chip(pid=0x467, bootloader_version=0x12, flash_size=512 * 1024)
    wire, erase, program = bus_limit(chip, IMAGE_BYTES)
    limit = wire + erase + program
    print(
        f"bus limit for {IMAGE_BYTES // 1024} KiB at {BUS_HZ // 1000} kHz (AN4221 framing): "
        f"{limit:.1f} s = {wire:.1f} s on the wire + {erase:.1f} s erasing + "
        f"{program:.1f} s programming"
    )
    # the same timings on a dual-bank STM32L47x (1 MiB, two 512 KiB banks) with --bank-swap
    dual = Chip(pid=0x415, bootloader_version=0x12, flash_size=1024 * 1024, dual_bank=True)
    for used, keep_previous, what, extra in (
        (chip, True, "previous Artifact kept (the usual case): no backup, Get Checksum verify", ()),
        (chip, False, "first deployment: the flash read back once for a rollback", ()),
        (dual, False, "first deployment with --bank-swap=yes: the other bank, no backup",
         ("--bank-swap=yes",)),
    ):  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            seconds, moved = run(Path(tmp), used, keep_previous, *extra)
        print(
            f"driver, {what}: {seconds:.1f} s ({moved} bytes on the wire), "
            f"{seconds / limit:.2f}x the limit"
        )


if __name__ == "__main__":
    main()
