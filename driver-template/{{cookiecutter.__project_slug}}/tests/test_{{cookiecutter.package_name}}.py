"""The ``{{ cookiecutter.driver_name }}`` driver through the orchestrator's own hook path.

Run with ``pytest`` after ``pip install -e .``. The tests load the driver the way the engine
does (entry point -> ``orchestrator_core.drivers.load`` -> ``ComponentDriver``), create a new
driver object for every state (the orchestrator may restart between states), and walk the
states in the orchestrator's order. When you replace the stand-in ``Device``, replace the
``device`` fixture with your simulator or test rig and keep the rest.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrator_core import drivers
from orchestrator_core.driver_api import (
    ArtifactError,
    ArtifactInfo,
    Component,
    ConfigError,
    InterfaceContext,
    InterfaceError,
    InterfaceTimeout,
    RebootNeed,
    hookimpl,
)

DRIVER = "{{ cookiecutter.driver_name }}"
VERSION_KEY = f"rootfs-image.{DRIVER}.version"
NORMAL_PATH = [
    "download",
    "artifact_install",
    "artifact_reboot",
    "artifact_verify_reboot",
    "artifact_commit",
    "cleanup",
]


class PayloadFile:
    """One payload file as the engine hands it over: read once, checksum checked at the end."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.size = len(data)
        self._stream = io.BytesIO(data)
        self._digest = hashlib.sha256()
        self._expected = hashlib.sha256(data).hexdigest()

    def read(self, n: int = -1, /) -> bytes:
        chunk = self._stream.read(n)
        self._digest.update(chunk)
        if not chunk and self._digest.hexdigest() != self._expected:
            raise ArtifactError(f"{self.name}: checksum mismatch")
        return chunk


class Payload:
    def __init__(self, name: str, data: bytes) -> None:
        self._file = PayloadFile(name, data)
        self.consumed = False

    def files(self) -> Iterator[PayloadFile]:
        self.consumed = True
        yield self._file

    def whole_artifact(self) -> Iterator[bytes]:
        raise AssertionError("the driver asked for unpacked payload files")


class Deployment:
    """Walks one Component through the orchestrator's states."""

    def __init__(self, component: Component, tmp_path: Path, plugins: list[object]) -> None:
        self.component = component
        self.data_dir = tmp_path / "data"  # no executables there: the entry point is used
        self.work_dir = tmp_path / "work"
        self.plugins = plugins
        self.states: list[str] = []

    def driver(self) -> drivers.ComponentDriver:
        loaded = drivers.load(self.component, self.data_dir)
        for plugin in self.plugins:
            loaded.pm.register(plugin)
        return loaded

    def ctx(self, driver: drivers.ComponentDriver, **fields: object) -> InterfaceContext:
        return driver.context(log=logging.getLogger("test"), timeout_seconds=30, **fields)

    def query(self, name: str) -> object:
        driver = self.driver()
        return getattr(driver, name)(self.ctx(driver))

    def run(self, state: str, artifact: ArtifactInfo, image: bytes) -> None:
        self.states.append(state)
        driver = self.driver()
        payload = Payload("firmware.bin", image) if state == "download" else None
        driver.run_state(
            state, self.ctx(driver, work_dir=self.work_dir, artifact=artifact, payload=payload)
        )

    def install(self, image: bytes, version: str) -> InterfaceError | None:
        artifact = ArtifactInfo(
            name=f"{DRIVER}-{version}",
            group=None,
            payload_type=DRIVER,
            provides={VERSION_KEY: version},
            files=(("firmware.bin", len(image)),),
        )
        self.work_dir.mkdir(mode=0o700, exist_ok=True)
        self.query("identity")
        self.query("provides")
        failure = None
        try:
            self.run("download", artifact, image)
            self.run("artifact_install", artifact, image)
            assert self.query("needs_artifact_reboot") is RebootNeed.YES
            self.run("artifact_reboot", artifact, image)
            self.run("artifact_verify_reboot", artifact, image)
            self.run("artifact_commit", artifact, image)
        except InterfaceError as exc:
            failure = exc
            assert self.query("supports_rollback") is True
            for state in (
                "artifact_rollback",
                "artifact_rollback_reboot",
                "artifact_verify_rollback_reboot",
                "artifact_failure",
            ):
                self.run(state, artifact, image)
        self.run("cleanup", artifact, image)
        return failure


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """The stand-in device, with version 1.0 installed and running."""
    path = tmp_path / "device"
    path.mkdir()
    (path / "serial").write_text("SN-0001\n")
    (path / "firmware.bin").write_bytes(b"old firmware")
    (path / "version").write_text("1.0\n")
    (path / "running").write_text("1.0\n")
    return path


