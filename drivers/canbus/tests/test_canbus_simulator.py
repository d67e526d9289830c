"""The simulated ECU answers like a bootloader would: request bytes in, response bytes out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from canbus_helpers import BANK as HARNESS_BANK
from canbus_helpers import OLD_VERSION, QUICK_ECU, SERIAL, Harness, Outcome, SimEcu, pseudo_random
from orchestrator_core.errors import InterfaceError

from mender_orchestrator_canbus.security import simulator_key
from mender_orchestrator_canbus.simulator import Ecu, EcuConfig, Faults, FlashStore

BANK = 0x4000


class EcuProbe:
    """Sends raw requests to an ``Ecu`` and keeps what it answered, response-pending included."""

    def __init__(self, ecu: Ecu) -> None:
        self.ecu = ecu
        self.pending: list[str] = []

    def ask(self, request: str) -> str:
        answer = self.ecu.handle(bytes.fromhex(request), lambda raw: self.pending.append(raw.hex()))
        return "" if answer is None else answer.hex()

    def unlock(self) -> None:
        assert self.ask("1001").startswith("5001")
        assert self.ask("1003").startswith("5003")
        assert self.ask("1002") == "5002" + "0032" + "01f4"  # P2 50 ms, P2* 5000 ms
        seed = bytes.fromhex(self.ask("2701"))[2:]
        assert self.ask("2702" + simulator_key(seed).hex()) == "6702"


@pytest.fixture
def tester(tmp_path: Path) -> EcuProbe:
    state = tmp_path / "ecu.json"
    FlashStore.create(
        state, banks=1, bank_size=BANK, serial=SERIAL, version=OLD_VERSION, image=b"\x11" * 100
    )
    return EcuProbe(Ecu(FlashStore(state), QUICK_ECU, Faults()))


def test_sessions_and_identification(tester: EcuProbe) -> None:
    assert tester.ask("22f18c") == "62f18c" + SERIAL.encode().hex()
    assert tester.ask("22f189") == "62f189" + OLD_VERSION.encode().hex()
    assert tester.ask("22f186") == "62f18601"
    assert tester.ask("22fd00") == "7f2231"  # no bank DID on a single-bank ECU
    assert tester.ask("1002") == "7f107e"  # programming only from the extended session
    assert tester.ask("1003") == "5003003201f4"
    assert tester.ask("22f186") == "62f18603"
    assert tester.ask("1003") == "5003003201f4"  # staying in a session is allowed
    assert tester.ask("1002") == "5002003201f4"
    assert tester.ask("1003") == "7f107e"  # no way back to extended from programming
    assert tester.ask("1004") == "7f1012"
    assert tester.ask("10") == "7f1013"
    assert tester.ask("3e00") == "7e00"
    assert tester.ask("3e80") == ""  # suppressPosRspMsgIndicationBit
    assert tester.ask("19") == "7f1911"
    assert tester.ask("2ef18941") == "7f2e33"  # programming session, but locked


def test_security_access(tester: EcuProbe) -> None:
    assert tester.ask("2701") == "7f277f"  # not in the default session
    tester.ask("1003")
    assert tester.ask("2702" + "00" * 4) == "7f2724"  # a key without a seed
    for expected in ("7f2735", "7f2735", "7f2736"):
        tester.ask("2701")
        assert tester.ask("270212345678") == expected
    assert tester.ask("2701") == "7f2737"  # locked out for a while
    tester.ecu.lockout_until = 0
    seed = bytes.fromhex(tester.ask("2701"))[2:]
    assert len(seed) == 4 and any(seed)
    assert tester.ask("2702" + simulator_key(seed)[:3].hex()) == "7f2713"
    seed = bytes.fromhex(tester.ask("2701"))[2:]
    assert tester.ask("2702" + simulator_key(seed).hex()) == "6702"
    assert tester.ask("2701") == "670100000000"  # already unlocked: zero seed


def test_programming_rules_and_block_counter(tester: EcuProbe) -> None:
    tester.ask("1003")
    tester.ask("1002")
    assert tester.ask("340044" + "00000000" + "00000010") == "7f3433"  # locked
    tester.unlock()
    assert tester.ask("360100") == "7f3624"  # no transfer under way
    assert tester.ask("340044" + "00000000" + "00000010") == "7f3470"  # not erased
    assert tester.ask("3101ff00" + "44" + "00000000" + "00004001") == "7f3131"  # beyond the bank
    assert tester.ask("3101ff00" + "44" + "00000000" + "00001000") == "7101ff0000"
    assert tester.pending == ["7f3178"]  # the erase answered response-pending first
    assert tester.ask("341044" + "00000000" + "00000010") == "7f3431"  # compression not offered
    assert tester.ask("340044" + "00000000" + "00000010") == "74200fff"  # max block length 4095
    assert tester.ask("3602" + "aa" * 8) == "7f3673"  # counters start at 1
    assert tester.ask("3601" + "aa" * 8) == "7601"
    assert tester.ask("3601" + "bb" * 8) == "7601"  # a repeat is acknowledged, not written
    assert tester.ask("3603" + "aa" * 8) == "7f3673"
    assert tester.ask("3702") == "7f3724"  # only 8 of 16 bytes so far
    assert tester.ask("3602" + "aa" * 9) == "7f3671"  # more than was requested
    assert tester.ask("3602" + "aa" * 8) == "7602"
    assert tester.ask("37") == "77"
    assert tester.ecu.flash.read(0, 0, 17) == b"\xaa" * 16 + b"\xff"
    assert tester.ask("2ef189" + b"ecu-2".hex()) == "6ef189"
    crc = zlib.crc32(b"\xbb" * 16).to_bytes(4, "big").hex()
    assert tester.ask("3101ff01" + crc) == "7101ff0101"  # wrong CRC
    crc = zlib.crc32(b"\xaa" * 16).to_bytes(4, "big").hex()
    assert tester.ask("3101ff01" + crc) == "7101ff0100"
    assert tester.ecu.flash.layout.banks[0].version == "ecu-2"
    assert tester.ask("1101") == "5101"
    assert tester.ecu.reset_requested


def test_programming_without_erasing_corrupts_like_nor_flash(tmp_path: Path) -> None:
    state = tmp_path / "ecu.json"
    store = FlashStore.create(
        state, banks=2, bank_size=BANK, serial=SERIAL, version="v1", image=b"\x0f" * 8
    )
    store.program(0, 0, b"\xf0" * 8)  # bits can only be cleared
    assert store.read(0, 0, 8) == b"\x00" * 8
    store.erase(0, 5, 1)  # whole 4 KiB sectors
    assert store.read(0, 0, 9) == b"\xff" * 9
    assert FlashStore(state).layout.banks[1].valid is False


def test_the_block_counter_wraps_and_the_ecus_block_length_is_used(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    # 32 data bytes per block: 9000 bytes take 282 blocks, counters 0x01..0xFF, 0x00, 0x01...
    ecu = start_ecu(
        banks=2,
        config=EcuConfig(max_block_length=34, erase_time=0.01, check_time=0.01, boot_time=0.05),
    )
    image = pseudo_random("wrap", 9000)
    outcome = harness(ecu, "--banks=2").deploy(image, "ecu-wrapped")
    assert outcome.failure is None
    assert ecu.ecu.trace.count("36") == 282
    assert ecu.bank(1)[:9000] == image


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "drop-frames",
            "fault drop-frames needs a block count, e.g. drop-frames=3 (got 'drop-frames')",
        ),
        ("corrupt-block=0", "fault corrupt-block needs a block count"),
        (
            "wrong-key=1",
            "unknown fault 'wrong-key=1'; known: drop-frames, corrupt-block, wrong-key",
        ),
        ("never-answer=sometimes", "unknown fault 'never-answer=sometimes'"),
    ],
)
def test_bad_fault_specs_are_named(spec: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        Faults.parse([spec])
    assert expected in str(caught.value)


def test_fault_specs() -> None:
    faults = Faults.parse(
        ["drop-frames=2", "corrupt-block=3", "wrong-key", "never-answer=after-reset"]
    )
    assert (faults.drop_frames, faults.corrupt_block, faults.wrong_key) == (2, 3, True)
    assert (faults.refuse_erase, faults.fail_after, faults.never_answer) == (
        False,
        None,
        "after-reset",
    )


def good_state(tmp_path: Path) -> Path:
    state = tmp_path / "ecu.json"
    FlashStore.create(state, banks=2, bank_size=BANK, serial=SERIAL, version="v1", image=b"\x01")
    return state


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda doc: "{", "ecu.json: not JSON: "),
        (lambda doc: {**doc, "serial": 5}, "ecu.json: serial: expected a non-empty string, got 5"),
        (lambda doc: {**doc, "bank_size": 5000}, "ecu.json: bank_size: expected a multiple of 4096 bytes, got 5000"),
        (lambda doc: {**doc, "boot_bank": 2}, "ecu.json: boot_bank: expected a bank number below 2, got 2"),
        (lambda doc: {**doc, "banks": []}, "ecu.json: banks: expected a list of 1 or 2 banks, got []"),
        (lambda doc: {**doc, "banks": [{"valid": "yes", "version": "v1"}]},
         """ecu.json: banks[0]: expected {"valid": true|false, "version": "..."|null}, got"""),
        (lambda doc: {**doc, "bank_size": 2 * BANK}, "ecu.json.bank0: bank 0 must hold bank_size=32768 bytes; it holds 16384 bytes"),
    ],
)  # fmt: skip
def test_a_bad_state_file_is_named_before_the_ecu_starts(
    tmp_path: Path, change: Callable[[dict[str, object]], object], expected: str
) -> None:
    state = good_state(tmp_path)
    document = change(json.loads(state.read_text()))
    state.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ValueError) as caught:
        FlashStore(state)
    assert str(caught.value).startswith(str(tmp_path / "ecu.json"))
    assert expected in str(caught.value)


def simulator_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mender_orchestrator_canbus.simulator",
         "--interface=virtual", "--channel=nobody", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--initial-size=0x20000", "--bank-size=0x10000"], "--initial-size=131072 does not fit --bank-size=65536"),
        (["--bank-size=5000"], "argument --bank-size: expected a multiple of 4096, got '5000'"),
        (["--serial="], "argument --serial: expected 1 to 64 printable ASCII characters, got ''"),
        (["--boot-time=inf"], "argument --boot-time: expected a number of seconds above 0 and at most 86400"),
        (["--fault=melt"], "unknown fault 'melt'; known: drop-frames, "),
    ],
)  # fmt: skip
def test_the_simulator_names_a_bad_option_in_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = simulator_cli("--state", tmp_path / "ecu.json", *args)
    assert result.returncode == 2
    usage, error = result.stderr.splitlines()  # a short usage line, then the message
    assert usage.startswith("usage: python -m mender_orchestrator_canbus.simulator --state FILE")
    assert error.startswith("python -m mender_orchestrator_canbus.simulator: error: ")
    assert expected in error
    assert list(tmp_path.iterdir()) == []


def test_the_simulator_refuses_a_broken_state_file(tmp_path: Path) -> None:
    state = good_state(tmp_path)
    (tmp_path / "ecu.json.bank1").unlink()
    result = simulator_cli("--state", state)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"python -m mender_orchestrator_canbus.simulator: error: --state: {state}.bank1: bank 1 "
        f"must hold bank_size={BANK} bytes; it is missing"
    )


def test_an_ecu_whose_flash_files_vanish_goes_silent_and_says_why(
    start_ecu: Callable[..., SimEcu], harness: Callable[..., Harness]
) -> None:
    ecu = start_ecu()
    h = harness(ecu)
    Path(f"{ecu.state}.bank0").unlink()
    h.state("artifact_reboot", Outcome())  # the ECU answers, resets, and cannot boot
    deadline = time.monotonic() + 5
    while ecu.server.failure is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert str(ecu.server.failure) == (
        f"{ecu.state}.bank0: bank 0 must hold bank_size={HARNESS_BANK} bytes; it is missing"
    )
    with pytest.raises(InterfaceError, match="no answer from the ECU"):
        h.query("identity")
