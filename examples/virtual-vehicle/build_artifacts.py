"""Build every Artifact of the virtual vehicle with our own writer (no Go tool needed).

    python examples/virtual-vehicle/build_artifacts.py OUTPUT_DIR [--key PRIVATE_KEY.pem]

Component Artifacts (module-image, one firmware file each), named as the Manifests ask for
them, and one Manifest Artifact per Manifest (what a Mender server would deploy; see
docs/mender-integration.md). Each is written exactly as ``mender-orchestrator artifact
write`` and ``mender-orchestrator-manifest-gen`` write them; this script only calls the same
functions, so it runs in a fraction of a second.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator_core.artifact.writer import Signer, write_artifact
from orchestrator_core.artifact_write import build_spec
from orchestrator_core.manifest_gen import generate

HERE = Path(__file__).resolve().parent
MANIFESTS = tuple(sorted((HERE / "manifests").glob("vehicle-v*.yaml")))
SYSTEM_TYPE = "electric-vehicle-2026"
# the battery MCU's image signing key: fixed, so the Artifacts and the device built
# separately agree; a demo key, not a secret
BMS_SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"virtual-vehicle demo: battery MCU signing key").digest()
)


@dataclass(frozen=True)
class Firmware:
    artifact_name: str
    component_type: str
    interface: str  # the payload type: the Interface that installs it
    image: bytes
    version: str | None = None  # --software-version, where the Interface checks it


def _filler(label: str, size: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(size)


def telematics(version: str, *, self_test: str = "pass") -> Firmware:
    # the simulated modem reads the line "selftest: pass" of its firmware after a reboot
    text = f"TCU-FIRMWARE\nversion: {version}\nselftest: {self_test}\n"
    body = text.encode() + _filler(version, 3072).hex().encode() + b"\n"
    return Firmware(f"tcu-firmware-v{version}", "telematics_control_unit", "cellular-ota", body)


def brake_ecu(version: str) -> Firmware:
    return Firmware(f"brake-ecu-firmware-v{version}", "ecu_brake_controller", "canbus",
                    _filler(f"brake {version}", 8192))


def seat_heater(version: str) -> Firmware:
    # an STM32 image: initial stack pointer in SRAM, reset handler (Thumb) in flash
    vectors = struct.pack("<II", 0x2000_2000, 0x0800_0101)
    return Firmware(f"seat-heating-fw-v{version}", "seat_heating", "i2c",
                    vectors + _filler(f"seat {version}", 6136))


def battery_mcu_firmware(version: str) -> Firmware:
    # an MCUboot image signed with the demo's key, which the simulated device trusts
    from mender_orchestrator_mcuboot.simulator import make_image

    image = make_image(_filler(f"bms {version}", 12288), version, BMS_SIGNING_KEY)
    return Firmware(f"bms-firmware-v{version}", "battery_mcu", "mcuboot", image, version)


def door_lock(version: str) -> Firmware:
    # an ESP-IDF app image whose esp_app_desc_t carries the version the Artifact provides
    from mender_orchestrator_esp32.idf import AppDescription, make_app_image

    name = f"door-lock-fw-v{version}"
    image = make_app_image(AppDescription(name, "door-lock", "v5.3"),
                           _filler(f"door {version}", 12288))
    return Firmware(name, "door_lock", "esp32", image)


FIRMWARE = (
    telematics("2.4.0"), telematics("2.4.1"), telematics("2.5.0", self_test="fail"),
    brake_ecu("1.8.0"), brake_ecu("1.8.3"), brake_ecu("1.9.0"),
    seat_heater("1.2.0"), seat_heater("1.3.0"),
    battery_mcu_firmware("3.1.0"), battery_mcu_firmware("3.2.0"),
    door_lock("1.1.0"), door_lock("1.3.0"),
)


def build(output: Path, key: Path | None = None) -> list[Path]:
    """Write every Artifact into ``output``; their paths."""
    output.mkdir(parents=True, exist_ok=True)
    images = output / "images"
    images.mkdir(exist_ok=True)
    signer = Signer.load(key) if key else None
    written = []
    for firmware in FIRMWARE:
        image = images / f"{firmware.artifact_name}.bin"
        image.write_bytes(firmware.image)
        spec = build_spec(
            payload_type=firmware.interface, artifact_name=firmware.artifact_name,
            device_types=[firmware.component_type], files=[image], provides={}, depends={},
            clears_provides=(), provides_group=None, depends_groups=(),
            artifact_name_depends=(), meta_data=None, software_version_value=firmware.version,
        )
        path = output / f"{firmware.artifact_name}.mender"
        write_artifact(spec, path, signer=signer)
        written.append(path)
    for manifest in MANIFESTS:
        path = output / f"{manifest.stem}.mender"
        generate(manifest, (SYSTEM_TYPE,), path, key=key)
        written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="directory for the .mender files")
    parser.add_argument("--key", type=Path, help="sign every Artifact with this PEM key")
    args = parser.parse_args()
    for path in build(args.output, args.key):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