def deployment(device: Path, tmp_path: Path, *plugins: object) -> Deployment:
    component = Component("my_component", DRIVER, (f"--device={device}",))
    return Deployment(component, tmp_path, list(plugins))


def test_the_entry_point_is_installed(tmp_path: Path) -> None:
    found = drivers.resolve(DRIVER, tmp_path)
    assert found.kind == "driver"
    assert found.target.endswith(".driver:{{ cookiecutter.__class_name }}")


def test_queries(device: Path, tmp_path: Path) -> None:
    run = deployment(device, tmp_path)
    assert run.query("identity") == "SN-0001"
    assert run.query("provides") == {VERSION_KEY: "1.0"}


def test_update_installs_and_runs_the_new_version(device: Path, tmp_path: Path) -> None:
    run = deployment(device, tmp_path)
    assert run.install(b"new firmware", "2.0") is None
    assert run.states == NORMAL_PATH
    assert (device / "firmware.bin").read_bytes() == b"new firmware"
    assert (device / "running").read_text().strip() == "2.0"
    assert run.query("provides") == {VERSION_KEY: "2.0"}
    assert not (tmp_path / "work" / "tmp" / DRIVER).exists()


class FailVerify:
    """A plugin that makes ArtifactVerifyReboot fail, to exercise the rollback path."""

    @hookimpl(tryfirst=True)
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        raise InterfaceError(f"{ctx.name}: injected failure")


def test_failure_rolls_back_to_the_previous_version(device: Path, tmp_path: Path) -> None:
    run = deployment(device, tmp_path, FailVerify())
    failure = run.install(b"new firmware", "2.0")
    assert failure is not None and "injected failure" in str(failure)
    assert run.states == [
        *NORMAL_PATH[:4],
        "artifact_rollback",
        "artifact_rollback_reboot",
        "artifact_verify_rollback_reboot",
        "artifact_failure",
        "cleanup",
    ]
    assert (device / "firmware.bin").read_bytes() == b"old firmware"
    assert (device / "running").read_text().strip() == "1.0"


def test_a_download_past_its_deadline_stops_with_a_timeout(device: Path, tmp_path: Path) -> None:
    run = deployment(device, tmp_path)
    run.work_dir.mkdir(mode=0o700)
    driver = run.driver()
    ctx = driver.context(
        log=logging.getLogger("test"),
        timeout_seconds=0,  # the deadline has passed by the time the first chunk is in
        work_dir=run.work_dir,
        payload=Payload("firmware.bin", b"new firmware"),
    )
    with pytest.raises(InterfaceTimeout, match="ran past InterfaceTimeoutSeconds while"):
        driver.run_state("download", ctx)
    assert (device / "firmware.bin").read_bytes() == b"old firmware"  # nothing installed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "argument --device is missing"),
        (("--device=relative/dir",), "argument --device: expected an absolute path"),
        (("--device=/dev/x", "--speed=9"), "unrecognized arguments: --speed=9"),
        (("--device=/dev/x", "--device=/dev/y"), "argument --device: given twice"),
    ],
)
def test_bad_interface_args_are_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        drivers.load(Component("my_component", DRIVER, args), tmp_path)
    assert str(caught.value).startswith("my_component[0] (interface " + DRIVER + ")")
    assert message in str(caught.value)
