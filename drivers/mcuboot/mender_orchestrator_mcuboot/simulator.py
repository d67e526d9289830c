"""A simulated Zephyr/MCUboot device: an SMP server on UDP 127.0.0.1 and on a pty pair.

It emulates what the driver relies on: MCUboot's primary and secondary slots with their
trailers (pending test or permanent, image_ok, copy_done), the swap on the reset after a test
request (sector by sector, resumed after a power cut), the revert on a reset without
confirmation, and the bootloader's image check (header, SHA-256 TLV, Ed25519 signature with
the device's key: a bad image is erased, not booted). The Zephyr side answers the SMP OS
group (echo, reset, MCUmgr parameters, OS info, bootloader info) and image group (state
read/write, upload, erase), in SMP version 1 or 2.

Everything that survives a power cycle lives on disk, so a reset or a restart of this process
keeps the slots: ``PATH`` (JSON: device settings, trailers, swap progress, faults, counters),
``PATH.slot0`` and ``PATH.slot1`` (the slots' bytes), ``PATH.key`` (the vendor's signing key,
for ``sign``; the device only knows the public key). The server reads ``PATH`` before every
request, so a test can edit ``faults`` between deployments.

Faults (``faults`` in ``PATH``, each removed once it fired):

- ``{"kind": "upload_interrupted", "after_bytes": N, "off_seconds": S}``: the device loses
  power once the upload passes N bytes, and comes back after S seconds without the upload.
- ``{"kind": "power_cut", "after_sectors": N, "off_seconds": S}``: power fails during a swap
  after N sectors; after S seconds MCUboot resumes the swap where it stopped.
- ``{"kind": "hang", "watchdog_seconds": S}``: the next image booted in test mode never
  answers; after S seconds its watchdog resets the device (so MCUboot reverts it), or never
  when S is null: the device never comes back.

A bad signature needs no fault: sign the image with another key (``sign --key``).

    python -m mender_orchestrator_mcuboot.simulator init dev.json --image fw-1.0.0.bin
    python -m mender_orchestrator_mcuboot.simulator sign --key dev.json.key --version 2.0.0 \\
        app.bin fw-2.0.0.bin
    python -m mender_orchestrator_mcuboot.simulator serve dev.json --udp-port 1337 \\
        --pty /tmp/ttyACM-sim
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

MAGIC = 0x96F3B83D
HEADER = struct.Struct("<IIHHIIBBHII")
TLV_INFO = 0x6907
TLV_KEYHASH = 0x01
TLV_SHA256 = 0x10
TLV_ED25519 = 0x24
SMP_HEADER = struct.Struct(">BBHHBB")
GROUP_OS, GROUP_IMAGE = 0, 1
# SMP error codes (general group, and the image group's)
ENOTSUP, EINVAL = 8, 3
IMG_HASH_NOT_FOUND, IMG_INVALID_OFFSET, IMG_HEADER_MAGIC = 8, 20, 23
IMG_TOO_LARGE, IMG_ALREADY_PENDING, IMG_TEST_TO_ACTIVE = 30, 28, 33
START, CONTINUE = b"\x06\x09", b"\x04\x14"


# --------------------------------------------------------------------------- images


def version_fields(text: str) -> tuple[int, int, int, int]:
    """``1.2.3``, ``1.2.3.4`` or ``1.2.3+4`` as (major, minor, revision, build)."""
    parts = text.replace("+", ".", 1).split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {text!r} is not MAJOR.MINOR.REVISION[.BUILD]")
    numbers = [int(p) for p in parts] + [0] * (4 - len(parts))
    if numbers[0] > 255 or numbers[1] > 255 or numbers[2] > 65535 or numbers[3] > 0xFFFFFFFF:
        raise ValueError(f"version {text!r} does not fit the MCUboot header")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def make_image(
    body: bytes, version: str, key: Ed25519PrivateKey, *, header_size: int = 0x200
) -> bytes:
    """An MCUboot image as imgtool signs one: header, padding, body, then the TLV area with
    the key hash, the SHA-256 and an Ed25519 signature of that hash."""
    major, minor, revision, build = version_fields(version)
    header = HEADER.pack(MAGIC, 0, header_size, 0, len(body), 0, major, minor, revision,
                         build, 0)  # fmt: skip
    signed = header + b"\x00" * (header_size - len(header)) + body
    digest = hashlib.sha256(signed).digest()
    public = key.public_key().public_bytes_raw()
    tlvs = (
        struct.pack("<HH", TLV_KEYHASH, 32) + hashlib.sha256(public).digest()
        + struct.pack("<HH", TLV_SHA256, 32) + digest
        + struct.pack("<HH", TLV_ED25519, 64) + key.sign(digest)
    )  # fmt: skip
    return signed + struct.pack("<HH", TLV_INFO, len(tlvs) + 4) + tlvs


@dataclass
class Image:
    """What the bootloader and the image list see of a slot's content."""

    version: str
    sha256: bytes
    length: int
    problem: str | None  # why MCUboot would refuse to boot it (None: it boots)


