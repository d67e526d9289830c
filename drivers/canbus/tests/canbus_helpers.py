"""Helpers for the canbus driver's tests (the fixtures in conftest.py build on them).

``SimEcu`` is an ECU simulator running on a python-can bus in a thread. ``Harness`` calls a
Component's driver the way the engine does (SPEC 7, one Component): the driver comes from
``orchestrator_core.drivers.load`` (entry point, factory, ComponentDriver), a new one for
every call, as if each state ran in a new orchestrator process, so nothing can survive
between states except through the File API directory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator_core.context import ArtifactInfo, Component, RebootNeed
from orchestrator_core.drivers import ComponentDriver, load
from orchestrator_core.errors import OrchestratorError

from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import Ecu, EcuConfig, EcuServer, FlashStore

BANK = 0x10000
SERIAL = "SIM-BRAKE-0042"
OLD_VERSION = "brake-1.0.0"
# bus timeouts kept small so that faults surface in a fraction of a second
FAST = ("--p2-timeout=0.3", "--p2-star-timeout=2", "--reset-wait=1.5", "--retries=2")
QUICK_ECU = EcuConfig(erase_time=0.02, check_time=0.01, boot_time=0.05)


def services(trace: list[str]) -> list[str]:
    """An ECU's trace as a test compares it: a run of TransferData requests as ``36*N``, and
    without the periodic functional TesterPresent (its count depends on timing)."""
    compact: list[str] = []
    for label in trace:
        if label == "f:3e80":
            continue
        if label == "36" and compact and compact[-1].startswith("36"):
            count = int(compact[-1][3:] or 1) + 1
            compact[-1] = f"36*{count}"
        else:
            compact.append(label)
    return compact


def pseudo_random(label: str, size: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(size)


@dataclass
class SimEcu:
    """A running simulator and where its flash lives."""

    state: Path
    ecu: Ecu
    server: EcuServer
    link: LinkSettings  # the tester's side of the link
    initial_image: bytes

    def layout(self) -> Any:
        return FlashStore(self.state).layout

    def bank(self, index: int, size: int = BANK) -> bytes:
        return FlashStore(self.state).read(index, 0, size)

    def driver_args(self, *extra: str) -> tuple[str, ...]:
        link = self.link
        args = [
            f"--interface={link.interface}",
            f"--channel={link.channel}",
            f"--memory-size={BANK:#x}",
        ]
        return (*args, *FAST, *extra)


@dataclass
class Outcome:
    states: list[str] = field(default_factory=list)
    failure: str | None = None  # message of the state that failed the deployment
    rollback_errors: list[str] = field(default_factory=list)
    rollback_verified: bool = False


class Harness:
    def __init__(self, component: Component, tmp_path: Path, timeout: float = 30.0) -> None:
        self.component = component
        self.data_dir = tmp_path / "data"  # no interfaces/v1: the entry point resolves
        self.work_dir = tmp_path / "work" / component.component_type / "ecu"
        self.timeout = timeout
        self.log = logging.getLogger("canbus-test")
        self.artifact: ArtifactInfo | None = None
        self.component_id: str | None = None
        self.plugins: list[object] = []  # extra plugins registered on every driver (vendor keys)
        self.progress: list[tuple[int, int | None, str]] = []  # every ctx.progress report

    def driver(self) -> ComponentDriver:
        driver = load(self.component, self.data_dir)
        for plugin in self.plugins:
            driver.pm.register(plugin)
        return driver

    def _ctx(self, driver: ComponentDriver) -> Any:
        return driver.context(
            log=self.log,
            timeout_seconds=self.timeout,
            component_id=self.component_id,
            work_dir=self.work_dir,
            artifact=self.artifact,
            progress_sink=lambda *report: self.progress.append(report),
        )

    def query(self, name: str) -> Any:
        driver = self.driver()
        return getattr(driver, name)(self._ctx(driver))

    def state(self, name: str, outcome: Outcome) -> None:
        outcome.states.append(name)
        driver = self.driver()
        driver.run_state(name, self._ctx(driver))

    def deploy(self, image: bytes, version: str) -> Outcome:
        """Identity, Provides, then the install path; the rollback path on failure."""
        outcome = Outcome()
        self.component_id = self.query("identity")
        self.query("provides")
        self.work_dir.mkdir(parents=True, mode=0o700)
        self.state("download", outcome)
        self.stage(image, version)
        supports_rollback = self.query("supports_rollback")
        installing = False
        try:
            installing = True
            self.state("artifact_install", outcome)
            if self.query("needs_artifact_reboot") is RebootNeed.YES:
                self.state("artifact_reboot", outcome)
                self.state("artifact_verify_reboot", outcome)
            self.state("artifact_commit", outcome)
        except OrchestratorError as exc:
            outcome.failure = exc.message
            if installing and supports_rollback:
                self.roll_back(outcome)
            self._quietly("artifact_failure", outcome)
        self.state("cleanup", outcome)
        return outcome

    def stage(self, image: bytes, version: str) -> None:
        """What the engine knows and stores around Download: the Artifact's header, and the
        payload in files/ (the driver leaves it unread during Download)."""
        self.artifact = ArtifactInfo(
            name=f"artifact-{version}",
            group=None,
            payload_type="canbus",
            provides={"rootfs-image.canbus.version": version},
            files=(("firmware.bin", len(image)),),
        )
        files = self.work_dir / "files"
        files.mkdir(parents=True, mode=0o700)
        (files / "firmware.bin").write_bytes(image)

    def roll_back(self, outcome: Outcome, retries: int = 3) -> None:
        self._quietly("artifact_rollback", outcome)
        if self.query("needs_artifact_reboot") is not RebootNeed.YES:
            return
        for _ in range(retries + 1):
            self._quietly("artifact_rollback_reboot", outcome)
            if self._quietly("artifact_verify_rollback_reboot", outcome):
                outcome.rollback_verified = True
                return

    def _quietly(self, name: str, outcome: Outcome) -> bool:
        try:
            self.state(name, outcome)
        except OrchestratorError as exc:
            outcome.rollback_errors.append(f"{name}: {exc.message}")
            return False
        return True


class Reports(list[tuple[int, int | None, str]]):
    """``Harness.progress`` that calls ``each`` with the count after every report (one per
    TransferData block), in the driver's thread."""

    def __init__(self, each: Callable[[int], None]) -> None:
        super().__init__()
        self.each = each

    def append(self, report: tuple[int, int | None, str]) -> None:
        super().append(report)
        self.each(len(self))


def after(blocks: int, trip: Callable[[], None]) -> Reports:
    """Reports that start ``trip`` in a thread of its own once ``blocks`` blocks are through."""
    return Reports(lambda count: count == blocks and threading.Thread(target=trip).start())
