"""Rollback and recovery without RequestUpload, through ``mender-orchestrator install`` with
Artifacts written by Debian's mender-artifact: the core keeps the Artifact each Component last
installed (``ctx.previous_artifact``) and the driver flashes it again."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import bincopy  # type: ignore[import-untyped]
from canbus_helpers import pseudo_random, services
from test_canbus_remote import (  # noqa: F401 (fixtures)
    BANK,
    SERIAL,
    SimProcess,
    System,
    needs_tools,
    remote_bus,
    simulator,
)

from mender_orchestrator_canbus.simulator import FlashStore

APP = pseudo_random("app-2.0.0", 6000)  # 2 blocks: below the corrupt-block=3 fault
CALIBRATION = pseudo_random("cal-2.0.0", 1000)
CAL_ADDRESS = 0x8000


def hex_file(data: bytes, address: int) -> str:
    image = bincopy.BinFile()
    image.add_binary(data, address=address)
    return str(image.as_ihex())


def srec_file(data: bytes, address: int) -> str:
    image = bincopy.BinFile()
    image.add_binary(data, address=address)
    return str(image.as_srec())


def artifact(system: System, version: str, files: dict[str, bytes | str]) -> Path:
    """A Manifest naming an Artifact of ``files`` (several payload files) for ecu_brake."""
    folder = system.root / version
    folder.mkdir()
    argv = ["mender-artifact", "write", "module-image", "-T", "canbus", "-n", version,
            "-t", "ecu_brake", "-o", str(folder / "a.mender")]  # fmt: skip
    for name, content in files.items():
        path = folder / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        argv += ["-f", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    manifest = folder / "manifest.yaml"
    manifest.write_text(
        f'api_version: "mender/v1"\nkind: "manifest"\nname: "car-{version}"\n'
        'system_types_compatible: ["test-car"]\ncomponent_types:\n  ecu_brake:\n'
        f"    artifact_path: {folder / 'a.mender'}\n    artifact_name: {version}\n"
        "    update_strategy: {order: 10}\n"
    )
    return manifest


def with_segments(bank: bytes, erased: tuple[int, int]) -> bytes:
    """``bank`` with ``erased`` (start, end) erased and APP and CALIBRATION programmed."""
    memory = bytearray(bank)
    memory[erased[0] : erased[1]] = b"\xff" * (erased[1] - erased[0])
    memory[CAL_ADDRESS : CAL_ADDRESS + 4096] = b"\xff" * 4096
    memory[: len(APP)] = APP
    memory[CAL_ADDRESS : CAL_ADDRESS + len(CALIBRATION)] = CALIBRATION
    return bytes(memory)


def version_of(system: System) -> str:
    shown = system.run("show-provides")
    prefix = f"ecu_brake.{SERIAL}.rootfs-image.canbus.version="
    return next(
        line[len(prefix) :] for line in shown.stdout.splitlines() if line.startswith(prefix)
    )


@needs_tools
def test_an_ecu_without_request_upload_is_rolled_back_by_reinstalling_the_kept_artifact(
    simulator: Callable[..., SimProcess],  # noqa: F811 (the fixture)
    remote_bus: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = simulator("no-upload", "corrupt-block=3")
    trace = tmp_path / "trace"
    sim.extra = ["--trace", str(trace)]
    sim.stop()
    sim.start()
    system = System(tmp_path / "system", remote_bus)
    before = sim.bank()
    two_files = {"app.hex": hex_file(APP, 0), "cal.srec": srec_file(CALIBRATION, CAL_ADDRESS)}

    first = system.run("install", str(artifact(system, "brake-2.0.0", two_files)))

    # the first deployment has nothing kept and no read-back: it still updates the ECU
    assert first.returncode == 0, first.stderr
    assert "cannot read its flash back (RequestUpload: NRC 0x11)" in first.stderr
    assert sim.bank() == with_segments(before, erased=(0, 8192))  # each segment's sectors

    second = system.run(
        "install", str(artifact(system, "brake-3.0.0", {"fw.bin": pseudo_random("3", 30000)}))
    )

    assert second.returncode == 1, second.stderr
    assert "checkProgrammingDependencies (RID 0xff01) rejected the image" in second.stderr
    assert "re-flashing the previous Artifact brake-2.0.0 (brake-2.0.0)" in second.stderr
    # what 3.0.0 wrote outside 2.0.0's segments is erased, not left next to them
    assert sim.bank() == with_segments(before, erased=(0, 32768))
    assert version_of(system) == "brake-2.0.0"
    sim.stop()
    unlock = ["1001", "1003", "f:8582", "f:2883", "1002", "2701", "2702"]
    after_reset = ["22f189", "1003", "f:2880", "f:8581", "1001", "14", "22f186"]
    two_segments = ["3101ff00", "34", "36*2", "37", "3101ff01",  # app.hex
                    "3101ff00", "34", "36", "37", "3101ff01"]  # cal.srec  # fmt: skip
    assert services(trace.read_text().split()) == [
        "22f18c", "22f189",  # planning: Identity, Provides
        "22f189", *unlock,
        "35",  # nothing kept yet: read the bank back? NRC 0x11, go on without
        "2ef189", *two_segments, "1101", *after_reset,
        "22f18c", "22f189",  # the second deployment
        "22f189", *unlock, "2ef189", "3101ff00", "34", "36*8", "37", "3101ff01",  # rejected
        *unlock,  # ArtifactRollback: no RequestUpload; the kept 2.0.0 goes back
        "2ef189", "3101ff00",  # its version; erase what 3.0.0 wrote outside its segments
        *two_segments, "1101", *after_reset,
        "22f18c", "22f189",  # show-provides
    ]  # fmt: skip


@needs_tools
def test_an_ecu_left_in_its_bootloader_is_recovered_by_flashing(
    simulator: Callable[..., SimProcess],  # noqa: F811 (the fixture)
    remote_bus: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    sim = simulator()
    sim.stop()
    store = FlashStore(sim.state)  # an interrupted flash: the bank is erased, not valid
    store.erase(0, 0, BANK)
    store.layout.banks[0].valid = False
    store.layout.banks[0].version = None
    store.save()
    trace = tmp_path / "trace"
    sim.extra = ["--trace", str(trace)]
    sim.start()
    system = System(tmp_path / "system", remote_bus)
    assert version_of(system) == "(bootloader)"  # NRC 0x22 to the version read
    firmware = pseudo_random("recovered", 9000)

    installed = system.run("install", str(artifact(system, "brake-2.0.0", {"fw.bin": firmware})))

    assert installed.returncode == 0, installed.stderr
    assert "the ECU is in its bootloader (an interrupted flash?)" in installed.stderr
    assert sim.bank() == firmware + b"\xff" * (BANK - len(firmware))
    assert version_of(system) == "brake-2.0.0"
    sim.stop()
    unlock = ["1001", "1003", "f:8582", "f:2883", "1002", "2701", "2702"]
    assert services(trace.read_text().split()) == [
        "22f18c", "22f189",  # show-provides: NRC 0x22
        "22f18c", "22f189",  # planning
        "22f189", *unlock,  # no read-back: a bank the bootloader does not start is no backup
        "2ef189", "3101ff00", "34", "36*3", "37", "3101ff01",
        "1101", "22f189", "1003", "f:2880", "f:8581", "1001", "14", "22f186",
        "22f18c", "22f189",  # show-provides
    ]  # fmt: skip