def inspect(slot: bytes, public_key: bytes) -> Image | None:
    """The image in ``slot`` (None when the slot holds no image header)."""
    if len(slot) < HEADER.size:
        return None
    magic, _, hdr, prot, size, _, major, minor, rev, build, _ = HEADER.unpack_from(slot)
    if magic != MAGIC:
        return None
    version = f"{major}.{minor}.{rev}" + (f".{build}" if build else "")
    end = hdr + size + prot
    if end + 4 > len(slot):
        return Image(version, b"", 0, "image runs past the slot")
    info, total = struct.unpack_from("<HH", slot, end)
    if info != TLV_INFO or end + total > len(slot):
        return Image(version, b"", 0, "no TLV area")
    tlvs: dict[int, bytes] = {}
    at = end + 4
    while at + 4 <= end + total:
        kind, length = struct.unpack_from("<HH", slot, at)
        tlvs[kind] = slot[at + 4 : at + 4 + length]
        at += 4 + length
    digest = hashlib.sha256(slot[:end]).digest()
    image = Image(version, tlvs.get(TLV_SHA256, b""), end + total, None)
    if tlvs.get(TLV_SHA256) != digest:
        image.problem = "SHA-256 TLV does not match"
    elif tlvs.get(TLV_KEYHASH) != hashlib.sha256(public_key).digest():
        image.problem = "signed with an unknown key (key hash)"
    else:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(tlvs.get(TLV_ED25519, b""),
                                                                  digest)  # fmt: skip
        except InvalidSignature:
            image.problem = "bad Ed25519 signature"
    return image


# --------------------------------------------------------------------------- the device on disk


def blank_trailer() -> dict[str, bool]:
    return {"magic": False, "image_ok": False, "copy_done": False}


def new_document(public_key: bytes, **device: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "node_name": "zephyr-5e1f00d5a1b2",
        "hardware": "nrf52840dk/nrf52840",
        "slot_size": 64 * 1024,
        "sector_size": 4096,
        "buf_size": 1024,
        "boot_seconds": 0.2,
        "baudrate": None,  # pace the serial line like a UART at this speed (None: no pacing)
        "public_key": public_key.hex(),
    }
    unknown = set(device) - set(settings)
    if unknown:
        raise ValueError(f"unknown device settings: {', '.join(sorted(unknown))}")
    settings.update(device)
    return {
        "device": settings,
        "trailers": {"0": blank_trailer(), "1": blank_trailer()},
        "swap": None,
        "faults": [],
        "stats": {"boots": 0, "resets": 0, "swaps": 0, "resumed_swaps": 0, "reverts": 0,
                  "rejected": 0, "uploads": 0},
    }


