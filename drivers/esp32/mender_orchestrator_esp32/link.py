"""The ROM serial loader through esptool, used as a library.

One ``Session`` is one connection: open the port, reset into the download mode and sync
(``detect_chip``), check the chip, raise the baud rate, attach the SPI flash; then reads,
writes (FLASH_BEGIN erases, FLASH_DATA blocks, never FLASH_END, which would leave the loader),
MD5 checks, and the reset into the application. An ESP32 is served by its ROM alone (reads are
READ_FLASH_SLOW); the later chips (S2, S3, C3, C2, C6, H2) through esptool's flasher stub,
uploaded and started first, as esptool does by default (the S3's and C3's ROMs can neither read
nor sum flash).

Every esptool or serial failure becomes an ``InterfaceError`` naming the Component, the port
and the step. esptool prints to stdout by default, which would mix with the orchestrator's
``--json`` output; its messages go to this module's logger instead.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import serial
from esptool.cmds import detect_chip
from esptool.logger import TemplateLogger, log
from esptool.reset import ResetStrategy
from esptool.util import FatalError, NotImplementedInROMError
from orchestrator_core.driver_api import InterfaceContext, InterfaceError, InterfaceTimeout

from mender_orchestrator_esp32.settings import Settings

ROM_BAUD = 115200
# as esptool's CHIP_NAME spells them
CHIP_NAMES = {
    "esp32": "ESP32",
    "esp32s2": "ESP32-S2",
    "esp32s3": "ESP32-S3",
    "esp32c3": "ESP32-C3",
    "esp32c2": "ESP32-C2",
    "esp32c6": "ESP32-C6",
    "esp32h2": "ESP32-H2",
}
CANCELLED = "stopped: the deadline passed or the orchestrator was told to stop"
LOGGER = logging.getLogger("mender_orchestrator_esp32.esptool")


class _ToLogging(TemplateLogger):  # type: ignore[misc]
    """esptool's output as debug lines of a logger; its errors as warnings (the driver
    raises its own error, naming the Component, for whatever failed)."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text:
            LOGGER.debug("%s", text)

    def note(self, message: str) -> None:
        LOGGER.debug("%s", message)

    def warning(self, message: str) -> None:
        LOGGER.debug("%s", message)  # e.g. that a pty has no DTR/RTS: the caller explains

    def error(self, message: str) -> None:
        LOGGER.warning("%s", message)

    def stage(self, finish: bool = False) -> None:
        pass

    def progress_bar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_verbosity(self, verbosity: str) -> None:
        pass


log.set_logger(_ToLogging())
# bound to esptool's own console when esptool was imported: "Chip was NOT reset" on a port
# without DTR/RTS (a pty) would go to stderr once per process
ResetStrategy.print_once.print_callback = _ToLogging().note

LoaderError = (FatalError, NotImplementedInROMError, serial.SerialException, OSError, ValueError)


class Session:
    """An open connection to the ROM loader of one chip."""

    def __init__(self, settings: Settings, ctx: InterfaceContext, esp: Any) -> None:
        self.settings = settings
        self.ctx = ctx
        self.esp = esp

    @property
    def where(self) -> str:
        loader = "flasher stub" if self.esp.IS_STUB else "ROM loader"
        return f"{self.esp.CHIP_NAME} {loader} on {self.settings.port}"

    def fail(self, step: str, exc: BaseException) -> InterfaceError:
        if self.ctx.cancelled.is_set():  # the port was closed under esptool's feet
            return InterfaceTimeout(f"{self.ctx.name}: {self.where}: {step}: {CANCELLED}")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return InterfaceError(f"{self.ctx.name}: {self.where}: {step}: {reason}")

    def _check_time(self, step: str) -> None:
        if self.ctx.cancelled.is_set():
            raise InterfaceTimeout(f"{self.ctx.name}: {self.where}: {step}: {CANCELLED}")
        if time.monotonic() > self.ctx.deadline:
            raise InterfaceTimeout(
                f"{self.ctx.name}: {self.where}: {step}: InterfaceTimeoutSeconds ran out"
            )

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Turn esptool's and the port's failures during ``what`` into an InterfaceError."""
        try:
            yield
        except LoaderError as exc:
            raise self.fail(what, exc) from exc
        except Exception as exc:
            if self.ctx.cancelled.is_set():  # whatever a port closed mid-call raised
                raise self.fail(what, exc) from exc
            raise

    def mac(self) -> str:
        with self.step("reading the MAC from eFuse"):
            return "".join(f"{b:02x}" for b in self.esp.read_mac())

    def read(self, offset: int, length: int, what: str) -> bytes:
        self._check_time(f"reading {what}")
        with self.step(f"reading {what} (0x{offset:x}, {length} bytes)"):
            data = bytes(self.esp.read_flash(offset, length))
        if len(data) != length:
            raise InterfaceError(
                f"{self.ctx.name}: {self.where}: reading {what}: got {len(data)} of {length} bytes"
            )
        return data

    def md5(self, offset: int, length: int, what: str) -> str:
        with self.step(f"MD5 of {what} (0x{offset:x}, {length} bytes)"):
            return str(self.esp.flash_md5sum(offset, length))

    def write(
        self,
        offset: int,
        data: bytes,
        what: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Erase and write ``data`` at ``offset``, then check its MD5 on the chip."""
        block_size = int(self.esp.FLASH_WRITE_SIZE)
        self._check_time(f"writing {what}")
        with self.step(f"erasing for {what} (0x{offset:x}, {len(data)} bytes)"):
            blocks = self.esp.flash_begin(len(data), offset, logging=False)
        for seq in range(blocks):
            self._check_time(f"writing {what}")
            block = data[seq * block_size : (seq + 1) * block_size]
            block += b"\xff" * (block_size - len(block))
            with self.step(f"writing {what}: block {seq} at 0x{offset + seq * block_size:x}"):
                self.esp.flash_block(block, seq, timeout=self.settings.command_timeout)
            if progress is not None:
                progress(min((seq + 1) * block_size, len(data)), len(data))
        found = self.md5(offset, len(data), what)
        wanted = hashlib.md5(data).hexdigest()
        if found != wanted:
            raise InterfaceError(
                f"{self.ctx.name}: {self.where}: {what} at 0x{offset:x} reads back with MD5 "
                f"{found}, not {wanted} as written"
            )

    def start_application(self) -> None:
        """Leave the loader: the chip boots what otadata selects."""
        with self.step(f"starting the application (--after={self.settings.after})"):
            if self.settings.after == "soft-reset":
                self.esp.soft_reset(False)  # FLASH_BEGIN(0, 0) + FLASH_END(run user code)
            elif self.settings.after == "watchdog-reset":
                self.esp.watchdog_reset()  # the RTC watchdog, armed through WRITE_REG
            else:
                self.esp.hard_reset()


