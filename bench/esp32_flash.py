"""Benchmark (not a test): ArtifactInstall of a 256 KiB app on the simulated ESP32, next to the
ROM serial loader's limit at the configured baud rate (``--chip esp32s2`` and the other later
chips: esptool's flasher stub, 16 KiB FLASH_DATA blocks, two status bytes a reply).

The simulator moves bytes at the line rate the host set on its pty (10 bit times per byte: a
start bit, 8 data bits, a stop bit) and keeps a SPI NOR flash's busy times (45 ms per 4 KiB
sector erase, 1.6 ms per KiB programmed, as a GD25Q32 datasheet gives). The references,
computed for this run:

- the wire limit: the FLASH_DATA frames of the image (1 KiB blocks with their 24-byte headers,
  SLIP-escaped and framed) and their replies, at 10 bits per byte: no ROM-loader flasher can
  move the image faster;
- that plus the chip's erase and program time (the ROM erases up front, in FLASH_BEGIN);
- every byte this run put on the line, both ways, at the same rate.

The measured figures: the flashing itself (first to last ctx.progress report) and the whole
ArtifactInstall (connection, baud change, partition table, otadata, MD5 check, otadata switch).

    .venv/bin/python bench/esp32_flash.py [--baud 921600] [--kib 256] [--chip esp32]
"""

from __future__ import annotations

import argparse
import logging
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mender_orchestrator_esp32 import idf, slip
from mender_orchestrator_esp32.settings import CHIPS
from mender_orchestrator_esp32.simulator import Chip, Device, image_chip_id

from orchestrator_core import drivers
from orchestrator_core.context import ArtifactInfo, Component

# FLASH_WRITE_SIZE and the bytes of a FLASH_DATA reply (8-byte header, status bytes, two
# delimiters): the ESP32's ROM loader, and esptool's stub on the later chips
ROM_BLOCK, ROM_REPLY = 0x400, 14
STUB_BLOCK, STUB_REPLY = 0x4000, 12


def wire_limit_bytes(image: bytes, size: int, reply: int) -> int:
    """Bytes on the line for the image's FLASH_DATA commands (``size`` a block) and replies."""
    total = 0
    for seq in range(0, len(image), size):
        block = image[seq : seq + size].ljust(size, b"\xff")
        packet = struct.pack("<BBHI", 0, 0x03, 16 + size, 0) + struct.pack(
            "<IIII", size, seq // size, 0, 0
        ) + block
        total += len(slip.encode(packet)) + reply
    return total


def install(root: Path, image: bytes, baud: int, chip: str) -> tuple[float, list[float], float]:
    """ArtifactInstall of ``image``: (its start, each progress report's time, its duration)."""
    after = "soft-reset" if chip == "esp32" else CHIPS[chip][-1]
    component = Component("door_lock", "esp32", (
        f"--port={root / 'tty'}", f"--baud={baud}", f"--chip={chip}",
        f"--after={after}"))  # fmt: skip
    driver = drivers.load(component, root / "data")
    work = root / "work"
    (work / "files").mkdir(parents=True)
    (work / "files" / "app.bin").write_bytes(image)
    reports: list[float] = []
    ctx = driver.context(
        log=logging.getLogger("bench"), timeout_seconds=3600, component_id="bench",
        work_dir=work, progress_sink=lambda *_: reports.append(time.perf_counter()),
        artifact=ArtifactInfo(name="bench-2.0.0", group=None, payload_type="esp32",
                              provides={"rootfs-image.esp32.version": "2.0.0"},
                              files=(("app.bin", len(image)),)),
    )  # fmt: skip
    started = time.perf_counter()
    driver.run_state("artifact_install", ctx)
    return started, reports, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baud", type=int, default=921600, help="a standard rate")
    parser.add_argument("--kib", type=int, default=256, help="image size in KiB")
    parser.add_argument("--chip", default="esp32", choices=list(CHIPS), help="the chip model")
    args = parser.parse_args()
    body = bytes(range(256)) * (args.kib * 4)  # bytes that need SLIP escapes, as code does
    chip_id = image_chip_id(args.chip)
    image = idf.make_app_image(idf.AppDescription("2.0.0", "bench", "v5.3"), body, chip_id)
    chip = Chip(model=args.chip, flash_size=4 * 1024 * 1024, sector_erase_seconds=0.045,
                program_seconds_per_kib=0.0016, model_line_rate=True)  # fmt: skip
    stub = args.chip != "esp32"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old = idf.make_app_image(idf.AppDescription("1.0.0", "bench", "v5.3"), b"", chip_id)
        Device.create(root / "flash.bin", chip, app_size=0x100000, image=old)
        # its own process, as a chip is: no Python thread of the driver's competes with it
        simulator = subprocess.Popen(
            [sys.executable, "-m", "mender_orchestrator_esp32.simulator", "serve",
             str(root / "flash.bin"), "--link", str(root / "tty")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert simulator.stdout is not None
            simulator.stdout.readline()  # "ready: ..."
            started, reports, whole = install(root, image, args.baud, args.chip)
        finally:
            simulator.terminate()
            out, _ = simulator.communicate(timeout=30)
        numbers = [int(word) for word in out.split() if word.isdigit()]
        line_bytes = sum(numbers[:2])
    flashing = reports[-1] - started
    size, reply = (STUB_BLOCK, STUB_REPLY) if stub else (ROM_BLOCK, ROM_REPLY)
    wire = wire_limit_bytes(image, size, reply) * 10 / args.baud
    sectors = -(-len(image) // idf.SECTOR)
    busy = sectors * chip.sector_erase_seconds + len(image) / 1024 * chip.program_seconds_per_kib
    loader = "esptool's stub, 16 KiB" if stub else "ROM loader, 1 KiB"
    print(f"image {len(image)} bytes at {args.baud} baud on an {args.chip} "
          f"({loader} FLASH_DATA blocks)")
    print(f"  wire limit (SLIP frames, 10 bits/byte)   {wire:7.2f} s")
    print(f"  + chip erase and program time            {wire + busy:7.2f} s")
    print(f"  measured: erase + flashing                {flashing:7.2f} s  "
          f"({flashing / (wire + busy):.2f}x the limit with the chip's time)")
    print(f"  measured: whole ArtifactInstall           {whole:7.2f} s")
    print(f"  all bytes of the run on the line           {line_bytes * 10 / args.baud:7.2f} s "
          f"({line_bytes} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
