"""Helpers: a simulated STM32 on disk, firmware images, and a one-Component deployment runner.

The runner calls the driver exactly as the engine does (SPEC section 7): through
``orchestrator_core.drivers`` (entry-point resolution, a ``ComponentDriver`` per call, so
nothing can survive in memory from one state to the next), the normal path
Download -> ArtifactInstall -> ArtifactReboot -> ArtifactVerifyReboot -> ArtifactCommit ->
Cleanup, and on failure the rollback path with its bounded ArtifactRollbackReboot retries.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator_core import drivers
from orchestrator_core.context import ArtifactInfo, Component, InterfaceContext, RebootNeed
from orchestrator_core.errors import InterfaceError
from orchestrator_core.installed import PreviousArtifact

from mender_orchestrator_i2c.driver import I2CDriver
from mender_orchestrator_i2c.record import VersionRecord, decode
from mender_orchestrator_i2c.simulator import Chip, Device, side_file

FLASH_BASE = 0x0800_0000
FLASH_SIZE = 16 * 1024
PAGE_SIZE = 1024
RECORD_AT = FLASH_BASE + FLASH_SIZE - PAGE_SIZE
UID = bytes.fromhex("00112233445566778899aabb")
ROLLBACK_REBOOT_TRIES = 3


def make_image(size: int, seed: int) -> bytes:
    """A firmware image: a valid Cortex-M vector table, then pseudo-random code."""
    body = random.Random(seed).randbytes(size - 8)
    return struct.pack("<II", 0x2000_2000, FLASH_BASE + 0x101) + body


def fast_chip(**changes: Any) -> Chip:
    values: dict[str, Any] = {
        "flash_size": FLASH_SIZE,
        "page_size": PAGE_SIZE,
        "uid": UID,
        "page_erase_seconds": 0.0005,
        "mass_erase_seconds": 0.001,
        "program_seconds_per_kib": 0.001,
    }
    values.update(changes)
    return Chip(**values)


class Sim:
    """A simulated device on disk, and what tests need to arrange and inspect it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def device(self) -> Device:
        return Device.load(self.path)

    def flash(self) -> bytes:
        return self.path.read_bytes()

    def side(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(side_file(self.path).read_text())
        return document

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.side()["state"]
        return state

    def faults(self, *rules: dict[str, Any]) -> None:
        document = self.side()
        document["faults"] = list(rules)
        side_file(self.path).write_text(json.dumps(document))

    def chip(self, **changes: Any) -> None:
        document = self.side()
        document["chip"].update(changes)
        side_file(self.path).write_text(json.dumps(document))

    def record(self) -> VersionRecord | None:
        offset = RECORD_AT - FLASH_BASE
        return decode(self.flash()[offset : offset + VersionRecord.size_limit()])

    def install_factory(self, image: bytes, version: str, mode: str = "bootloader") -> bytes:
        """Program ``image`` and its record as the factory would, leaving the MCU in its
        bootloader (``mode="application"``: running the image); return the whole flash."""
        device = self.device()
        device.flash[: len(image)] = image
        record = VersionRecord.for_image(version, image).encode()
        offset = RECORD_AT - FLASH_BASE
        device.flash[offset : offset + len(record)] = record
        device.state.mode = mode
        device.save_flash()
        device.save_side()
        return bytes(device.flash)


def component_args(sim: Sim, *extra: str) -> tuple[str, ...]:
    """The test device's arguments; ``extra`` adds to them or replaces one of the same name."""
    args = {
        "--bus": f"sim:{sim.path}",
        "--address": "0x48",
        "--flash-size": "16K",
        "--page-size": "1K",
        "--uid-address": "0x1FFF7590",
        "--busy-timeout": "2",
        "--connect-timeout": "2",
        "--state-dir": str(sim.path.parent / "i2c-state"),
    }
    for arg in extra:
        name, _, value = arg.partition("=")
        args[name] = value
    return tuple(f"{name}={value}" for name, value in args.items())


def artifact_for(image: bytes, version: str, name: str = "firmware.bin") -> ArtifactInfo:
    return ArtifactInfo(
        name=f"seat-heating-{version}",
        group=None,
        payload_type="i2c",
        provides={"rootfs-image.i2c.version": version},
        files=((name, len(image)),),
    )


@dataclass
class Outcome:
    states: list[str] = field(default_factory=list)
    failure: InterfaceError | None = None
    rollback_errors: list[str] = field(default_factory=list)
    inconsistent: bool = False


class Runner:
    """Drives one Component through a deployment as the engine does."""

    def __init__(
        self,
        component: Component,
        data_dir: Path,
        work_dir: Path,
        plugins: Iterable[object] = (),
        timeout: float = 60.0,
    ) -> None:
        self.component = component
        self.data_dir = data_dir
        self.work_dir = work_dir
        self.plugins = list(plugins)
        self.timeout = timeout
        self.log = logging.getLogger("test.i2c")
        self.progress: list[tuple[int, int | None, str]] = []  # every ctx.progress report
        # what the core keeps for a driver with keeps_previous_artifact: the Artifact of the
        # last successful deployment, its payload on disk
        self.previous: PreviousArtifact | None = None

    def driver(self) -> drivers.ComponentDriver:
        if not self.plugins:
            return drivers.load(self.component, self.data_dir)
        resolution = drivers.resolve(self.component.interface, self.data_dir)
        return drivers.ComponentDriver(
            self.component, resolution, I2CDriver(self.component), self.plugins
        )

    def ctx(self, driver: drivers.ComponentDriver, **fields: Any) -> InterfaceContext:
        fields.setdefault("progress_sink", lambda *report: self.progress.append(report))
        return driver.context(log=self.log, timeout_seconds=self.timeout, **fields)

    def query(self, name: str) -> Any:
        driver = self.driver()
        return getattr(driver, name)(self.ctx(driver))

    def deploy(self, image: bytes, artifact: ArtifactInfo) -> Outcome:
        outcome = Outcome()
        component_id = self.query("identity")
        self.query("provides")

        def run(state: str) -> None:
            outcome.states.append(state)
            driver = self.driver()
            ctx = self.ctx(
                driver,
                component_id=component_id,
                work_dir=self.work_dir,
                artifact=artifact,
                previous_artifact=self.previous,
            )
            driver.run_state(state, ctx)
            if state == "download":  # the engine stores the payload the driver left unread
                files = self.work_dir / "files"
                files.mkdir(mode=0o700)
                (files / artifact.files[0][0]).write_bytes(image)

        shutil.rmtree(self.work_dir, ignore_errors=True)  # each deployment has its own
        self.work_dir.mkdir(mode=0o700, parents=True)
        try:
            run("download")
        except InterfaceError as exc:
            outcome.failure = exc
            run("cleanup")
            return outcome
        supports_rollback = self.query("supports_rollback")
        needs_reboot = RebootNeed.NO
        try:
            run("artifact_install")
            needs_reboot = self.query("needs_artifact_reboot")
            if needs_reboot is RebootNeed.YES:
                run("artifact_reboot")
                run("artifact_verify_reboot")
            run("artifact_commit")
        except InterfaceError as exc:
            outcome.failure = exc
            if supports_rollback:
                self._roll_back(run, outcome)
            self._ignore_failure(run, "artifact_failure", outcome)
        run("cleanup")
        if outcome.failure is None:
            kept = self.data_dir / "installed" / artifact.name
            kept.mkdir(parents=True, exist_ok=True)
            (kept / artifact.files[0][0]).write_bytes(image)
            self.previous = PreviousArtifact(artifact, (kept / artifact.files[0][0],))
        return outcome

    def _roll_back(self, run: Callable[[str], None], outcome: Outcome) -> None:
        self._ignore_failure(run, "artifact_rollback", outcome)
        if self.query("needs_artifact_reboot") is not RebootNeed.YES:
            return
        for _ in range(ROLLBACK_REBOOT_TRIES):
            self._ignore_failure(run, "artifact_rollback_reboot", outcome)
            if self._ignore_failure(run, "artifact_verify_rollback_reboot", outcome):
                return
        outcome.inconsistent = True

    @staticmethod
    def _ignore_failure(run: Callable[[str], None], state: str, outcome: Outcome) -> bool:
        try:
            run(state)
            return True
        except InterfaceError as exc:
            outcome.rollback_errors.append(f"{state}: {exc}")
            return False


NORMAL_PATH = [
    "download",
    "artifact_install",
    "artifact_reboot",
    "artifact_verify_reboot",
    "artifact_commit",
    "cleanup",
]
ROLLBACK_AFTER_INSTALL = [
    "download",
    "artifact_install",
    "artifact_rollback",
    "artifact_rollback_reboot",
    "artifact_verify_rollback_reboot",
    "artifact_failure",
    "cleanup",
]
