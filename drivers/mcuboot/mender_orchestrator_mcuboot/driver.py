"""The ``mcuboot`` driver: updates a Zephyr/MCUboot device through SMP (mcumgr).

MCUboot keeps two slots: the device runs the primary, an update goes to the secondary. The
mapping to the Interface protocol:

- Download: check the payload is a signed MCUboot image (header, TLVs, SHA-256), then upload
  it to the secondary slot (the running application is not touched).
- ArtifactInstall: mark the uploaded image for test (it runs after the next reset only).
- ArtifactReboot: reset; MCUboot swaps the slots and boots the new image in test mode.
- ArtifactVerifyReboot: the running image's hash and version are the uploaded image's.
- ArtifactCommit: confirm the running image, so MCUboot keeps it.
- ArtifactRollback / ArtifactRollbackReboot: reset without confirming, so MCUboot swaps the
  previous image back (after a commit: mark the previous image, still in the secondary slot,
  permanent first). No backup is needed: the previous image never leaves the device.
- ArtifactVerifyRollbackReboot: the device runs the previous image, confirmed.

Everything a later state needs (the hashes and versions) is kept in the File API directory
(``tmp/mcuboot-driver/state.json``), so a deployment survives a restart of the orchestrator.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from orchestrator_core.driver_api import (
    Component,
    DriverBase,
    InterfaceContext,
    InterfaceError,
    InterfaceTimeout,
    RebootNeed,
    hookimpl,
    write_atomically,
)
from smp import image_management as smpimg
from smp import os_management as smpos
from smpclient.transport import SMPTransport

from mender_orchestrator_mcuboot import hookspecs
from mender_orchestrator_mcuboot.image import BadImage, ImageInfo, parse
from mender_orchestrator_mcuboot.link import Link, NoAnswer, SmpError, open_transport
from mender_orchestrator_mcuboot.settings import PARSER, Settings
from mender_orchestrator_mcuboot.settings import parse as parse_settings

# resets ArtifactRollbackReboot may need: a pending test swaps in the new image, the next
# reset reverts it, the last check sees the previous image
ROLLBACK_RESETS = 3
CBOR_BYTES_HEAD = 3  # the longest CBOR head of a byte string below 64 KiB
FIRST_POLL = 0.2  # seconds: the first wait for an answer after a reset


@dataclass(frozen=True)
class Saved:
    """What Download learnt, for the states after it."""

    new_hash: str
    new_version: str
    new_size: int
    old_hash: str
    old_version: str


class Store:
    """The driver's file in the Component's File API directory."""

    def __init__(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is None:
            raise InterfaceError(f"{ctx.name}: this state needs the File API directory")
        self.directory = ctx.work_dir / "tmp" / "mcuboot-driver"

    @property
    def path(self) -> Path:
        return self.directory / "state.json"

    def load(self) -> Saved | None:
        try:
            return Saved(**json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise InterfaceError(f"{self.path} is unreadable: {exc}") from exc

    def save(self, saved: Saved) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(asdict(saved)).encode())

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _slot(images: list[smpimg.ImageState], slot: int) -> smpimg.ImageState | None:
    return next((i for i in images if i.slot == slot and (i.image or 0) == 0), None)


def _hash(state: smpimg.ImageState | None) -> str:
    return bytes(state.hash).hex() if state is not None and state.hash else ""


def _running(images: list[smpimg.ImageState]) -> smpimg.ImageState | None:
    active = next((i for i in images if i.active and (i.image or 0) == 0), None)
    return active or _slot(images, 0)


class McubootDriver(DriverBase):
    """In-process driver for the ``mcuboot`` Interface; one instance per Component."""

    extra_hookspecs = hookspecs
    driver_api = ">=1.0,<2"  # the orchestrator_core.driver_api versions this is written for
    interface_args_parser = PARSER

    def __init__(self, component: Component) -> None:
        super().__init__(component)
        self.settings = parse_settings(component)

    @hookimpl(trylast=True)
    def mcuboot_transport(
        self, ctx: InterfaceContext, settings: Settings
    ) -> tuple[SMPTransport, str] | None:
        return open_transport(settings)

    # ------------------------------------------------------------------ queries

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        with self._link(ctx) as link:
            try:
                info = link.request(
                    lambda: smpos.OSApplicationInfoReadRequest(format="n"),
                    smpos.OSApplicationInfoReadResponse, "reading the node name (OS info 'n')",
                )  # fmt: skip
            except SmpError as exc:
                raise InterfaceError(
                    f"{exc}; the Identity is the device's node name: enable "
                    f"CONFIG_MCUMGR_GRP_OS_INFO (and CONFIG_NET_HOSTNAME_UNIQUE for a name "
                    f"made from the hardware ID)"
                ) from exc
        identity = info.output.strip()
        if not identity or any(c.isspace() for c in identity):
            raise InterfaceError(f"{ctx.name}: the device's node name {info.output!r} is no ID")
        return identity

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        with self._link(ctx) as link:
            running = _running(link.images())
        if running is None:
            raise InterfaceError(f"{ctx.name}: the device reports no image in its primary slot")
        prefix = f"rootfs-image.{self.component.interface}"
        return {f"{prefix}.version": running.version, f"{prefix}.hash": _hash(running)}

    @hookimpl
    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        with self._link(ctx) as link:
            running = _running(link.images())
            boot = link.request(
                smpos.BootloaderInformationReadRequest, smpos.BootloaderInformationReadResponse,
                "reading the bootloader information",
            )  # fmt: skip
        return [
            ("mcuboot_link", self.settings.where),
            ("mcuboot_bootloader", boot.bootloader),
            ("mcuboot_image_version", running.version if running else "none"),
            ("mcuboot_image_hash", _hash(running)),
        ]

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.YES

    @hookimpl
    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return True

    # ------------------------------------------------------------------ update states

    @hookimpl
    def download(self, ctx: InterfaceContext) -> None:
        if ctx.payload is None or ctx.artifact is None:
            raise InterfaceError(f"{ctx.name}: Download called without an Artifact")
        name, data = self._read_payload(ctx)
        try:
            info = parse(data)
        except BadImage as exc:
            raise InterfaceError(
                f"{ctx.name}: payload {name} is not an MCUboot image the device can boot: {exc}"
            ) from exc
        wanted = ctx.artifact.version_for(self.component.interface)
        if wanted != info.version:
            raise InterfaceError(
                f"{ctx.name}: the Artifact installs version {wanted!r} but the MCUboot image "
                f"header of {name} says {info.version!r}; build the Artifact with "
                f"--software-version {info.version}"
            )
        store = Store(ctx)
        with self._link(ctx) as link:
            images = link.images()
            running = _running(images)
            if running is None:
                raise InterfaceError(f"{ctx.name}: the device reports no running image")
            store.save(Saved(info.hash_hex, info.version, info.size, _hash(running),
                             running.version))  # fmt: skip
            if _hash(_slot(images, 1)) == info.hash_hex:
                ctx.log.info("%s: the secondary slot already holds %s", ctx.name, info.version)
                ctx.progress(info.size, info.size, "bytes uploaded")
                return
            link.initialise()
            self._upload(ctx, link, data, info)

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        with self._link(ctx) as link:
            secondary = _slot(link.images(), 1)
            if _hash(secondary) != saved.new_hash:
                raise InterfaceError(
                    f"{ctx.name}: the secondary slot no longer holds the uploaded image "
                    f"{saved.new_version} (hash {saved.new_hash[:16]}…, found "
                    f"{_hash(secondary)[:16] or 'none'}): erased or replaced since Download"
                )
            if secondary is not None and secondary.pending:
                return
            answer = link.request(
                lambda: smpimg.ImageStatesWriteRequest(
                    hash=bytes.fromhex(saved.new_hash), confirm=False),
                smpimg.ImageStatesWriteResponse, f"marking image {saved.new_version} for test",
            )  # fmt: skip
        marked = _slot(list(answer.images), 1)
        if marked is None or not marked.pending:
            raise InterfaceError(
                f"{ctx.name}: the device accepted the test request but does not list image "
                f"{saved.new_version} as pending"
            )

    @hookimpl
    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        self._reset(ctx)

    @hookimpl
    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        images = self._await_device(ctx, "after the reset")
        running = _running(images)
        if _hash(running) == saved.new_hash and running is not None:
            if running.version != saved.new_version:
                raise InterfaceError(
                    f"{ctx.name}: the device runs the uploaded image but reports version "
                    f"{running.version!r}, not {saved.new_version!r}"
                )
            return
        found = "nothing" if running is None else f"{running.version} ({_hash(running)[:16]}…)"
        if _hash(running) == saved.old_hash:
            secondary = _slot(images, 1)
            if _hash(secondary) != saved.new_hash:
                raise InterfaceError(
                    f"{ctx.name}: MCUboot refused to boot image {saved.new_version}: it failed "
                    f"the bootloader's signature or hash check and was erased from the "
                    f"secondary slot; the device runs the previous image {found}"
                )
            if secondary is not None and secondary.pending:
                raise InterfaceError(
                    f"{ctx.name}: the device still runs the previous image {found} after the "
                    f"reset, with {saved.new_version} pending: the reset did not happen"
                )
            raise InterfaceError(
                f"{ctx.name}: the device is back on the previous image {found}: image "
                f"{saved.new_version} was booted for test but the device restarted before it "
                f"was confirmed (it crashed or its watchdog fired), so MCUboot reverted it"
            )
        raise InterfaceError(
            f"{ctx.name}: after the reset the device runs {found}, expected "
            f"{saved.new_version} ({saved.new_hash[:16]}…)"
        )

    @hookimpl
    def artifact_commit(self, ctx: InterfaceContext) -> None:
        saved = self._saved(ctx)
        with self._link(ctx) as link:
            running = _running(link.images())
            if _hash(running) != saved.new_hash:
                raise InterfaceError(
                    f"{ctx.name}: refusing to confirm: the device no longer runs image "
                    f"{saved.new_version}"
                )
            answer = link.request(
                lambda: smpimg.ImageStatesWriteRequest(
                    hash=bytes.fromhex(saved.new_hash), confirm=True),
                smpimg.ImageStatesWriteResponse, f"confirming image {saved.new_version}",
            )  # fmt: skip
        confirmed = _running(list(answer.images))
        if confirmed is None or _hash(confirmed) != saved.new_hash or not confirmed.confirmed:
            raise InterfaceError(
                f"{ctx.name}: the device accepted the confirmation but does not list image "
                f"{saved.new_version} as confirmed"
            )

    @hookimpl
    def cleanup(self, ctx: InterfaceContext) -> None:
        if ctx.work_dir is not None:
            Store(ctx).remove()

    # ------------------------------------------------------------------ error states

    @hookimpl
    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        saved = Store(ctx).load()
        if saved is None:
            ctx.log.info("%s: Download never reached the device; nothing to roll back", ctx.name)
            return
        images = self._await_device(ctx, "before the rollback")
        running = _running(images)
        if _hash(running) != saved.new_hash or running is None or not running.confirmed:
            return  # nothing confirmed the new image: a reset brings the previous one back
        secondary = _slot(images, 1)
        if _hash(secondary) != saved.old_hash:
            raise InterfaceError(
                f"{ctx.name}: cannot roll back: image {saved.new_version} is confirmed and the "
                f"previous image {saved.old_version} is no longer in the secondary slot"
            )
        with self._link(ctx) as link:
            link.request(
                lambda: smpimg.ImageStatesWriteRequest(
                    hash=bytes.fromhex(saved.old_hash), confirm=True),
                smpimg.ImageStatesWriteResponse,
                f"marking the previous image {saved.old_version} permanent",
            )  # fmt: skip

    @hookimpl
    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        saved = Store(ctx).load()
        if saved is None:
            return
        for _ in range(ROLLBACK_RESETS):
            if self._back_on_previous(saved, self._await_device(ctx, "during the rollback")):
                return
            self._reset(ctx)

    @hookimpl
    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        saved = Store(ctx).load()
        if saved is None:
            return
        images = self._await_device(ctx, "after the rollback")
        if not self._back_on_previous(saved, images):
            running = _running(images)
            found = "nothing" if running is None else (
                f"{running.version} ({_hash(running)[:16]}…, "
                f"{'confirmed' if running.confirmed else 'not confirmed'})"
            )
            raise InterfaceError(
                f"{ctx.name}: the rollback did not bring back the previous image "
                f"{saved.old_version} ({saved.old_hash[:16]}…): the device runs {found}"
            )

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _link(self, ctx: InterfaceContext) -> Iterator[Link]:
        if ctx.hook is not None:
            opened = ctx.hook.mcuboot_transport(ctx=ctx, settings=self.settings)
        else:
            opened = self.mcuboot_transport(ctx, self.settings)
        if opened is None:
            raise InterfaceError(
                f"{ctx.name}: no SMP transport {self.settings.transport!r}: built in are udp "
                f"and serial; a plugin implementing the mcuboot_transport hook may add others"
            )
        transport, address = opened
        with Link(ctx, self.settings, transport, address) as link:
            yield link

    def _saved(self, ctx: InterfaceContext) -> Saved:
        saved = Store(ctx).load()
        if saved is None:
            raise InterfaceError(f"{ctx.name}: no record of the Download in {Store(ctx).path}")
        return saved

    def _read_payload(self, ctx: InterfaceContext) -> tuple[str, bytes]:
        assert ctx.payload is not None
        found: list[tuple[str, bytes]] = []
        for payload in ctx.payload.files():
            found.append((payload.name, payload.read()))
        if len(found) != 1:
            names = ", ".join(name for name, _ in found) or "none"
            raise InterfaceError(
                f"{ctx.name}: the mcuboot driver installs exactly one signed image; the "
                f"Artifact has {len(found)} payload files ({names})"
            )
        return found[0]

    def _upload(self, ctx: InterfaceContext, link: Link, data: bytes, info: ImageInfo) -> None:
        """Image upload to slot 1, each chunk as large as the device's buffer allows, going on
        from the offset the device reports (so a lost answer costs one resend)."""
        total = len(data)
        limit = link.transport.max_unencoded_size
        if link.buffer_size is not None:
            limit = min(limit, link.buffer_size)
        sha = hashlib.sha256(data).digest()
        offset = 0
        ctx.log.info("%s: uploading %s (%d bytes) to the secondary slot over %s",
                     ctx.name, info.version, total, self.settings.where)  # fmt: skip
        while offset < total:
            at = offset

            def chunk(size: int, at: int = at) -> smpimg.ImageUploadWriteRequest:
                if at == 0:
                    return smpimg.ImageUploadWriteRequest(
                        off=0, data=data[:size], image=0, len=total, sha=sha, upgrade=False
                    )
                return smpimg.ImageUploadWriteRequest(off=at, data=data[at : at + size])

            room = limit - len(bytes(chunk(0))) - CBOR_BYTES_HEAD
            if room < 32:
                raise InterfaceError(
                    f"{ctx.name}: the device's SMP buffer ({limit} bytes) is too small for an "
                    f"upload request"
                )
            size = min(room, total - at)
            try:
                answer = link.request(
                    partial(chunk, size), smpimg.ImageUploadWriteResponse,
                    f"uploading bytes {at}..{at + size} of {total}",
                )  # fmt: skip
            except SmpError as exc:
                raise InterfaceError(f"{exc} (upload at {at} of {total} bytes)") from exc
            except NoAnswer as exc:
                raise InterfaceError(
                    f"{exc}: the upload was interrupted at {at} of {total} bytes"
                ) from exc
            if answer.off is None or answer.off < at:
                raise InterfaceError(
                    f"{ctx.name}: the upload was interrupted at {at} of {total} bytes: the "
                    f"device now expects offset {answer.off} (it reset or lost power and "
                    f"dropped the upload)"
                )
            offset = min(answer.off, total)
            ctx.progress(offset, total, "bytes uploaded")
        if answer.match is False:
            raise InterfaceError(
                f"{ctx.name}: the device reports the uploaded image does not match its SHA-256"
            )

    def _reset(self, ctx: InterfaceContext) -> None:
        with self._link(ctx) as link:
            try:
                link.request(smpos.ResetWriteRequest, smpos.ResetWriteResponse,
                             "resetting the device", retries=0)  # fmt: skip
            except NoAnswer:
                # the answer may be lost to the reset itself; the wait that follows tells
                ctx.log.info("%s: no answer to the reset request", ctx.name)
        if ctx.cancelled.wait(self.settings.reset_delay):
            raise InterfaceTimeout(f"{ctx.name}: cancelled while the device resets")

    def _await_device(self, ctx: InterfaceContext, when: str) -> list[smpimg.ImageState]:
        """The image list, as soon as the device answers again (a reset, a swap, a watchdog
        restart), within ``--reset-timeout``; the link is opened anew for each try, as a USB
        serial port goes away while its device resets."""
        started = time.monotonic()
        give_up = min(ctx.deadline, started + self.settings.reset_timeout)
        # short tries first, so a device back from a quick reset is seen at once; up to
        # --request-timeout for a slow one
        wait = min(FIRST_POLL, self.settings.request_timeout)
        while True:
            left = give_up - time.monotonic()
            try:
                with self._link(ctx) as link:
                    return link.request(
                        smpimg.ImageStatesReadRequest, smpimg.ImageStatesReadResponse,
                        f"reading the image list {when}", retries=0,
                        timeout=max(0.05, min(wait, left)),
                    ).images  # fmt: skip
            except (InterfaceTimeout, SmpError):
                raise
            except InterfaceError as exc:
                if time.monotonic() >= give_up:
                    raise InterfaceError(
                        f"{ctx.name}: the device did not answer within "
                        f"{give_up - started:.1f} s {when} (--reset-timeout): {exc}"
                    ) from exc
            wait = min(wait * 2, self.settings.request_timeout)
            if ctx.cancelled.wait(0.05):
                raise InterfaceTimeout(f"{ctx.name}: cancelled while waiting for the device")

    @staticmethod
    def _back_on_previous(saved: Saved, images: list[smpimg.ImageState]) -> bool:
        running = _running(images)
        secondary = _slot(images, 1)
        return (
            running is not None
            and _hash(running) == saved.old_hash
            and running.version == saved.old_version
            and bool(running.confirmed)
            and not (secondary is not None and secondary.pending)
        )
