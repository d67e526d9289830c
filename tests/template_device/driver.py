"""A vendor's rewrite of the template's driver, for tests/test_driver_template.py: the device is
a file-backed one (an image file and its version next to it, written as it would be flashed),
it needs no reboot, and the previous image is kept in the File API for a rollback.

The test copies this over the generated ``driver.py`` (``ExampleDriver`` is the class the
generated entry point names) and ``conftest.py`` over the generated tests' conftest.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    InterfaceArgs,
    InterfaceContext,
    InterfaceError,
    InterfaceTimeout,
    RebootNeed,
    absolute_path,
    hookimpl,
)
from orchestrator_core.driver_api import write_atomically as write_bytes

DRIVER = "example"
PARSER = InterfaceArgs(DRIVER, description="Update a file-backed example device.")
PARSER.add_argument("--device", type=absolute_path, required=True, help="the device's directory")


class FileDevice:
    def __init__(self, path: Path) -> None:
        self.path = path

    def ident(self) -> str:
        return (self.path / "id").read_text().strip()

    def version(self) -> str:
        return (self.path / "image.version").read_text().strip()

    def image(self) -> bytes:
        return (self.path / "image").read_bytes()

    def flash(self, image: bytes, version: str) -> None:
        write_bytes(self.path / "image", image)
        write_bytes(self.path / "image.version", version.encode())


class ExampleDriver:
    driver_api = ">=1.0,<2"
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        self.component = component
        self.device = FileDevice(Path(PARSER.parse(component).device))

    def _dir(self, ctx: InterfaceContext) -> Path:
        assert ctx.work_dir is not None
        directory = ctx.work_dir / "tmp" / DRIVER
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        return self.device.ident()

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        return {f"rootfs-image.{DRIVER}.version": self.device.version()}

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.NO

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return True

    @hookimpl
    def download(self, ctx: InterfaceContext) -> None:
        assert ctx.payload is not None
        with (self._dir(ctx) / "new").open("wb") as out:
            for payload_file in ctx.payload.files():
                while chunk := payload_file.read(4096):
                    if time.monotonic() > ctx.deadline:
                        raise InterfaceTimeout(f"{ctx.name}: past InterfaceTimeoutSeconds")
                    out.write(chunk)

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        assert ctx.artifact is not None
        directory = self._dir(ctx)
        if not (directory / "old.version").exists():
            write_bytes(directory / "old", self.device.image())
            write_bytes(directory / "old.version", self.device.version().encode())
        self.device.flash((directory / "new").read_bytes(), ctx.artifact.version_for(DRIVER))

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        directory = self._dir(ctx)
        if not (directory / "old.version").exists():
            raise InterfaceError(f"{ctx.name}: nothing saved to roll back to")
        self.device.flash((directory / "old").read_bytes(),
                          (directory / "old.version").read_text())

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is not None:
            shutil.rmtree(ctx.work_dir / "tmp" / DRIVER, ignore_errors=True)
