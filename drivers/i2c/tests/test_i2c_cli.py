"""``mender-orchestrator install`` updating the simulated STM32 from a real ``.mender`` file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from i2c_helpers import RECORD_AT, Sim, component_args, make_image

from mender_orchestrator_i2c.record import VersionRecord

needs_mender_artifact = pytest.mark.skipif(
    shutil.which("mender-artifact") is None, reason="needs Debian's mender-artifact"
)


class System:
    """A System under tmp_path reached only through the environment, as on a device."""

    def __init__(self, root: Path, sim: Sim) -> None:
        self.root = root
        self.sim = sim
        for name in ("etc", "usr-share", "var-lib"):
            (root / name).mkdir(parents=True)
        self.topology(component_args(sim))

    def topology(self, interface_args: tuple[str, ...]) -> None:
        args = "".join(f"\n      - {json.dumps(arg)}" for arg in interface_args)
        (self.root / "var-lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "car-2026"\n'
            f"components:\n  - component_type: seat_heating\n    interface: i2c\n"
            f"    interface_args:{args}\n"
        )

    def artifact(self, image: bytes, version: str) -> Path:
        payload = self.root / f"seat-{version}.bin"
        payload.write_bytes(image)
        output = self.root / f"seat-{version}.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "i2c", "-t", "seat_heating",
             "-n", f"seat-fw-{version}", "--software-version", version,
             "-f", str(payload), "-o", str(output)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return output

    def manifest(self, artifact: Path, version: str) -> Path:
        path = self.root / f"manifest-{version}.yaml"
        path.write_text(
            'api_version: "mender/v1"\nkind: "manifest"\n'
            f'name: "car-software-{version}"\nsystem_types_compatible: ["car-2026"]\n'
            "component_types:\n  seat_heating:\n"
            f"    artifact_name: seat-fw-{version}\n    artifact_path: {artifact}\n"
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


@pytest.fixture
def system(tmp_path: Path, sim: Sim) -> System:
    return System(tmp_path / "system", sim)


@needs_mender_artifact
def test_install_updates_the_chip_and_show_provides_reports_it(system: System, sim: Sim) -> None:
    sim.install_factory(make_image(6000, seed=1), "1.0.0")
    image = make_image(9001, seed=2)
    manifest = system.manifest(system.artifact(image, "2.0.0"), "2.0.0")

    result = system.run("install", str(manifest))

    assert result.returncode == 0, result.stderr
    assert sim.flash()[: len(image)] == image
    assert sim.record() == VersionRecord.for_image("2.0.0", image)
    assert sim.state()["mode"] == "application"
    shown = system.run("show-provides")
    assert shown.returncode == 0, shown.stderr
    prefix = "seat_heating.stm32-460-00112233445566778899aabb."
    assert shown.stdout.splitlines() == [
        f"{prefix}device_type=seat_heating",
        f"{prefix}rootfs-image.i2c.version=2.0.0",
    ]
    flashed = sim.path.stat().st_mtime_ns
    again = system.run("install", str(manifest))  # the target state is already there
    assert again.returncode == 0, again.stderr
    assert sim.path.stat().st_mtime_ns == flashed  # nothing erased or written


@needs_mender_artifact
def test_failed_install_rolls_the_chip_back(system: System, sim: Sim) -> None:
    before = sim.install_factory(make_image(6000, seed=1), "1.0.0")
    sim.faults({"kind": "nack", "command": "write", "page": 3})
    image = make_image(9001, seed=2)
    manifest = system.manifest(system.artifact(image, "2.0.0"), "2.0.0")

    result = system.run("install", str(manifest))

    assert result.returncode != 0
    assert "Write Memory (0x32) of 256 bytes at 0x08000c00: the bootloader answered NACK" in (
        result.stderr
    )
    assert sim.flash() == before
    offset = RECORD_AT - 0x0800_0000
    assert sim.flash()[offset : offset + 4] == b"MOVR"
    assert "rootfs-image.i2c.version=1.0.0" in system.run("show-provides").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bus=sim:{missing}", "--address=0x48"),
         "seat_heating[0] (interface i2c): cannot open the simulated I2C bus sim:{missing}: "
         "no simulated device at {missing}: create one with "
         "`python -m mender_orchestrator_i2c.simulator init {missing}`"),
        (("--bus=sim:{sim}", "--address=0x48", "--flash-size=0x10000000000"),
         "seat_heating[0] (interface i2c): invalid interface_args ['--bus=sim:{sim}', "
         "'--address=0x48', '--flash-size=0x10000000000']: argument --flash-size=0x10000000000: "
         "the area would end past the 32-bit address space (from 0x08000000)"),
        (("--bus=sim:{sim}", "--address=0x48", "--busy-timeout=inf"),
         "seat_heating[0] (interface i2c): invalid interface_args ['--bus=sim:{sim}', "
         "'--address=0x48', '--busy-timeout=inf']: argument --busy-timeout: expected a positive "
         "number of seconds, got 'inf'"),
    ],
)  # fmt: skip
def test_show_provides_names_a_bad_interface_arg_without_a_traceback(
    system: System, sim: Sim, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    missing = tmp_path / "no-such-chip.bin"
    system.topology(tuple(arg.format(sim=sim.path, missing=missing) for arg in args))

    result = system.run("show-provides")

    assert result.returncode != 0
    assert message.format(missing=missing, sim=sim.path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not missing.exists()
