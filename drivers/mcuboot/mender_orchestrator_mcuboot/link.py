"""SMP requests from the driver's synchronous hooks, over an smpclient transport.

smpclient is asyncio-based; each ``Link`` runs its own event loop, and every wait on it
stops at ``ctx.deadline`` or as soon as ``ctx.cancelled`` is set (the engine's deadline or a
signal), closing the transport. Requests are matched to answers by sequence number, so a
late answer to a request that timed out and was sent again is skipped, not taken for the
new one. Errors come back as ``SmpError`` with the group's error name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar

import cbor2
from orchestrator_core.driver_api import InterfaceContext, InterfaceError, InterfaceTimeout
from smp import header as smpheader
from smp import image_management as smpimg
from smp import message as smpmsg
from smp import os_management as smpos
from smp.error import MGMT_ERR
from smpclient.transport import SMPTransport, SMPTransportDisconnected

from mender_orchestrator_mcuboot.settings import Settings

T = TypeVar("T")
R = TypeVar("R", bound=smpmsg.Response)
POLL = 0.05  # how often a wait looks at ctx.cancelled
GROUPS = {
    int(smpheader.GroupId.OS_MANAGEMENT): ("OS", smpos.OS_MGMT_RET_RC),
    int(smpheader.GroupId.IMAGE_MANAGEMENT): ("image", smpimg.IMG_MGMT_ERR),
}


class NoAnswer(InterfaceError):
    """The device did not answer a request (it is resetting, or gone)."""


class SmpError(InterfaceError):
    """The device answered a request with an error code."""

    def __init__(self, message: str, group: int, rc: int) -> None:
        super().__init__(message)
        self.group = group
        self.rc = rc


def open_transport(settings: Settings) -> tuple[SMPTransport, str] | None:
    """The built-in transports: ``udp`` and ``serial`` (None for any other name)."""
    if settings.transport == "udp":
        from smpclient.transport.udp import SMPUDPTransport

        class UDP(SMPUDPTransport):
            async def connect(self, address: str, timeout_s: float, port: int = 0) -> None:
                await super().connect(address, timeout_s, settings.port)

        return UDP(mtu=settings.mtu), str(settings.host)
    if settings.transport == "serial":
        from smpclient.transport.serial import SMPSerialTransport

        return SMPSerialTransport(baudrate=settings.baudrate), str(settings.device)
    return None


def error_text(group: int, rc: int) -> str:
    name, codes = GROUPS.get(group, (f"group {group}", None))
    try:
        meaning = codes(rc).name if codes is not None else MGMT_ERR(rc).name
    except ValueError:
        meaning = "unknown"
    return f"{name} error {rc} ({meaning})"


class Link:
    """One open SMP connection; ``with Link(...) as link:`` connects and disconnects."""

    def __init__(
        self, ctx: InterfaceContext, settings: Settings, transport: SMPTransport, address: str
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.transport = transport
        self.address = address
        self.runner = asyncio.Runner()
        self.buffer_size: int | None = None

    def __enter__(self) -> Link:
        try:
            self.run(
                self.transport.connect(self.address, self.settings.request_timeout),
                f"connecting to {self.settings.where}",
            )
        except (OSError, TimeoutError) as exc:
            self.runner.close()
            raise InterfaceError(
                f"{self.ctx.name}: cannot open {self.settings.where}: {exc or 'timed out'}"
            ) from exc
        except BaseException:
            self.runner.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with suppress(Exception):
                self.run(self.transport.disconnect(), "disconnecting")
        finally:
            self.runner.close()

    # ------------------------------------------------------------------ running coroutines

    def run(self, coroutine: Coroutine[Any, Any, T], doing: str) -> T:
        """Run ``coroutine`` on the link's loop until it ends, the deadline passes or the call
        is cancelled; the last two raise ``InterfaceTimeout`` naming what was being done."""
        ctx = self.ctx

        async def guarded() -> T:
            task = asyncio.ensure_future(coroutine)
            while True:
                done, _ = await asyncio.wait({task}, timeout=POLL)
                if done:
                    return task.result()
                if ctx.cancelled.is_set() or time.monotonic() >= ctx.deadline:
                    task.cancel()
                    with suppress(asyncio.CancelledError, Exception):
                        await task
                    why = "the call was cancelled" if ctx.cancelled.is_set() else (
                        f"the Interface timeout ({ctx.timeout_seconds:g} s) ran out"
                    )
                    raise InterfaceTimeout(f"{ctx.name}: {why} while {doing}")

        return self.runner.run(guarded())

    # ------------------------------------------------------------------ requests

    def request(
        self, request: Callable[[], smpmsg.Request], answer: type[R], doing: str,
        *, retries: int | None = None, timeout: float | None = None,
    ) -> R:  # fmt: skip
        """Send ``request()`` (a new one per try: a new sequence number) until an answer of
        type ``answer`` comes back; ``NoAnswer`` after ``retries`` resends, ``SmpError`` if
        the device refuses it."""
        tries = 1 + (self.settings.retries if retries is None else retries)
        limit = self.settings.request_timeout if timeout is None else timeout
        for _ in range(tries):
            sent = request()
            try:
                frame = self.run(self._exchange(sent, limit), doing)
            except TimeoutError:
                continue
            except SMPTransportDisconnected as exc:
                raise NoAnswer(f"{self.ctx.name}: {self.settings.where} is gone: {exc}") from exc
            return self._decode(frame, answer, doing)
        raise NoAnswer(
            f"{self.ctx.name}: no answer from {self.settings.where} while {doing} "
            f"({tries} tries, {limit:g} s each: --request-timeout, --retries)"
        )

    async def _exchange(self, request: smpmsg.Request, limit: float) -> bytes:
        async with asyncio.timeout(limit):
            await self.transport.send(request.BYTES)
            while True:
                frame = await self.transport.receive()
                header = smpheader.Header.loads(frame[: smpheader.Header.SIZE])
                if (
                    header.sequence == request.header.sequence
                    and header.group_id == request.header.group_id
                    and header.command_id == request.header.command_id
                ):
                    return bytes(frame)

    def _decode(self, frame: bytes, answer: type[R], doing: str) -> R:
        header = smpheader.Header.loads(frame[: smpheader.Header.SIZE])
        try:
            body = cbor2.loads(frame[smpheader.Header.SIZE :])
        except (ValueError, cbor2.CBORDecodeError) as exc:
            raise InterfaceError(
                f"{self.ctx.name}: undecodable answer while {doing}: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise InterfaceError(f"{self.ctx.name}: answer while {doing} is not a CBOR map")
        group, rc = int(header.group_id), 0
        if isinstance(body.get("err"), dict):  # SMP version 2
            group, rc = int(body["err"].get("group", group)), int(body["err"].get("rc", 0))
        elif isinstance(body.get("rc"), int) and answer is not smpimg.ImageUploadWriteResponse:
            rc = int(body["rc"])  # SMP version 1: a bare "rc"
            body = {k: v for k, v in body.items() if k != "rc"}
        if rc:
            raise SmpError(
                f"{self.ctx.name}: {self.settings.where} refused {doing}: {error_text(group, rc)}",
                group, rc,
            )  # fmt: skip
        try:
            return answer.load(header, body)
        except Exception as exc:  # pydantic's ValidationError, a wrong group
            raise InterfaceError(
                f"{self.ctx.name}: unexpected answer while {doing}: {body!r} ({exc})"
            ) from exc

    # ------------------------------------------------------------------ the commands used

    def initialise(self) -> None:
        """Learn the device's SMP buffer size (MCUmgr parameters), as smpclient's own
        ``connect`` does, so uploads fill the device's buffer."""
        try:
            params = self.request(
                smpos.MCUMgrParametersReadRequest, smpos.MCUMgrParametersReadResponse,
                "reading the MCUmgr parameters",
            )  # fmt: skip
        except SmpError:
            return  # an older server without the command: the transport's MTU it is
        self.buffer_size = params.buf_size
        self.transport.initialize(params.buf_size)

    def images(self, doing: str = "reading the image list") -> list[smpimg.ImageState]:
        answer = self.request(
            smpimg.ImageStatesReadRequest, smpimg.ImageStatesReadResponse, doing
        )
        return list(answer.images)
