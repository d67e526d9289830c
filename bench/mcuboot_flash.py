"""Benchmark (not a test): the mcuboot driver's image upload over SMP, next to the limit of
the link it runs on, both measured in the same run.

The driver uploads a signed image to the simulated device's secondary slot (the code path of
its Download state: MCUmgr parameters, then image upload requests as large as the device's
buffer allows) once over UDP on loopback and once over the simulator's pty. The simulator
counts the bytes on the wire, SMP framing included (UDP: the SMP packets; serial: the base64
lines with their length, CRC16 and markers), and the request/answer exchanges.

- UDP: the link limit is the same exchanges, the same datagram sizes, against a Python echo
  server on loopback, timed right after: the time a device that does no work at all would
  take with SMP's stop-and-wait. The raw one-way loopback throughput is shown too.
- Serial: the simulator paces the pty like a UART at ``--baudrate`` (10 bit times a byte,
  8N1), so the limit is the wire bytes at that speed.

    .venv/bin/python bench/mcuboot_flash.py [--size 64K] [--baudrate 115200] [--buf-size 1024]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mender_orchestrator_mcuboot.driver import McubootDriver
from mender_orchestrator_mcuboot.image import parse
from mender_orchestrator_mcuboot.simulator import create, make_image

from orchestrator_core.context import Component, InterfaceContext


def size(text: str) -> int:
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text, 0) * scale


class Simulator:
    """The device served by its own process, as in the driver's tests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pty = path.with_name("ttyACM-bench")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mender_orchestrator_mcuboot.simulator", "serve", str(path),
             "--udp-port", "0", "--pty", str(self.pty)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.port = 0
        for line in self.process.stdout:
            if line.startswith("udp "):
                self.port = int(line.rsplit(":", 1)[1])
            if line.strip() == "ready":
                break

    def stop(self) -> dict[str, int]:
        """Stop it; the wire counters it printed."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        line = next(x for x in out.splitlines() if x.startswith("wire "))
        return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


def upload(args: tuple[str, ...], image: bytes) -> float:
    """Seconds the driver takes to upload ``image`` (its Download path, after the payload
    is read)."""
    component = Component("bench_mcu", "mcuboot", args)
    driver = McubootDriver(component)
    ctx = InterfaceContext(component, logging.getLogger("bench"), timeout_seconds=3600)
    started = time.perf_counter()
    with driver._link(ctx) as link:
        link.initialise()
        driver._upload(ctx, link, image, parse(image))
    return time.perf_counter() - started


def echo_limit(exchanges: int, request: int, answer: int) -> tuple[float, float]:
    """(stop-and-wait time of ``exchanges`` request/answer pairs of these sizes against an echo
    server that does nothing, one-way throughput in bytes/s) on loopback."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    reply = b"\0" * answer

    def serve() -> None:
        for _ in range(exchanges):
            _, peer = server.recvfrom(65536)
            server.sendto(reply, peer)

    thread = threading.Thread(target=serve)
    thread.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(server.getsockname())
    packet = b"\0" * request
    started = time.perf_counter()
    for _ in range(exchanges):
        client.send(packet)
        client.recv(65536)
    stop_and_wait = time.perf_counter() - started
    thread.join()
    # one way, no waiting: the most the loopback moves in datagrams of the request's size
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sink.bind(("127.0.0.1", 0))
    received = [0]

    def drain() -> None:
        sink.settimeout(1.0)
        try:
            while received[0] < exchanges:
                sink.recv(65536)
                received[0] += 1
        except TimeoutError:
            pass

    thread = threading.Thread(target=drain)
    thread.start()
    started = time.perf_counter()
    for _ in range(exchanges):
        client.sendto(packet, sink.getsockname())
    thread.join()
    one_way = received[0] * request / max(time.perf_counter() - started, 1e-9)
    for s in (server, client, sink):
        s.close()
    return stop_and_wait, one_way


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size, default=64 * 1024, help="image body (default 64K)")
    parser.add_argument("--baudrate", type=int, default=115200, help="serial speed (115200)")
    parser.add_argument("--buf-size", type=int, default=1024,
                        help="the device's SMP buffer, CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE "
                        "(default 1024)")  # fmt: skip
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "device.json"
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        factory = make_image(b"\0" * 4096, "1.0.0", key)
        image = make_image(random.Random(1).randbytes(options.size), "2.0.0", key)
        create(path, factory, key, slot_size=(len(image) // 4096 + 2) * 4096,
               buf_size=options.buf_size, baudrate=options.baudrate)  # fmt: skip
        print(f"image {len(image)} bytes, device SMP buffer {options.buf_size} bytes")
        print(f"{'link':<34}{'upload':>9}{'limit':>10}{'ratio':>8}{'wire bytes':>12}"
              f"{'exchanges':>10}{'payload':>9}")
        rows = []
        for name, transport in (("udp", ("--transport=udp", "--host=127.0.0.1")),
                                ("serial", ("--transport=serial",))):
            sim = Simulator(path)
            where = f"--port={sim.port}" if name == "udp" else f"--device={sim.pty}"
            seconds = upload((*transport, where), image)
            wire = sim.stop()
            wire_bytes = wire["rx"] + wire["tx"]
            # the upload's exchanges: the counters also hold the parameters request
            if name == "udp":
                limit, one_way = echo_limit(wire["exchanges"], wire["rx"] // wire["exchanges"],
                                            wire["tx"] // wire["exchanges"])  # fmt: skip
                label = f"UDP loopback ({one_way / 1e6:.0f} MB/s one way)"
            else:
                limit = wire_bytes * 10 / options.baudrate
                label = f"serial pty at {options.baudrate} baud"
            print(f"{label:<34}{seconds:>8.4f}s{limit:>9.4f}s{seconds / limit:>7.1f}x"
                  f"{wire_bytes:>12}{wire['exchanges']:>10}{len(image) / wire_bytes:>8.0%}")
            rows.append({"link": name, "upload_seconds": seconds, "limit_seconds": limit,
                         "wire_bytes": wire_bytes, **wire})  # fmt: skip
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