class Store:
    """The device's persistent parts: ``PATH`` and the two slot files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict[str, Any] = {}

    def slot_path(self, slot: int) -> Path:
        return self.path.with_name(f"{self.path.name}.slot{slot}")

    @property
    def key_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.key")

    def load(self) -> dict[str, Any]:
        try:
            self.doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SystemExit(
                f"no simulated device at {self.path}: create one with `python -m "
                f"mender_orchestrator_mcuboot.simulator init {self.path}`"
            ) from None
        return self.doc

    def save(self) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.doc, indent=1), encoding="utf-8")
        os.replace(temporary, self.path)

    @property
    def device(self) -> dict[str, Any]:
        settings: dict[str, Any] = self.doc["device"]
        return settings

    def trailer(self, slot: int) -> dict[str, bool]:
        trailer: dict[str, bool] = self.doc["trailers"][str(slot)]
        return trailer

    def count(self, name: str) -> None:
        self.doc["stats"][name] = self.doc["stats"].get(name, 0) + 1

    def read(self, slot: int) -> bytes:
        return self.slot_path(slot).read_bytes()

    def write(self, slot: int, offset: int, data: bytes) -> None:
        with self.slot_path(slot).open("r+b") as f:
            f.seek(offset)
            f.write(data)

    def erase(self, slot: int) -> None:
        self.slot_path(slot).write_bytes(b"\xff" * self.device["slot_size"])
        self.doc["trailers"][str(slot)] = blank_trailer()

    def image(self, slot: int) -> Image | None:
        return inspect(self.read(slot), bytes.fromhex(self.device["public_key"]))

    def take_fault(self, kind: str) -> dict[str, Any] | None:
        for fault in self.doc["faults"]:
            if fault.get("kind") == kind:
                self.doc["faults"].remove(fault)
                return dict(fault)
        return None


def create(
    path: Path, image: bytes | None = None, key: Ed25519PrivateKey | None = None, **device: Any
) -> Ed25519PrivateKey:
    """A new device at ``path`` trusting ``key`` (a new one by default), with a factory
    ``image`` in the primary slot, confirmed; returns the key, also written to ``PATH.key``."""
    key = key or Ed25519PrivateKey.generate()
    store = Store(path)
    store.doc = new_document(key.public_key().public_bytes_raw(), **device)
    store.key_path.write_text(key.private_bytes_raw().hex() + "\n", encoding="utf-8")
    for slot in (0, 1):
        store.erase(slot)
    if image is not None:
        found = inspect(image, key.public_key().public_bytes_raw())
        if found is None or found.problem or len(image) > store.device["slot_size"]:
            why = "no MCUboot header" if found is None else found.problem or "larger than a slot"
            raise ValueError(f"the factory image is not bootable: {why}")
        store.write(0, 0, image)
        store.doc["trailers"]["0"] = {"magic": True, "image_ok": True, "copy_done": False}
    store.save()
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))


# --------------------------------------------------------------------------- MCUboot and Zephyr


@dataclass
class Upload:
    length: int
    sha: bytes | None
    offset: int = 0


@dataclass
class Device:
    """The running device: the store plus what lives in RAM (the upload in progress, whether
    it is powered and answering)."""

    store: Store
    upload: Upload | None = None
    offline_until: float | None = None  # booting or unpowered; inf: never comes back
    watchdog_at: float | None = None
    pending_reset: bool = False  # set by the reset command, acted on once it is answered

    def note(self, text: str) -> None:
        print(f"sim: {text}", file=sys.stderr, flush=True)

    @property
    def online(self) -> bool:
        return self.offline_until is None

    def tick(self, now: float) -> None:
        """Timers: a boot that was due, a watchdog that fires."""
        if self.watchdog_at is not None and now >= self.watchdog_at:
            self.watchdog_at = None
            self.note("watchdog reset")
            self.power_off(self.store.device["boot_seconds"])
        if self.offline_until is not None and now >= self.offline_until:
            self.offline_until = None
            self.boot()

    def next_timer(self) -> float | None:
        times = [t for t in (self.offline_until, self.watchdog_at) if t is not None]
        return min(times) if times else None

    def power_off(self, seconds: float | None) -> None:
        self.upload = None
        self.watchdog_at = None
        self.offline_until = float("inf") if seconds is None else time.monotonic() + seconds

    def boot(self) -> None:
        """MCUboot: finish or start a swap, then start the primary slot's image."""
        store = self.store
        store.load()
        store.count("boots")
        swap = store.doc["swap"]
        if swap is not None:
            store.count("resumed_swaps")
            self.note(f"resuming the {swap['kind']} swap at sector {swap['done']}")
        else:
            swap = self.swap_type()
        if swap is not None and not self.run_swap(swap):
            return  # power cut: off for now, the swap resumes on the next boot
        primary = store.image(0)
        if primary is None or primary.problem:
            self.note("no bootable image in the primary slot: stuck in MCUboot")
            store.save()
            self.offline_until = float("inf")
            return
        test_mode = store.trailer(0)["copy_done"] and not store.trailer(0)["image_ok"]
        hang = store.take_fault("hang") if test_mode else None
        store.save()
        if hang is not None:
            seconds = hang.get("watchdog_seconds")
            self.note(f"image {primary.version} hangs (watchdog: {seconds})")
            self.offline_until = float("inf")
            if seconds is not None:
                self.watchdog_at = time.monotonic() + float(seconds)
            return
        self.note(f"running {primary.version}{' (test)' if test_mode else ''}")

    def swap_type(self) -> dict[str, Any] | None:
        store = self.store
        secondary, primary = store.trailer(1), store.trailer(0)
        if secondary["magic"]:
            image = store.image(1)
            if image is None or image.problem:
                why = "no image" if image is None else image.problem
                self.note(f"secondary slot rejected ({why}): erased")
                store.count("rejected")
                store.erase(1)
                return None
            kind = "perm" if secondary["image_ok"] else "test"
        elif primary["magic"] and primary["copy_done"] and not primary["image_ok"]:
            kind = "revert"
        else:
            return None
        sectors = store.device["slot_size"] // store.device["sector_size"]
        swap = {"kind": kind, "done": 0, "sectors": sectors}
        store.doc["swap"] = swap
        store.save()
        return swap

    def run_swap(self, swap: dict[str, Any]) -> bool:
        """Exchange the slots sector by sector, saving progress after each; False when a
        power cut stopped it."""
        store = self.store
        size = store.device["sector_size"]
        cut = store.take_fault("power_cut")
        while swap["done"] < swap["sectors"]:
            if cut is not None and swap["done"] >= cut.get("after_sectors", 1):
                store.save()
                self.note(f"power cut during the swap at sector {swap['done']}")
                self.power_off(float(cut.get("off_seconds", 0.5)))
                return False
            at = swap["done"] * size
            first, second = store.read(0)[at : at + size], store.read(1)[at : at + size]
            store.write(0, at, second)
            store.write(1, at, first)
            swap["done"] += 1
            store.save()
        kind = swap["kind"]
        store.doc["swap"] = None
        store.count("reverts" if kind == "revert" else "swaps")
        store.doc["trailers"]["1"] = blank_trailer()
        store.doc["trailers"]["0"] = {
            "magic": True, "image_ok": kind != "test", "copy_done": True,
        }  # fmt: skip
        store.save()
        self.note(f"{kind} swap done")
        return True

    # ------------------------------------------------------------------ SMP

    def handle(self, packet: bytes) -> bytes | None:
        """One SMP request in, its answer out (None: no answer)."""
        if len(packet) < SMP_HEADER.size:
            return None
        first, _flags, length, group, seq, command = SMP_HEADER.unpack_from(packet)
        op, version = first & 0x07, (first >> 3) & 0x03
        try:
            body = cbor2.loads(packet[SMP_HEADER.size : SMP_HEADER.size + length])
        except Exception:  # any undecodable body is answered like Zephyr: EINVAL
            body = None
        self.store.load()
        if not isinstance(body, dict) or op not in (0, 2):
            answer: dict[str, Any] | tuple[int, int] | None = (0, EINVAL)
        else:
            answer = self.dispatch(op, group, command, body)
        if isinstance(answer, tuple):
            err_group, rc = answer
            answer = {"err": {"group": err_group, "rc": rc}} if version else {"rc": rc}
        if answer is None:
            return None
        data = cbor2.dumps(answer)
        reply = SMP_HEADER.pack((version << 3) | (op + 1), 0, len(data), group, seq, command)
        return reply + data

    def dispatch(
        self, op: int, group: int, command: int, body: dict[str, Any]
    ) -> dict[str, Any] | tuple[int, int] | None:
        """The answer's body, an error (group, rc), or None: no answer at all."""
        write = op == 2
        if group == GROUP_OS:
            return self.os_command(write, command, body)
        if group == GROUP_IMAGE:
            if command == 0:
                return self.state_write(body) if write else {"images": self.image_list()}
            if command == 1 and write:
                return self.upload_chunk(body)
            if command == 5 and write:
                return self.erase(body)
        return (0, ENOTSUP)

    def os_command(
        self, write: bool, command: int, body: dict[str, Any]
    ) -> dict[str, Any] | tuple[int, int]:
        device = self.store.device
        if command == 0 and write:
            return {"r": str(body.get("d", ""))}
        if command == 5 and write:
            self.store.count("resets")
            self.store.save()
            self.pending_reset = True
            return {}
        if command == 6 and not write:
            return {"buf_size": device["buf_size"], "buf_count": 4}
        if command == 7 and not write:
            fields = {"s": "Zephyr", "n": device["node_name"], "r": "4.1.0", "m": "arm",
                      "p": "cortex-m4", "i": device["hardware"], "o": "Zephyr"}  # fmt: skip
            wanted = str(body.get("format", "s"))
            letters = "snrmpio" if wanted == "a" else wanted
            if any(c not in fields for c in letters):
                return (0, EINVAL)
            return {"output": " ".join(fields[c] for c in letters)}
        if command == 8 and not write:
            if body.get("query") == "mode":
                return {"mode": 1}
            return {"bootloader": "MCUboot"}
        return (0, ENOTSUP)

    def image_list(self) -> list[dict[str, Any]]:
        listed = []
        for slot in (0, 1):
            image = self.store.image(slot)
            if image is None or (slot == 1 and self.upload is not None):
                continue
            trailer = self.store.trailer(slot)
            entry: dict[str, Any] = {
                "slot": slot, "version": image.version, "hash": image.sha256,
                "bootable": True, "pending": slot == 1 and trailer["magic"],
                "confirmed": slot == 0 and trailer["image_ok"], "active": slot == 0,
                "permanent": slot == 1 and trailer["magic"] and trailer["image_ok"],
            }  # fmt: skip
            listed.append(entry)
        return listed

    def state_write(self, body: dict[str, Any]) -> dict[str, Any] | tuple[int, int]:
        store = self.store
        confirm = bool(body.get("confirm", False))
        wanted = body.get("hash")
        slot = None
        for number in (0, 1):
            image = store.image(number)
            if image is not None and ((wanted is None and number == 0) or image.sha256 == wanted):
                slot = number
        if slot is None:
            return (GROUP_IMAGE, IMG_HASH_NOT_FOUND)
        if slot == 0:
            if not confirm:
                return (GROUP_IMAGE, IMG_TEST_TO_ACTIVE)
            store.trailer(0)["image_ok"] = True
        else:
            store.doc["trailers"]["1"] = {"magic": True, "image_ok": confirm, "copy_done": False}
        store.save()
        return {"images": self.image_list()}

    def upload_chunk(self, body: dict[str, Any]) -> dict[str, Any] | tuple[int, int] | None:
        store = self.store
        offset, data = body.get("off"), body.get("data")
        if not isinstance(offset, int) or not isinstance(data, bytes):
            return (0, EINVAL)
        if offset == 0:
            length = body.get("len")
            if not isinstance(length, int):
                return (0, EINVAL)
            if length > store.device["slot_size"]:
                return (GROUP_IMAGE, IMG_TOO_LARGE)
            if store.trailer(1)["magic"]:
                return (GROUP_IMAGE, IMG_ALREADY_PENDING)
            if len(data) < 4 or struct.unpack_from("<I", data)[0] != MAGIC:
                return (GROUP_IMAGE, IMG_HEADER_MAGIC)
            store.erase(1)
            store.count("uploads")
            store.save()
            sha = body.get("sha")
            self.upload = Upload(length, sha if isinstance(sha, bytes) else None)
        upload = self.upload
        if upload is None or offset != upload.offset:
            # as Zephyr: no error, the offset it expects (0 once an upload was lost)
            return {"off": 0 if upload is None else upload.offset}
        if offset + len(data) > upload.length:
            return (GROUP_IMAGE, IMG_INVALID_OFFSET)
        fault = next((f for f in store.doc["faults"] if f.get("kind") == "upload_interrupted"),
                     None)  # fmt: skip
        if fault is not None and offset + len(data) > int(fault.get("after_bytes", 0)):
            store.take_fault("upload_interrupted")
            keep = max(0, int(fault.get("after_bytes", 0)) - offset)
            store.write(1, offset, data[:keep])
            store.save()
            self.note(f"power lost during the upload at {offset + keep} bytes")
            self.power_off(float(fault.get("off_seconds", 0.5)))
            return None
        store.write(1, offset, data)
        upload.offset += len(data)
        answer: dict[str, Any] = {"off": upload.offset}
        if upload.offset == upload.length:
            self.upload = None
            if upload.sha is not None:
                written = store.read(1)[: upload.length]
                answer["match"] = hashlib.sha256(written).digest() == upload.sha
        return answer

    def erase(self, body: dict[str, Any]) -> dict[str, Any] | tuple[int, int]:
        if body.get("slot", 1) != 1:
            return (GROUP_IMAGE, IMG_TEST_TO_ACTIVE)
        if self.store.trailer(1)["magic"]:
            return (GROUP_IMAGE, IMG_ALREADY_PENDING)
        self.upload = None
        self.store.erase(1)
        self.store.save()
        return {}


