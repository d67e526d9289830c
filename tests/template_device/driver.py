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

from orchestrator_core.atomic import write_bytes
from orchestrator_core.context import Component, InterfaceContext, RebootNeed
from orchestrator_core.errors import ConfigError, InterfaceError, InterfaceTimeout
from orchestrator_core.hookspecs import hookimpl

DRIVER = "example"


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
    def __init__(self, component: Component) -> None:
        self.component = component
        devices = [a.partition("=")[2] for a in component.interface_args
                   if a.startswith("--device=")]
        unknown = [a for a in component.interface_args if not a.startswith("--device=")]
        if unknown:
            raise ConfigError(f"{component.label}: interface_args: unknown argument "
                              f"{unknown[0]!r}; the {DRIVER} driver takes --device=/absolute/path")
        if len(devices) > 1:
            raise ConfigError(f"{component.label}: interface_args: --device is given twice")
        if not devices or not Path(devices[0]).is_absolute():
            raise ConfigError(f"{component.label}: interface_args: --device=/absolute/path is "
                              f"required (got {list(component.interface_args)})")
        self.device = FileDevice(Path(devices[0]))

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
