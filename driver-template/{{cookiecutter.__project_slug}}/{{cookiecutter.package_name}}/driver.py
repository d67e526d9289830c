"""The ``{{ cookiecutter.driver_name }}`` driver for Mender Orchestrator.

Generated from the orchestrator's driver-template. It works end to end as generated, against a
stand-in device: a directory named by ``--device=/absolute/path``. To drive your real device,
rewrite the ``Device`` class (its methods are the only place that talks to the device) and the
arguments declared on ``PARSER``; the hooks around them already follow the Interface protocol
(SPEC section 4) and usually need little change. Everything from the orchestrator comes from
``orchestrator_core.driver_api``, its public API for drivers.

How the orchestrator calls this class: the entry point in pyproject.toml names it; the engine
calls ``{{ cookiecutter.__class_name }}(component)`` once per Topology entry, then calls the
methods marked ``@hookimpl`` with an ``InterfaceContext`` (``ctx``) holding the Component, its
ID, the File API directory (``ctx.work_dir``), the Artifact (``ctx.artifact``), the payload
during Download (``ctx.payload``), a logger and a deadline. A state fails by raising
``InterfaceError`` with a message saying what went wrong; a query answers by returning.
Each call may happen in a new process (the orchestrator resumes after reboots), so anything a
later state needs is written under ``ctx.work_dir``, never kept in ``self``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceArgs,
    InterfaceContext,
    InterfaceError,
    InterfaceTimeout,
    RebootNeed,
    absolute_path,
    hookimpl,
)

# write_atomic: temporary name, fsync, rename, so a crash leaves the old content or the new
from orchestrator_core.driver_api import write_atomically as write_atomic

DRIVER = "{{ cookiecutter.driver_name }}"
CHUNK = 64 * 1024

# The Topology's interface_args, declared once: PARSER.parse(component) raises a ConfigError
# naming the Component and the argument; `mender-orchestrator drivers {{ cookiecutter.driver_name }}` shows
# the --help text. Add your own arguments (argparse's add_argument; see the type= helpers of
# orchestrator_core.driver_api: integer, seconds, size, expecting).
PARSER = InterfaceArgs(DRIVER, description="Update a {{ cookiecutter.driver_name }} device.")
PARSER.add_argument(
    "--device", type=absolute_path, required=True, help="the stand-in device's directory"
)


class Device:
    """STAND-IN for your device. Replace these methods with your transport (serial, CAN,
    SPI, HTTP...). The stand-in keeps the device's state in a directory:
    ``serial`` (its serial number), ``firmware.bin`` and ``version`` (what is installed),
    ``running`` (the version it booted last)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def serial(self) -> str:
        serial = self._read("serial")
        if not serial:
            raise InterfaceError(f"device {self.path} does not answer (no serial number)")
        return serial

    def installed_version(self) -> str | None:
        return self._read("version")

    def running_version(self) -> str | None:
        return self._read("running")

    def read_firmware(self) -> bytes:
        path = self.path / "firmware.bin"
        return path.read_bytes() if path.exists() else b""

    def write_firmware(self, image: bytes, version: str) -> None:
        # Invalidate the version first: an interrupted write must not look like a good one.
        (self.path / "version").unlink(missing_ok=True)
        write_atomic(self.path / "firmware.bin", image)
        write_atomic(self.path / "version", version.encode() + b"\n")

    def reboot(self) -> None:
        write_atomic(self.path / "running", (self.installed_version() or "").encode() + b"\n")


