"""The SMP link from synchronous hooks: every wait ends when ctx.cancelled is set or at the
deadline, and an upload reports its progress through ctx.progress."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from mcuboot_helpers import Sim, body
from orchestrator_core import drivers
from orchestrator_core.driver_api import Component, InterfaceContext, InterfaceTimeout, hookimpl
from smpclient.transport import SMPTransport

from mender_orchestrator_mcuboot.driver import McubootDriver
from mender_orchestrator_mcuboot.image import parse
from mender_orchestrator_mcuboot.link import open_transport
from mender_orchestrator_mcuboot.settings import Settings


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port where datagrams arrive and nobody answers (a device that hangs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        yield hole.getsockname()[1]


def context(args: tuple[str, ...], timeout: float) -> tuple[McubootDriver, InterfaceContext]:
    component = Component("sensor_mcu", "mcuboot", args)
    ctx = InterfaceContext(component, logging.getLogger("test"), timeout_seconds=timeout)
    return McubootDriver(component), ctx


def test_a_wait_ends_soon_after_cancelled_is_set(silent_port: int) -> None:
    args = ("--transport=udp", "--host=127.0.0.1", f"--port={silent_port}",
            "--request-timeout=60")  # fmt: skip
    driver, ctx = context(args, timeout=300)
    threading.Timer(0.3, ctx.cancelled.set).start()
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout) as raised:
        driver.identity(ctx)

    assert time.monotonic() - started < 2
    assert str(raised.value) == (
        "sensor_mcu[0] (interface mcuboot): the call was cancelled while reading the node "
        "name (OS info 'n')"
    )


def test_a_wait_ends_at_the_deadline(silent_port: int) -> None:
    args = ("--transport=udp", "--host=127.0.0.1", f"--port={silent_port}",
            "--request-timeout=60")  # fmt: skip
    driver, ctx = context(args, timeout=0.4)
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout) as raised:
        driver.provides(ctx)

    assert time.monotonic() - started < 2
    assert "the Interface timeout (0.4 s) ran out while reading the image list" in str(
        raised.value
    )


def test_upload_reports_progress_up_to_the_image_size(sim: Sim) -> None:
    driver, ctx = context(sim.serial_args(), timeout=60)
    reports: list[tuple[int, int | None, str]] = []
    ctx.progress_sink = lambda done, total, what: reports.append((done, total, what))
    image = sim.sign("2.0.0", body(5000, 7))

    with driver._link(ctx) as link:
        link.initialise()
        driver._upload(ctx, link, image, parse(image))

    assert reports[-1] == (len(image), len(image), "bytes uploaded")
    done = [d for d, _, _ in reports]
    assert done == sorted(done) and len(done) > 3  # one report per request
    assert sim.slot(1).startswith(image)


class Tunnel:
    """A vendor plugin adding the transport ``tunnel`` (``--address=HOST:PORT``), here UDP."""

    @hookimpl
    def mcuboot_transport(
        self, ctx: InterfaceContext, settings: Settings
    ) -> tuple[SMPTransport, str] | None:
        if settings.transport != "tunnel" or settings.address is None:
            return None
        host, _, port = settings.address.rpartition(":")
        return open_transport(replace(settings, transport="udp", host=host, port=int(port)))


def test_a_plugin_adds_a_transport(sim: Sim, tmp_path: Path) -> None:
    component = Component("sensor_mcu", "mcuboot",
                          ("--transport=tunnel", f"--address=127.0.0.1:{sim.port}"))  # fmt: skip
    resolution = drivers.resolve("mcuboot", tmp_path)
    driver = drivers.ComponentDriver(component, resolution, McubootDriver(component), [Tunnel()])
    ctx = driver.context(log=logging.getLogger("test"), timeout_seconds=10)

    assert driver.provides(ctx)["rootfs-image.mcuboot.version"] == "1.0.0"