@contextmanager
def session(settings: Settings, ctx: InterfaceContext) -> Iterator[Session]:
    """Connect, yield the session, close the port (also on ``ctx.cancelled``, which unblocks a
    read in progress)."""
    esp = _connect(settings, ctx)
    done = threading.Event()

    def close_on_cancel() -> None:
        while not done.wait(0.1):
            if ctx.cancelled.is_set():
                esp._port.close()
                return

    watcher = threading.Thread(target=close_on_cancel, daemon=True)
    watcher.start()
    try:
        current = Session(settings, ctx, esp)
        _prepare(current)
        yield current
    finally:
        done.set()
        watcher.join()
        try:
            esp._port.close()
        except LoaderError:
            pass


def _connect(settings: Settings, ctx: InterfaceContext) -> Any:
    port = settings.port
    started = time.monotonic()
    try:
        esp = detect_chip(
            port,
            min(ROM_BAUD, settings.baud),
            connect_mode=settings.before,
            connect_attempts=settings.connect_attempts,
        )
    except (serial.SerialException, OSError) as exc:
        raise InterfaceError(f"{ctx.name}: cannot open the serial port {port}: {exc}") from exc
    except FatalError as exc:
        text = str(exc)
        if "Could not open" in text:
            reason = text.split("\n(", 1)[-1].split(")\n", 1)[0] if "\n(" in text else text
            raise InterfaceError(
                f"{ctx.name}: cannot open the serial port {port}: {reason.strip()}"
            ) from exc
        reason = text.strip().splitlines()[0]
        raise InterfaceError(
            f"{ctx.name}: no ESP32 ROM loader answered on {port} "
            f"({settings.connect_attempts} attempt(s), {time.monotonic() - started:.1f} s, "
            f"--before={settings.before}): {reason}. Is it the right port, and can the board "
            f"reset into the download mode?"
        ) from exc
    if esp.CHIP_NAME.replace("-", "").lower() != settings.chip:
        esp._port.close()
        wanted = CHIP_NAMES[settings.chip]
        raise InterfaceError(
            f"{ctx.name}: the chip on {port} is an {esp.CHIP_NAME}, not the {wanted} this "
            f"Component is configured for (--chip={settings.chip})"
        )
    return esp


def _prepare(current: Session) -> None:
    settings = current.settings
    if not current.esp.IS_STUB and settings.chip != "esp32":
        # only the ESP32's ROM reads flash (READ_FLASH_SLOW) and sums it (SPI_FLASH_MD5)
        with current.step("uploading and starting esptool's flasher stub"):
            current.esp = current.esp.run_stub()
    esp = current.esp
    with current.step(f"setting up ({settings.baud} baud, SPI flash attach)"):
        if settings.baud > ROM_BAUD:
            esp.change_baud(settings.baud)
        esp.flash_spi_attach(0)
        esp.flash_set_parameters(settings.flash_size)