class {{ cookiecutter.__class_name }}(DriverBase):
    """In-process driver for the ``{{ cookiecutter.driver_name }}`` interface.

    DriverBase documents every hook and gives mypy their signatures; only the methods marked
    ``@hookimpl`` are called by the orchestrator."""

    # The orchestrator_core.driver_api versions this driver is written for: the orchestrator
    # refuses to load it outside this range (keep pyproject's dependency bound in step).
    driver_api = ">=1.0,<2"
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        # interface_args are checked here: a ConfigError stops the deployment before any
        # state runs.
        super().__init__(component)
        args = PARSER.parse(component)
        self.device = Device(args.device)

    # ------------------------------------------------------------------ helpers

    def _dir(self, ctx: InterfaceContext) -> Path:
        """This driver's private files in the File API directory (kept across restarts)."""
        if ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: this state needs the File API directory")
        directory = ctx.work_dir / "tmp" / DRIVER
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return directory

    def _target_version(self, ctx: InterfaceContext) -> str:
        if ctx.artifact is None:
            raise InterfaceError(f"{ctx.name}: no Artifact given to this state")
        return ctx.artifact.version_for(self.component.interface)

    def _check_deadline(self, ctx: InterfaceContext, doing: str) -> None:
        # ctx.deadline is InterfaceTimeoutSeconds from the start of this call; an in-process
        # driver cannot be killed, so long loops must look at it themselves
        if time.monotonic() > ctx.deadline:
            raise InterfaceTimeout(f"{ctx.name}: ran past InterfaceTimeoutSeconds while {doing}")

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        # A stable ID, unique in the System (a serial number, a MAC address...).
        return self.device.serial()

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        # Must report rootfs-image.<interface>.version: without it nothing can be deployed to
        # the Component. Never report device_type (the orchestrator does).
        version = self.device.installed_version() or "unknown"
        return {f"rootfs-image.{self.component.interface}.version": version}

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        # Extra attributes for the Mender server's inventory; a key may repeat.
        return [(f"{DRIVER}_device", str(self.device.path))]

    @hookimpl
    def needs_unpacked_artifact(self, ctx: InterfaceContext) -> bool:
        # True: ctx.payload.files() gives the payload files one by one during Download.
        # False: ctx.payload.whole_artifact() gives the .mender file itself.
        return True

    @hookimpl
    def provide_payload_file_sizes(self, ctx: InterfaceContext) -> bool:
        # Only meaningful for executables (DownloadWithFileSizes); an in-process driver gets
        # each payload file's size from ctx.payload while it streams.
        return False

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        # YES: the orchestrator calls artifact_reboot (reboot the device, never the host).
        # NO: the new software runs without one. AUTOMATIC: the host reboots once per group.
        return RebootNeed.YES

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        # True if artifact_rollback can bring the previous software back.
        return True

    # ------------------------------------------------------------------ update states

    @hookimpl
    def download(self, ctx: InterfaceContext) -> None:
        # Receive the payload while it streams; stage it, never install it (checksums are only
        # final once the stream ends). Leaving ctx.payload unread is fine too: the engine then
        # stores the files in ctx.files_dir for artifact_install.
        if ctx.payload is None:
            return
        staged = self._dir(ctx) / "staged.bin"
        count = 0
        for payload_file in ctx.payload.files():
            count += 1
            if count > 1:
                raise InterfaceError(f"{ctx.name}: the payload must be a single file")
            with staged.open("wb") as out:
                while chunk := payload_file.read(CHUNK):  # checksum checked as it is read
                    self._check_deadline(ctx, "receiving the payload")
                    out.write(chunk)
                    # shown on the live status line and by `mender-orchestrator status`
                    ctx.progress(out.tell(), payload_file.size, "bytes received")
        if count == 0:
            raise InterfaceError(f"{ctx.name}: the Artifact has no payload file")

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        # Install (or activate what Download staged). Keep what a rollback needs first.
        directory = self._dir(ctx)
        staged = directory / "staged.bin"
        if not staged.exists():  # Download left the payload to the engine: it is in files/
            files = sorted(ctx.files_dir.iterdir()) if ctx.files_dir.is_dir() else []
            if len(files) != 1:
                raise InterfaceError(f"{ctx.name}: expected one payload file, found {len(files)}")
            staged = files[0]
        image = staged.read_bytes()
        saved = directory / "previous.json"
        if not saved.exists():
            write_atomic(directory / "previous.bin", self.device.read_firmware())
            previous = {"version": self.device.installed_version()}
            write_atomic(saved, json.dumps(previous).encode())
        self.device.write_firmware(image, self._target_version(ctx))

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        # Reboot the device (called because needs_artifact_reboot said YES).
        self.device.reboot()

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        # Check the device came back up running the new software; raise if not.
        expected = self._target_version(ctx)
        running = self.device.running_version()
        if running != expected:
            raise InterfaceError(
                f"{ctx.name}: after the reboot the device runs {running!r}, expected {expected!r}"
            )

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        # Make the update permanent (e.g. mark the new bank as good). Keep what an explicit
        # rollback needs until cleanup. The stand-in device has nothing to confirm.
        ctx.log.info("%s: committed", ctx.name)

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        # Always the last state, whatever happened: remove temporary data, change nothing else.
        if ctx.work_dir is not None:
            shutil.rmtree(ctx.work_dir / "tmp" / DRIVER, ignore_errors=True)

    # ------------------------------------------------------------------ error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        # Restore the previous software (install had started and something failed, here or in
        # any other Component of the System).
        directory = self._dir(ctx)
        saved = directory / "previous.json"
        if not saved.exists():
            ctx.log.info("%s: install never changed the device; nothing to roll back", ctx.name)
            return
        previous = json.loads(saved.read_text())
        if previous["version"] is None:
            raise InterfaceError(f"{ctx.name}: the device had no version before; cannot restore")
        self.device.write_firmware((directory / "previous.bin").read_bytes(), previous["version"])

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        # Reboot into the restored software.
        self.device.reboot()

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        # Check the device runs the previous software again; the orchestrator retries
        # artifact_rollback_reboot a few times when this fails.
        saved = self._dir(ctx) / "previous.json"
        if not saved.exists():
            return
        expected = json.loads(saved.read_text())["version"]
        running = self.device.running_version()
        if running != expected:
            raise InterfaceError(
                f"{ctx.name}: after the rollback the device runs {running!r}, expected {expected!r}"
            )

    @hookimpl
    def artifact_failure(self, ctx: InterfaceContext) -> None:
        # Tidy up after a failed install (after the rollback states, if they ran).
        ctx.log.warning("%s: the update failed", ctx.name)