# --------------------------------------------------------------------------- the server


class Server:
    """The device on UDP and/or a pty, until SIGTERM/SIGINT."""

    def __init__(self, path: Path, udp_port: int | None, pty_link: Path | None) -> None:
        self.device = Device(Store(path))
        self.selector = selectors.DefaultSelector()
        self.udp: socket.socket | None = None
        self.master: int | None = None
        self.slave: int | None = None
        self.pty_link = pty_link
        self.serial_buffer = b""
        self.frame_text = b""
        self.running = True
        # bytes on the wire, SMP framing included, and request/answer exchanges (for the
        # benchmark; printed when the server stops)
        self.wire = {"rx": 0, "tx": 0, "exchanges": 0}
        if udp_port is not None:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", udp_port))
            self.selector.register(self.udp, selectors.EVENT_READ, "udp")
        if pty_link is not None:
            self.master, self.slave = os.openpty()
            tty.setraw(self.slave)
            name = os.ttyname(self.slave)
            pty_link.unlink(missing_ok=True)
            pty_link.symlink_to(name)
            self.selector.register(self.master, selectors.EVENT_READ, "pty")

    def announce(self) -> None:
        if self.udp is not None:
            print(f"udp 127.0.0.1:{self.udp.getsockname()[1]}", flush=True)
        if self.pty_link is not None:
            print(f"pty {self.pty_link}", flush=True)
        print("ready", flush=True)

    def serve(self) -> None:
        self.device.boot()
        self.announce()
        while self.running:
            now = time.monotonic()
            self.device.tick(now)
            due = self.device.next_timer()
            wait = 0.5 if due is None or due == float("inf") else max(0.0, min(0.5, due - now))
            for key, _ in self.selector.select(wait):
                if key.data == "udp":
                    self.on_udp()
                else:
                    self.on_pty()
        self.close()

    def close(self) -> None:
        print(f"wire rx={self.wire['rx']} tx={self.wire['tx']} "
              f"exchanges={self.wire['exchanges']}", flush=True)
        if self.pty_link is not None:
            self.pty_link.unlink(missing_ok=True)
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        if self.udp is not None:
            self.udp.close()

    def answer(self, packet: bytes) -> bytes | None:
        return self.device.handle(packet) if self.device.online else None

    def after_answer(self) -> None:
        if self.device.pending_reset:
            self.device.pending_reset = False
            self.device.note("reset")
            self.device.power_off(self.device.store.device["boot_seconds"])

    def on_udp(self) -> None:
        assert self.udp is not None
        packet, peer = self.udp.recvfrom(65536)
        if len(packet) > self.device.store.load()["device"]["buf_size"]:
            return  # larger than the device's network buffer: dropped, as on Zephyr
        self.wire["rx"] += len(packet)
        reply = self.answer(packet)
        if reply is not None:
            self.udp.sendto(reply, peer)
            self.wire["tx"] += len(reply)
            self.wire["exchanges"] += 1
        self.after_answer()

    def on_pty(self) -> None:
        assert self.master is not None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return
        self.serial_buffer += chunk
        self.wire["rx"] += len(chunk)
        while b"\n" in self.serial_buffer:
            line, _, self.serial_buffer = self.serial_buffer.partition(b"\n")
            self.pace(len(line) + 1)
            packet = self.serial_line(line.rstrip(b"\r"))
            if packet is None:
                continue
            reply = self.answer(packet)
            if reply is not None:
                encoded = b"".join(serial_frames(reply))
                self.pace(len(encoded))
                os.write(self.master, encoded)
                self.wire["tx"] += len(encoded)
                self.wire["exchanges"] += 1
            self.after_answer()

    def serial_line(self, line: bytes) -> bytes | None:
        """A frame once its last line is in (None before, or for a broken frame)."""
        if line.startswith(START):
            self.frame_text = line[2:]
        elif line.startswith(CONTINUE) and self.frame_text:
            self.frame_text += line[2:]
        else:
            return None  # console output, not SMP
        try:
            raw = base64.b64decode(self.frame_text, validate=True)
        except binascii.Error:
            return None  # not complete yet (or broken: the next start resets it)
        if len(raw) < 2 or len(raw) - 2 < struct.unpack_from(">H", raw)[0]:
            return None
        self.frame_text = b""
        length = struct.unpack_from(">H", raw)[0]
        packet, crc = raw[2 : length], raw[length : length + 2]
        if binascii.crc_hqx(packet, 0).to_bytes(2, "big") != crc:
            self.device.note("serial frame with a bad CRC dropped")
            return None
        return packet

    def pace(self, size: int) -> None:
        """A UART at ``baudrate`` takes 10 bit times per byte (8N1)."""
        baudrate = self.device.store.device.get("baudrate")
        if baudrate:
            time.sleep(size * 10 / baudrate)


