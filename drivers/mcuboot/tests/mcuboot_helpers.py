"""Helpers: a simulated MCUboot device served by its own process, signed images, and a
System driven through the real ``mender-orchestrator`` command line."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mender_orchestrator_mcuboot.simulator import create, make_image

needs_mender_artifact = pytest.mark.skipif(
    shutil.which("mender-artifact") is None, reason="needs Debian's mender-artifact"
)
NODE = "zephyr-5e1f00d5a1b2"
# short timeouts: the simulator answers at once and boots in 50 ms
FAST = ("--request-timeout=0.5", "--retries=2", "--reset-delay=0.02", "--reset-timeout=4")


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Sim:
    """A simulated device on disk and the ``serve`` process answering for it."""

    def __init__(self, path: Path, image: bytes | None = None, **device: Any) -> None:
        self.path = path
        settings = {"boot_seconds": 0.05, "node_name": NODE, **device}
        self.key = Ed25519PrivateKey.generate()
        self.factory = image if image is not None else self.sign("1.0.0", body(6000, 1))
        create(path, self.factory, self.key, **settings)
        self.pty = path.with_name("ttyACM-sim")
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def sign(self, version: str, code: bytes, key: Ed25519PrivateKey | None = None) -> bytes:
        return make_image(code, version, key or self.key)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mender_orchestrator_mcuboot.simulator", "serve",
             str(self.path), "--udp-port", str(self.port), "--pty", str(self.pty)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("udp "):
                self.port = int(line.rsplit(":", 1)[1])
            if line.strip() == "ready":
                return
        raise RuntimeError("the simulator did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None

    def doc(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.path.read_text())
        return document

    def faults(self, *rules: dict[str, Any]) -> None:
        document = self.doc()
        document["faults"] = list(rules)
        self.path.write_text(json.dumps(document))

    def slot(self, number: int) -> bytes:
        return self.path.with_name(f"{self.path.name}.slot{number}").read_bytes()

    def udp_args(self, *extra: str) -> tuple[str, ...]:
        return ("--transport=udp", "--host=127.0.0.1", f"--port={self.port}", *fast(*extra))

    def serial_args(self, *extra: str) -> tuple[str, ...]:
        return ("--transport=serial", f"--device={self.pty}", *fast(*extra))


def fast(*extra: str) -> tuple[str, ...]:
    """FAST with ``extra`` options replacing those they name."""
    named = {arg.partition("=")[0] for arg in extra}
    return (*(arg for arg in FAST if arg.partition("=")[0] not in named), *extra)


class System:
    """A System under a directory, reached only through the environment, as on a device."""

    def __init__(self, root: Path, interface_args: tuple[str, ...]) -> None:
        self.root = root
        for name in ("etc", "usr-share", "var-lib"):
            (root / name).mkdir(parents=True)
        self.topology(interface_args)

    def topology(self, interface_args: tuple[str, ...]) -> None:
        args = "".join(f"\n      - {json.dumps(arg)}" for arg in interface_args)
        (self.root / "var-lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "sensor-2026"\n'
            f"components:\n  - component_type: sensor_mcu\n    interface: mcuboot\n"
            f"    interface_args:{args}\n"
        )

    def artifact(self, image: bytes, version: str) -> Path:
        payload = self.root / f"sensor-{version}.signed.bin"
        payload.write_bytes(image)
        output = self.root / f"sensor-{version}.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "mcuboot", "-t", "sensor_mcu",
             "-n", f"sensor-fw-{version}", "--software-version", version,
             "-f", str(payload), "-o", str(output)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return output

    def manifest(self, artifact: Path, version: str) -> Path:
        path = self.root / f"manifest-{version}.yaml"
        path.write_text(
            'api_version: "mender/v1"\nkind: "manifest"\n'
            f'name: "sensor-software-{version}"\nsystem_types_compatible: ["sensor-2026"]\n'
            "component_types:\n  sensor_mcu:\n"
            f"    artifact_name: sensor-fw-{version}\n    artifact_path: {artifact}\n"
            "    update_strategy: {order: 10}\n"
        )
        return path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MENDER_ORCHESTRATOR_")}
        env.update(
            MENDER_ORCHESTRATOR_CONF_DIR=str(self.root / "etc"),
            MENDER_ORCHESTRATOR_DATA_DIR=str(self.root / "usr-share"),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(self.root / "var-lib"),
        )
        return subprocess.run(
            [sys.executable, "-m", "orchestrator_core", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def install(self, image: bytes, version: str) -> subprocess.CompletedProcess[str]:
        return self.run("install", str(self.manifest(self.artifact(image, version), version)))
