"""The flash profile (--profile): the sequence an ECU expects, declared by its vendor, run
against a simulated ECU that refuses what comes out of order; images in segments."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import bincopy  # type: ignore[import-untyped]
import pytest
from canbus_helpers import (
    BANK,
    OLD_VERSION,
    QUICK_ECU,
    SERIAL,
    Harness,
    Outcome,
    SimEcu,
    pseudo_random,
    services,
)
from orchestrator_core.context import Component
from orchestrator_core.drivers import load
from orchestrator_core.errors import ConfigError, InterfaceTimeout
from orchestrator_core.hookspecs import hookimpl
from test_canbus_args import VARIANTS, link_args

from mender_orchestrator_canbus.security import simulator_key

NEW_VERSION = "brake-2.0.0"
IMAGE = pseudo_random("brake-2.0.0", 9000)  # 3 blocks
VIN = "WMOSIMULATED00042"
PROFILE = """\
# what the vendor of ecu_brake ships with it
precondition_routine: 0x0203
security_levels: [0x01, 0x11]
fingerprint_did: 0xF15A
fingerprint: "20261206aa"
version_write: none          # F189 is read-only on this ECU
identity_dids:
  0xF190: canbus.vin
  0xF191: canbus.hw_part
  0xF193: canbus.hw_version
tester_present_interval: 0.1
"""


def profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ecu_brake.profile.yaml"
    path.write_text(text)
    return f"--profile={path}"


def with_depends(h: Harness, depends: dict[str, Any]) -> None:
    assert h.artifact is not None
    h.artifact = replace(h.artifact, type_info={"artifact_depends": depends})


class SlowKeys:
    """A vendor key plugin that takes its time (an HSM): longer than the ECU's S3 timer."""

    def __init__(self) -> None:
        self.levels: list[int] = []

    @hookimpl
    def canbus_security_key(self, ctx: Any, level: int, seed: bytes) -> bytes:
        self.levels.append(level)
        if level == 0x11:
            time.sleep(0.8)
        return simulator_key(seed, level=level)


def deploy(h: Harness, image: bytes, depends: dict[str, Any]) -> Outcome:
    """``Harness.deploy`` with the Artifact depending on ``depends``."""
    staged = h.stage
    h.stage = lambda data, version: (staged(data, version), with_depends(h, depends))  # type: ignore[method-assign]
    return h.deploy(image, NEW_VERSION)