def serial_frames(packet: bytes, line_length: int = 127) -> list[bytes]:
    """``packet`` as SMP serial lines: base64 of length + packet + CRC16 (XMODEM), cut into
    lines of at most ``line_length`` bytes, the first marked 06 09, the others 04 14."""
    crc = binascii.crc_hqx(packet, 0).to_bytes(2, "big")
    text = base64.b64encode(struct.pack(">H", len(packet) + 2) + packet + crc)
    per_line = (line_length - 4) // 4 * 4
    return [
        (START if at == 0 else CONTINUE) + text[at : at + per_line] + b"\n"
        for at in range(0, len(text), per_line)
    ]


# --------------------------------------------------------------------------- command line


def _size(text: str) -> int:
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text, 0) * scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mender-orchestrator-mcuboot-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create a device")
    init.add_argument("path", type=Path)
    init.add_argument("--image", type=Path, help="a signed factory image for the primary slot")
    init.add_argument("--key", type=Path, help="trust this signing key (default: a new one)")
    init.add_argument("--node-name", help="the node name (the driver's Identity)")
    init.add_argument("--slot-size", type=_size, help="bytes per slot (default 64K)")
    init.add_argument("--baudrate", type=int, help="pace the serial line at this speed")
    keygen = commands.add_parser("keygen", help="make a signing key")
    keygen.add_argument("output", type=Path)
    sign = commands.add_parser("sign", help="sign a binary into an MCUboot image")
    sign.add_argument("--key", type=Path, required=True, help="a key from keygen, or PATH.key")
    sign.add_argument("--version", required=True)
    sign.add_argument("input", type=Path)
    sign.add_argument("output", type=Path)
    serve = commands.add_parser("serve", help="answer SMP on UDP and/or a pty")
    serve.add_argument("path", type=Path)
    serve.add_argument("--udp-port", type=int, help="UDP port on 127.0.0.1 (0: any free one)")
    serve.add_argument("--pty", type=Path, help="make a pty and link it here")
    show = commands.add_parser("show", help="print the device's state")
    show.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            settings = {k: v for k, v in (("node_name", args.node_name),
                        ("slot_size", args.slot_size), ("baudrate", args.baudrate))
                        if v is not None}  # fmt: skip
            image = args.image.read_bytes() if args.image else None
            create(args.path, image, load_key(args.key) if args.key else None, **settings)
        elif args.command == "keygen":
            key = Ed25519PrivateKey.generate()
            args.output.write_text(key.private_bytes_raw().hex() + "\n", encoding="utf-8")
        elif args.command == "sign":
            image = make_image(args.input.read_bytes(), args.version, load_key(args.key))
            args.output.write_bytes(image)
        elif args.command == "show":
            print(json.dumps(Store(args.path).load(), indent=1))
        else:
            if args.udp_port is None and args.pty is None:
                parser.error("serve needs --udp-port, --pty or both")
            server = Server(args.path, args.udp_port, args.pty)

            def stop(*_: object) -> None:
                server.running = False

            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            server.serve()
    except (OSError, ValueError) as exc:
        print(f"mender-orchestrator-mcuboot-sim: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
