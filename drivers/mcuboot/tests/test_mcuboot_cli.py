"""``mender-orchestrator install`` updating the simulated MCUboot device from real ``.mender``
files (Debian's mender-artifact), over UDP and over a serial pty: the success path, each
fault of the simulator ending in a clear failure (and, where MCUboot allows, a verified
rollback), and bad interface_args."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mcuboot_helpers import NODE, Sim, System, body, needs_mender_artifact

PREFIX = f"sensor_mcu.{NODE}."
pytestmark = needs_mender_artifact


def provides(system: System) -> list[str]:
    shown = system.run("show-provides")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.splitlines()


def running(sim: Sim, image: bytes) -> bool:
    """The primary slot holds ``image``, confirmed."""
    return sim.slot(0).startswith(image) and sim.doc()["trailers"]["0"]["image_ok"]


def test_install_over_udp_swaps_tests_and_confirms(system: System, sim: Sim) -> None:
    image = sim.sign("2.0.0", body(9000, 2))

    result = system.install(image, "2.0.0")

    assert result.returncode == 0, result.stderr
    assert running(sim, image)
    assert sim.slot(1).startswith(sim.factory)  # the previous image stays for a rollback
    stats = sim.doc()["stats"]
    assert (stats["uploads"], stats["swaps"], stats["reverts"], stats["resets"]) == (1, 1, 0, 1)
    digest = hashlib.sha256(image[: len(image) - 4 - 36 - 36 - 68]).hexdigest()
    assert provides(system) == [
        f"{PREFIX}device_type=sensor_mcu",
        f"{PREFIX}rootfs-image.mcuboot.hash={digest}",
        f"{PREFIX}rootfs-image.mcuboot.version=2.0.0",
    ]


def test_install_over_serial(tmp_path: Path, sim: Sim) -> None:
    system = System(tmp_path / "serial-system", sim.serial_args())
    image = sim.sign("2.1.0", body(20000, 3))

    result = system.install(image, "2.1.0")

    assert result.returncode == 0, result.stderr
    assert running(sim, image)
    assert f"{PREFIX}rootfs-image.mcuboot.version=2.1.0" in provides(system)


def test_image_with_a_bad_signature_is_rejected_by_mcuboot(system: System, sim: Sim) -> None:
    image = sim.sign("2.0.0", body(9000, 2), key=Ed25519PrivateKey.generate())

    result = system.install(image, "2.0.0")

    assert result.returncode == 1
    assert (
        f"sensor_mcu/{NODE} (interface mcuboot): MCUboot refused to boot image 2.0.0: it failed "
        "the bootloader's signature or hash check and was erased from the secondary slot; the "
        "device runs the previous image 1.0.0"
    ) in result.stderr
    assert running(sim, sim.factory)
    assert sim.doc()["stats"]["rejected"] == 1
    assert f"{PREFIX}rootfs-image.mcuboot.version=1.0.0" in provides(system)


def test_interrupted_upload_fails_and_leaves_the_device_as_it_was(
    system: System, sim: Sim
) -> None:
    sim.faults({"kind": "upload_interrupted", "after_bytes": 3000, "off_seconds": 0.1})
    image = sim.sign("2.0.0", body(9000, 2))

    result = system.install(image, "2.0.0")

    assert result.returncode == 1
    assert (
        "the upload was interrupted at 2938 of 9656 bytes: the device now expects offset 0 (it "
        "reset or lost power and dropped the upload)"
    ) in result.stderr
    assert running(sim, sim.factory)
    assert sim.doc()["faults"] == []
    assert sim.doc()["stats"]["swaps"] == 0


def test_power_cut_during_the_swap_resumes_on_the_next_boot(system: System, sim: Sim) -> None:
    sim.faults({"kind": "power_cut", "after_sectors": 3, "off_seconds": 0.3})
    image = sim.sign("2.0.0", body(9000, 2))

    result = system.install(image, "2.0.0")

    assert result.returncode == 0, result.stderr
    assert running(sim, image)
    assert sim.doc()["stats"]["resumed_swaps"] == 1


def test_device_back_too_late_after_a_power_cut_is_rolled_back(
    tmp_path: Path, sim: Sim
) -> None:
    system = System(tmp_path / "late", sim.udp_args("--reset-timeout=1.5"))
    sim.faults({"kind": "power_cut", "after_sectors": 3, "off_seconds": 2.0})
    image = sim.sign("2.0.0", body(9000, 2))

    result = system.install(image, "2.0.0")

    assert result.returncode == 1
    assert "the device did not answer within 1.5 s after the reset (--reset-timeout)" in (
        result.stderr
    )
    assert running(sim, sim.factory)
    stats = sim.doc()["stats"]
    assert (stats["resumed_swaps"], stats["swaps"], stats["reverts"]) == (1, 1, 1)


def test_new_image_that_hangs_is_reverted_after_its_watchdog(system: System, sim: Sim) -> None:
    sim.faults({"kind": "hang", "watchdog_seconds": 0.3})
    image = sim.sign("2.0.0", body(9000, 2))

    result = system.install(image, "2.0.0")

    assert result.returncode == 1
    assert (
        "the device is back on the previous image 1.0.0 (" in result.stderr
        and "image 2.0.0 was booted for test but the device restarted before it was confirmed "
        "(it crashed or its watchdog fired), so MCUboot reverted it" in result.stderr
    )
    assert running(sim, sim.factory)
    assert sim.doc()["stats"]["reverts"] == 1


def test_device_that_never_comes_back(tmp_path: Path, sim: Sim) -> None:
    system = System(tmp_path / "dead", sim.udp_args("--reset-timeout=0.5"))
    sim.faults({"kind": "hang", "watchdog_seconds": None})

    result = system.install(sim.sign("2.0.0", body(9000, 2)), "2.0.0")

    assert result.returncode == 3, result.stderr
    assert "the device did not answer within 0.5 s after the reset" in result.stderr
    assert "the device did not answer within 0.5 s before the rollback" in result.stderr
    assert "Traceback" not in result.stderr


def test_payload_that_is_no_mcuboot_image_is_refused_before_upload(
    system: System, sim: Sim
) -> None:
    result = system.install(b"\x00\x20\x00\x20" + body(4000, 5), "2.0.0")

    assert result.returncode == 1
    assert (
        "payload sensor-2.0.0.signed.bin is not an MCUboot image the device can boot: no "
        "MCUboot image header: magic 0x20002000, expected 0x96f3b83d (sign the binary with "
        "imgtool)"
    ) in result.stderr
    assert sim.doc()["stats"]["uploads"] == 0


def test_artifact_version_must_match_the_image_header(system: System, sim: Sim) -> None:
    result = system.install(sim.sign("2.0.0", body(4000, 5)), "2.0.1")

    assert result.returncode == 1
    assert (
        "the Artifact installs version '2.0.1' but the MCUboot image header of "
        "sensor-2.0.1.signed.bin says '2.0.0'; build the Artifact with --software-version 2.0.0"
    ) in result.stderr
    assert sim.doc()["stats"]["uploads"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--transport=udp", "--host=h", "--port=70000"),
         "sensor_mcu[0] (interface mcuboot): invalid interface_args ['--transport=udp', "
         "'--host=h', '--port=70000']: argument --port: expected a value from 0x1 to 0xffff, "
         "got '70000' (`mender-orchestrator drivers mcuboot` lists the arguments)"),
        (("--transport=udp", "--host=127.0.0.1", "--port=9", "--request-timeout=0.1",
          "--retries=1"),
         "sensor_mcu[0] (interface mcuboot): no answer from SMP over UDP 127.0.0.1:9 while "
         "reading the node name (OS info 'n') (2 tries, 0.1 s each: --request-timeout, "
         "--retries)"),
    ],
)  # fmt: skip
def test_show_provides_names_a_bad_interface_arg_in_one_line(
    system: System, args: tuple[str, ...], message: str
) -> None:
    system.topology(args)

    result = system.run("show-provides")

    assert result.returncode != 0
    assert message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