def test_a_vendor_profile_drives_the_sequence_the_ecu_demands(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    # the ECU: two security levels, DTC setting off before erasing, S3 shorter than the
    # key plugin takes, F189 read-only
    config = replace(QUICK_ECU, security_levels=(0x01, 0x11), require_dtc_off=True, s3_timeout=0.6)
    ecu = start_ecu(config=config, faults=("read-only-version", "no-upload"))
    record = tmp_path / "versions.json"
    h = harness(ecu, profile(tmp_path, PROFILE), "--version-source=record",
                f"--version-record={record}")  # fmt: skip
    keys = SlowKeys()
    h.plugins.append(keys)
    ecu.ecu.trace.clear()

    outcome = deploy(h, IMAGE, {"canbus.vin": VIN, "canbus.hw_part": ["BRK-4711", "BRK-4712"],
                                "canbus.hw_version": "H3"})  # fmt: skip

    assert outcome.failure is None, outcome.failure
    assert services(ecu.ecu.trace) == [
        "22f18c", "22f189",  # Identity; Provides: nothing recorded yet, so F189
        "22f190", "22f191", "22f193",  # identity DIDs against the Artifact's depends
        "22f189", "1001", "1003",
        "3101" "0203",  # checkProgrammingPreconditions
        "f:8582", "f:2883", "1002",
        "2701", "2702", "2711", "2712",  # both security levels, each key from the plugin
        "35",  # nothing kept yet, and the bank cannot be read back (NRC 0x11)
        "2ef15a",  # the fingerprint, before the erase; no version write
        "3101ff00", "34", "36*3", "37", "3101ff01",
        "1101", "22f189", "1003", "f:2880", "f:8581", "1001", "14", "22f186",
    ]  # fmt: skip
    assert keys.levels == [0x01, 0x11]
    assert ecu.ecu.trace.count("f:3e80") >= 4  # TesterPresent kept the session through the keys
    assert ecu.ecu.written[0xF15A] == bytes.fromhex("20261206aa")
    assert ecu.bank(0) == IMAGE + b"\xff" * (BANK - len(IMAGE))
    # the ECU names its software itself; Provides reports the version the driver recorded
    assert ecu.layout().banks[0].version.startswith("sw-")
    assert json.loads(record.read_text()) == {SERIAL: NEW_VERSION}
    assert h.query("provides") == {"rootfs-image.canbus.version": NEW_VERSION}


def test_an_ecu_that_demands_dtc_setting_off_refuses_a_profile_without_it(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    ecu = start_ecu(config=replace(QUICK_ECU, require_dtc_off=True))
    h = harness(ecu, profile(tmp_path, "control_dtc_setting: false\n"))

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is not None
    assert (
        "RoutineControl eraseMemory (0x31 0x01 RID 0xff00) failed: the ECU answered NRC 0x22"
        in outcome.failure
    )
    assert "f:8582" not in ecu.ecu.trace
    assert ecu.ecu.stats["erases"] == 0  # refused before starting: nothing to roll back
    assert outcome.rollback_verified
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


def test_an_artifact_for_another_vehicle_is_refused_before_any_change(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    ecu = start_ecu()
    h = harness(ecu, profile(tmp_path, "identity_dids: {0xF190: canbus.vin}\n"))

    outcome = deploy(h, IMAGE, {"canbus.vin": "WMOTHERCAR0000001"})

    assert outcome.failure == (
        f"ecu_brake/{SERIAL} (interface canbus): the ECU reports {VIN!r} in DID 0xf190, but "
        f"the Artifact artifact-{NEW_VERSION} depends on canbus.vin = WMOTHERCAR0000001"
    )
    assert "1002" not in ecu.ecu.trace
    assert outcome.rollback_verified


def test_a_refused_version_write_happens_before_the_erase(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # a profile that wrongly writes F189 (and no read-back: nothing else slows the test)
    ecu = start_ecu(faults=("read-only-version", "no-upload"))
    h = harness(ecu)

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is not None
    assert (
        "WriteDataByIdentifier 0xf189 (0x2E) failed: the ECU answered NRC 0x31" in outcome.failure
    )
    assert ecu.ecu.stats["erases"] == 0  # the ECU keeps its application
    assert ecu.bank(0)[: len(ecu.initial_image)] == ecu.initial_image
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


def test_a_required_delay_longer_than_the_hook_may_take_ends_it_at_its_deadline(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # NRC 0x37 to requestSeed for 30 s after boot; the profile would wait 10 s, the hook has 2
    ecu = start_ecu(banks=2, config=replace(QUICK_ECU, lockout_time=30.0), faults=("seed-delay",))
    h = harness(ecu, "--banks=2", timeout=2)
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(IMAGE, NEW_VERSION)
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout) as raised:
        h.state("artifact_install", Outcome())

    assert time.monotonic() - started < 2 + 0.5
    assert raised.value.message == (
        f"ecu_brake/{SERIAL} (interface canbus): the Interface timeout expired during "
        "SecurityAccess requestSeed (0x27 0x01): waiting out NRC 0x37 "
        "requiredTimeDelayNotExpired"
    )
    assert ecu.ecu.stats["nrc_37"] >= 2 and ecu.ecu.stats["erases"] == 0


def test_busy_and_delay_answers_are_waited_out(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # NRC 0x21 to the first requests, NRC 0x37 to requestSeed for 1 s after each boot
    ecu = start_ecu(
        banks=2, config=replace(QUICK_ECU, lockout_time=1.0), faults=("busy=6", "seed-delay")
    )
    h = harness(ecu, "--banks=2")

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is None, outcome.failure
    assert ecu.ecu.stats["nrc_21"] == 6
    assert ecu.ecu.stats["nrc_37"] >= 1
    assert ecu.layout().banks[1].version == NEW_VERSION


def test_rollback_upload_needs_an_ecu_that_reads_back(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(faults=("no-upload",))
    outcome = harness(ecu, "--rollback=upload").deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is not None
    assert (
        "RequestUpload of 65536 bytes at 0x0 (0x35) failed: the ECU answered NRC 0x11"
        in outcome.failure
    )
    assert ecu.ecu.stats["erases"] == 0
    assert outcome.rollback_verified


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rollback=bank"], "argument --rollback=bank does not fit --banks=1"),
        (["--banks=2", "--rollback=reinstall"], "argument --rollback=reinstall does not fit --banks=2"),
        (["--version-source=record"], "argument --version-source=record needs --version-record"),
        (["--profile=relative.yaml"], "argument --profile: expected an absolute path, got 'relative.yaml'"),
        (["--profile=/nonexistent/p.yaml"], "argument --profile: /nonexistent/p.yaml: cannot read the flash profile: No such file or directory"),
    ],
)  # fmt: skip
def test_flash_arguments_are_checked_up_front(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Component("ecu_brake", "canbus", tuple(args)), tmp_path)
    assert expected in caught.value.message


def segments_hex(*parts: tuple[int, bytes]) -> str:
    image = bincopy.BinFile()
    for address, data in parts:
        image.add_binary(data, address=address)
    return str(image.as_ihex())


LOW, HIGH = pseudo_random("low", 5000), pseudo_random("high", 700)


def test_raw_files_go_to_the_base_address_or_their_load_address(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Two raw binaries in one Artifact: the application at --memory-address, the calibration
    at the profile's load address; each is its own erase, download and check."""
    ecu = start_ecu(banks=2)
    h = harness(ecu, "--banks=2", "--memory-address=0x1000", "--memory-size=0xf000",
                profile(tmp_path, "load_addresses: {cal.bin: 0x8000}\n"))  # fmt: skip
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(LOW, NEW_VERSION)  # firmware.bin
    (h.work_dir / "files" / "cal.bin").write_bytes(HIGH)
    ecu.ecu.trace.clear()
    outcome = Outcome()
    for state in ("artifact_install", "artifact_reboot", "artifact_verify_reboot"):
        h.state(state, outcome)

    assert services(ecu.ecu.trace)[10:20] == [
        "3101ff00", "34", "36*2", "37", "3101ff01",  # firmware.bin: 5000 bytes at 0x1000
        "3101ff00", "34", "36", "37", "3101ff01",  # cal.bin: 700 bytes at 0x8000
    ]  # fmt: skip
    bank = ecu.bank(1)
    assert bank[0x1000 : 0x1000 + len(LOW)] == LOW
    assert bank[0x8000 : 0x8000 + len(HIGH)] == HIGH
    assert bank[:0x1000] == b"\xff" * 0x1000
    assert bank[0x1000 + len(LOW) : 0x8000] == b"\xff" * (0x7000 - len(LOW))
    assert h.query("provides") == {"rootfs-image.canbus.version": NEW_VERSION}


def test_dual_bank_with_bank_addresses_a_confirm_routine_and_a_signature(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    ecu = start_ecu(banks=2, config=replace(QUICK_ECU, bank_addresses=(0x0, 0x40000)))
    signature = hashlib.sha256(LOW + HIGH).digest()  # the simulator's stand-in for one
    h = harness(ecu, "--banks=2", profile(tmp_path, (
        "bank_addresses: [0x0, 0x40000]\nconfirm_routine: 0xF002\n"
        "check_record: signature\nsignature_file: image.sig\n")))  # fmt: skip
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(b"", NEW_VERSION)
    files = h.work_dir / "files"
    (files / "firmware.bin").unlink()
    (files / "image.hex").write_text(segments_hex((0x100, LOW), (0x9000, HIGH)))
    (files / "image.sig").write_bytes(signature)
    ecu.ecu.trace.clear()
    outcome = Outcome()
    for state in ("artifact_install", "artifact_reboot", "artifact_verify_reboot",
                  "artifact_commit"):  # fmt: skip
        h.state(state, outcome)

    assert services(ecu.ecu.trace) == [
        "22f189", "22fd00", "1001", "1003", "f:8582", "f:2883", "1002", "2701", "2702",
        "2ef189",
        "3101ff00", "34", "36*2", "37",  # 5000 bytes at 0x40100 (bank 1)
        "3101ff00", "34", "36", "37",  # 700 bytes at 0x49000, the gap never sent
        "3101ff01",  # one check: the signature
        "1101", "22f189", "1003", "f:2880", "f:8581", "1001", "14", "22f186",
        "1003", "3101f002", "1001",  # ArtifactCommit: confirm the new bank
    ]  # fmt: skip
    bank = ecu.bank(1)
    assert bank[0x100 : 0x100 + len(LOW)] == LOW
    assert bank[0x9000 : 0x9000 + len(HIGH)] == HIGH
    assert bank[:0x100] == b"\xff" * 0x100 and bank[0x2000:0x9000] == b"\xff" * 0x7000
    assert ecu.layout().boot_bank == 1 and ecu.ecu.stats["confirmed"] == 1

    h.roll_back(outcome)  # a later failure elsewhere: switch back
    assert outcome.rollback_verified, outcome.rollback_errors
    assert ecu.layout().boot_bank == 0
    assert h.query("provides") == {"rootfs-image.canbus.version": OLD_VERSION}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("security_levels: [2]\n", "field security_levels: expected odd requestSeed sub-functions (0x01, 0x03, ...), got [2]"),
        ("erase_routne: 0xFF00\n", "unknown field 'erase_routne'; known: "),
        ("version_write: after-erase\n", "field version_write: expected one of before-erase, none, got 'after-erase'"),
        ("check_record: signature\n", "field check_record: 'signature' needs signature_file"),
        ("functional_id: 0x7DF0000000\n", "field functional_id: expected an integer from 0 to 0x1fffffff"),
        ("[1, 2]\n", "expected a mapping of profile fields, got [1, 2]"),
        ("a: [\n", "not a YAML flash profile"),
    ],
)  # fmt: skip
def test_a_bad_profile_names_the_file_and_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    argument = profile(tmp_path, text)
    path = argument.split("=", 1)[1]
    with pytest.raises(ConfigError) as caught:
        load(Component("ecu_brake", "canbus", (argument,)), tmp_path)
    assert (
        f"invalid interface_args ['{argument}']: argument --profile: {path}: "
        in caught.value.message
    )
    assert expected in caught.value.message


def test_response_pending_is_waited_out_with_the_p2_star_the_ecu_advertises(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # the erase takes 0.8 s with one NRC 0x78; the ECU's session answers advertise P2* 5 s,
    # longer than the 0.3 s configured, so the tester waits
    ecu = start_ecu(banks=2, config=replace(QUICK_ECU, erase_time=0.8))
    h = harness(ecu, "--banks=2", "--p2-star-timeout=0.3")
    outcome = h.deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None, outcome.failure
    assert ecu.ecu.stats["responses_pending"] >= 1


@pytest.mark.parametrize(
    ("variant", "dtc_off"),
    [("normal-29", "f:8582"), ("extended", "8582")],  # 0x18DB33F1; no functional id: physical
)
def test_functional_requests_follow_the_addressing(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], variant: str, dtc_off: str
) -> None:
    link = VARIANTS[variant]
    ecu = start_ecu(banks=2, link=replace(link, interface="virtual", channel=f"fn-{variant}"))
    outcome = harness(ecu, "--banks=2", *link_args(link)).deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None, outcome.failure
    communication_off = dtc_off.replace("8582", "2883")
    assert services(ecu.ecu.trace)[6:8] == [dtc_off, communication_off]
    assert ecu.layout().banks[1].version == NEW_VERSION


def test_a_compressed_payload_goes_to_the_ecu_as_it_is(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness], tmp_path: Path
) -> None:
    # dataFormatIdentifier 0x11: the vendor's compression and encryption, the ECU's to undo
    ecu = start_ecu(banks=2, config=replace(QUICK_ECU, data_formats=(0x00, 0x11)))
    h = harness(ecu, "--banks=2", profile(tmp_path, "data_format: 0x11\n"))
    outcome = h.deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None, outcome.failure
    assert ecu.ecu.stats["data_format_11"] == 1
    assert ecu.bank(1)[: len(IMAGE)] == IMAGE  # the bytes of the payload file, untouched


def test_a_reset_without_an_answer_is_fine_when_the_ecu_comes_back(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu(banks=2, faults=("silent-reset",))
    outcome = harness(ecu, "--banks=2").deploy(IMAGE, NEW_VERSION)
    assert outcome.failure is None, outcome.failure
    assert "1101" in ecu.ecu.trace
    assert ecu.layout().banks[1].version == NEW_VERSION
