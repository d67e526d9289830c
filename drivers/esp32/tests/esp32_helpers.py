"""Helpers: a simulated ESP32 on a pty, app images, and its interface_args."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from orchestrator_core.driver_api import write_atomically

from mender_orchestrator_esp32 import idf
from mender_orchestrator_esp32.simulator import (
    Chip,
    Device,
    Rfc2217Simulator,
    Simulator,
    image_chip_id,
    side_file,
)

MAC = "240ac4a1b2c3"
APP_SIZE = 0x10000
# The line rate is modelled only where a test says so: at 115200 baud (no CHANGE_BAUDRATE) and
# without it, a session costs the fewest commands and no waiting.
BAUD = 115200


def make_image(version: str, size: int = 6000, seed: int = 0, chip_id: int = 0) -> bytes:
    """An ESP-IDF app image of about ``size`` bytes whose descriptor says ``version``."""
    body = random.Random(f"{version}/{seed}").randbytes(size)
    return idf.make_app_image(idf.AppDescription(version, "door-lock", "v5.3"), body, chip_id)


def fast_chip(**changes: Any) -> Chip:
    values: dict[str, Any] = {
        "mac": MAC,
        "flash_size": 0x30000,
        "sector_erase_seconds": 0.0005,
        "program_seconds_per_kib": 0.0002,
        "model_line_rate": False,
    }
    values.update(changes)
    return Chip(**values)


class Sim:
    """A simulated chip on disk, served on a pty while the test runs."""

    def __init__(self, path: Path, link: Path) -> None:
        self.path = path
        self.link = link
        self.server: Simulator | None = None

    def start(self, rfc2217: bool = False) -> None:
        """Serve on a pty (at ``link``), or as an RFC 2217 port whose DTR/RTS reach the chip."""
        self.server = Rfc2217Simulator(self.path) if rfc2217 else Simulator(self.path, self.link)
        self.server.start()

    @property
    def port(self) -> str:
        """What ``--port`` names: the pty's link, or the RFC 2217 URL."""
        if isinstance(self.server, Rfc2217Simulator):
            return self.server.address
        return str(self.link)

    def pulse_en(self) -> None:
        """What an RTS pulse (--after=hard-reset) does on a board: a pty cannot carry it."""
        assert self.server is not None
        self.server.pulse_en()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def device(self) -> Device:
        return Device.load(self.path)

    def side(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(side_file(self.path).read_text())
        return document

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.side()["state"]
        return state

    def faults(self, *rules: dict[str, Any]) -> None:
        document = self.side()
        document["faults"] = list(rules)
        # atomically: the simulator's thread may read it at any moment
        write_atomically(side_file(self.path), json.dumps(document).encode())

    def chip(self, **changes: Any) -> None:
        document = self.side()
        document["chip"].update(changes)
        # atomically: the simulator's thread may read it at any moment
        write_atomically(side_file(self.path), json.dumps(document).encode())

    def table(self) -> idf.PartitionTable:
        raw = self.device().read(idf.PARTITION_TABLE_OFFSET, idf.PARTITION_TABLE_SIZE)
        return idf.PartitionTable.decode(raw)

    def otadata(self) -> idf.OtaData:
        device = self.device()
        return idf.OtaData.decode(device.read(self.table().otadata.offset, 2 * idf.SECTOR))

    def version_in(self, label: str) -> str | None:
        partition = self.table().by_label(label)
        desc = idf.AppDescription.decode(self.device().read(partition.offset, 512))
        return None if desc is None else desc.version

    def slot_bytes(self, label: str, length: int) -> bytes:
        return self.device().read(self.table().by_label(label).offset, length)


def create_sim(
    directory: Path, version: str | None = "1.0.0", chip_id: int | None = None, **chip: Any
) -> Sim:
    """A chip with an app of ``version`` in ota_0, built for it unless ``chip_id`` says."""
    path = directory / "esp32.bin"
    if chip_id is None:
        chip_id = image_chip_id(chip.get("model", "esp32"))
    image = None if version is None else make_image(version, seed=1, chip_id=chip_id)
    Device.create(path, fast_chip(**chip), APP_SIZE, image)
    return Sim(path, directory / "ttyESP0")


def component_args(sim: Sim, *extra: str, state_dir: bool = True) -> list[str]:
    """The test chip's arguments; ``extra`` adds to them or replaces one of the same name.
    Without ``state_dir`` the host record goes to the default, ``esp32/`` in the datastore."""
    args = {
        "--port": sim.port,
        "--baud": str(BAUD),
        "--after": "soft-reset",
        "--flash-size": "192K",
        "--connect-attempts": "2",
        "--command-timeout": "0.5",
    }
    if state_dir:
        args["--state-dir"] = str(sim.path.parent / "esp32-state")
    for arg in extra:
        name, _, value = arg.partition("=")
        args[name] = value
    return [f"{name}={value}" for name, value in args.items()]
