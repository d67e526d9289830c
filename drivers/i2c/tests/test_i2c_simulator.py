"""The simulated STM32, byte for byte, through smbus2 ``i2c_msg`` transfers as a host sends them."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from i2c_helpers import Sim, make_image
from smbus2 import i2c_msg

from mender_orchestrator_i2c import simulator
from mender_orchestrator_i2c.simulator import SimulatedBus, SimulatorError, side_file

ADDRESS = 0x48


class Host:
    """Raw frames over the simulated bus, one transfer each, as the AN4221 sequences show."""

    def __init__(self, bus: SimulatedBus) -> None:
        self.bus = bus

    def write(self, *data: int) -> None:
        self.bus.i2c_rdwr(i2c_msg.write(ADDRESS, bytes(data)))

    def read(self, length: int = 1) -> bytes:
        message = i2c_msg.read(ADDRESS, length)
        self.bus.i2c_rdwr(message)
        return bytes(message)


@pytest.fixture
def open_host(sim: Sim) -> Iterator[Callable[[], Host]]:
    """Opens the device as a host would, after the test has arranged its files."""
    buses: list[SimulatedBus] = []

    def open_() -> Host:
        buses.append(SimulatedBus(sim.path))
        return Host(buses[-1])

    yield open_
    for bus in buses:
        bus.close()


@pytest.fixture
def host(open_host: Callable[[], Host]) -> Host:
    return open_host()


def test_get_lists_the_v11_commands(host: Host) -> None:
    host.write(0x00, 0xFF)
    assert host.read() == b"\x79"
    assert host.read(19) == bytes.fromhex("11110001021121313244456364737482839293")
    assert host.read() == b"\x79"


@pytest.mark.parametrize(
    ("version", "reply"),
    [
        (0x10, "0b1000010211213144637382 92".replace(" ", "")),
        (0x11, "11110001021121313244456364737482839293"),
        (0x12, "1212000102112131446373829232456474839 3a1".replace(" ", "")),
    ],
)
def test_get_replies_exactly_as_long_as_the_version_lists(
    sim: Sim, open_host: Callable[[], Host], version: int, reply: str
) -> None:
    sim.chip(bootloader_version=f"0x{version:02x}")
    host = open_host()
    host.write(0x00, 0xFF)
    assert host.read() == b"\x79"
    assert host.read(len(reply) // 2) == bytes.fromhex(reply)
    assert host.read() == b"\x79"
    # a read longer than the frame is not padded: the bootloader holds the clock
    host.write(0x00, 0xFF)
    assert host.read() == b"\x79"
    with pytest.raises(OSError) as failure:
        host.read(34)
    assert failure.value.errno == errno.ETIMEDOUT
    host.write(0x01, 0xFE)  # and waits for a command again
    assert host.read() == b"\x79"


def test_get_version_and_get_id(host: Host) -> None:
    host.write(0x01, 0xFE)
    assert host.read() + host.read() + host.read() == b"\x79\x11\x79"
    host.write(0x02, 0xFD)
    assert host.read() == b"\x79"
    assert host.read(3) == b"\x01\x04\x60"
    assert host.read() == b"\x79"


def test_bad_complement_and_unknown_command_are_nacked(host: Host) -> None:
    host.write(0x11, 0xEF)
    assert host.read() == b"\x1f"
    host.write(0x43, 0xBC)  # the legacy Erase does not exist on I2C
    assert host.read() == b"\x1f"
    host.write(0x63, 0x9C)  # Write Protect is listed, but the simulated part refuses it
    assert host.read() == b"\x1f"


def test_write_then_read_memory(host: Host, sim: Sim) -> None:
    host.write(0x31, 0xCE)
    assert host.read() == b"\x79"
    host.write(0x08, 0x00, 0x01, 0x00, 0x09)
    assert host.read() == b"\x79"
    host.write(0x03, 0xDE, 0xAD, 0xBE, 0xEF, 0x03 ^ 0xDE ^ 0xAD ^ 0xBE ^ 0xEF)
    assert host.read() == b"\x79"  # the clock-stretching form answers once the write is done
    host.write(0x11, 0xEE)
    assert host.read() == b"\x79"
    host.write(0x08, 0x00, 0x01, 0x00, 0x09)
    assert host.read() == b"\x79"
    host.write(0x05, 0xFA)
    assert host.read() == b"\x79"
    assert host.read(6) == b"\xde\xad\xbe\xef\xff\xff"
    assert sim.flash()[0x100:0x104] == b"\xde\xad\xbe\xef"  # persisted at once


@pytest.mark.parametrize(
    ("address", "data", "why"),
    [
        ((0x08, 0x00, 0x00, 0x02), b"\x01\x02\x03\x04", "unaligned address"),
        ((0x08, 0x00, 0x00, 0x00), b"\x01\x02\x03", "not whole words"),
        ((0x08, 0x00, 0x00, 0x10), b"\x00\x00\x00\x00", "word already programmed"),
    ],
)
def test_write_memory_refusals(
    sim: Sim, open_host: Callable[[], Host], address: tuple[int, ...], data: bytes, why: str
) -> None:
    device = sim.device()
    device.flash[0x10:0x14] = b"\x12\x34\x56\x78"
    device.save_flash()
    host = open_host()
    host.write(0x32, 0xCD)
    assert host.read() == b"\x79"
    host.write(*address, address[0] ^ address[1] ^ address[2] ^ address[3])
    assert host.read() == b"\x79"
    frame = bytes([len(data) - 1, *data])
    checksum = 0
    for byte in frame:
        checksum ^= byte
    host.write(*frame, checksum)
    assert host.read() == b"\x1f", why


def test_no_stretch_erase_answers_busy_until_done(sim: Sim, open_host: Callable[[], Host]) -> None:
    sim.chip(page_erase_seconds=0.05)
    device = sim.device()
    device.flash[:8] = bytes(8)
    device.save_flash()
    host = open_host()
    host.write(0x45, 0xBA)
    assert host.read() == b"\x79"
    host.write(0x00, 0x00, 0x00)
    assert host.read() == b"\x79"
    host.write(0x00, 0x00, 0x00)
    answers = [host.read()[0]]
    while answers[-1] == 0x76:
        answers.append(host.read()[0])
    assert answers[0] == 0x76 and answers[-1] == 0x79
    assert sim.flash()[:8] == b"\xff" * 8


def test_protocol_violations_fail_like_an_adapter(host: Host) -> None:
    with pytest.raises(OSError) as caught:
        host.read()  # nothing to send
    assert caught.value.errno == errno.EREMOTEIO
    host.write(0x01, 0xFE)
    with pytest.raises(OSError) as caught:
        host.write(0x01, 0xFE)  # the ACK was never read
    assert caught.value.errno == errno.EREMOTEIO
    with pytest.raises(OSError) as caught:
        host.bus.i2c_rdwr(i2c_msg.write(0x49, b"\x01\xfe"))
    assert caught.value.errno == errno.ENXIO


def test_go_runs_a_valid_application_and_locks_up_on_garbage(
    sim: Sim, open_host: Callable[[], Host]
) -> None:
    device = sim.device()
    device.flash[:16] = make_image(16, seed=1)
    device.save_flash()
    host = open_host()
    host.write(0x21, 0xDE)
    assert host.read() == b"\x79"
    host.write(0x08, 0x00, 0x00, 0x00, 0x08)
    assert host.read() == b"\x79"
    assert sim.state()["mode"] == "application"
    with pytest.raises(OSError):  # the bootloader has left the bus
        host.write(0x01, 0xFE)
    host.bus.reset_to_bootloader()
    host.write(0x21, 0xDE)
    assert host.read() == b"\x79"
    host.write(0x08, 0x00, 0x10, 0x00, 0x18)  # erased flash: no vector table there
    assert host.read() == b"\x79"
    assert sim.state()["mode"] == "lockup"


def test_power_loss_leaves_a_partial_write_and_a_silent_bus(
    sim: Sim, open_host: Callable[[], Host]
) -> None:
    sim.faults({"kind": "power_loss", "command": "write", "after_bytes": 8, "off_transactions": 2})
    host = open_host()
    host.write(0x32, 0xCD)
    host.read()
    host.write(0x08, 0x00, 0x00, 0x00, 0x08)
    host.read()
    data = bytes(range(16))
    checksum = 15
    for byte in data:
        checksum ^= byte
    host.write(15, *data, checksum)
    for _ in range(2):
        with pytest.raises(OSError) as caught:
            host.read()
        assert caught.value.errno == errno.ENXIO
    host.write(0x01, 0xFE)  # power is back, in the bootloader
    assert host.read() == b"\x79"
    assert sim.flash()[:16] == data[:8] + b"\xff" * 8
    assert sim.state()["power_cycles"] == 1


def test_device_is_locked_while_open(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator, "LOCK_WAIT_SECONDS", 0.05)
    with SimulatedBus(sim.path), pytest.raises(OSError) as caught:
        SimulatedBus(sim.path)
    assert caught.value.errno == errno.EBUSY


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "not readable JSON"),
        ('{"chip": {"adress": 72}}', "chip: unknown field(s) adress"),
        ('{"chip": {"page_size": 1000}}', "chip.page_size: expected a power of two >= 256"),
        ('{"faults": [{"kind": "melt"}]}', "faults[0].kind: expected one of nack, busy"),
        ('{"faults": [{"kind": "busy"}]}', 'faults[0].command: a busy fault needs "write"'),
        ('{"faults": [{"kind": "nack", "times": 0}]}', "faults[0].times: expected a count >= 1"),
        (
            '{"faults": [{"kind": "power_loss", "command": "write", "after_bytes": -4}]}',
            "faults[0].after_bytes: expected a number >= 0, got -4",
        ),
        ('{"state": {"power_cycles": "x"}}', "state.power_cycles: expected an integer or a string"),
        ('{"chip": {"pid": "0x1000"}}', "chip.pid: expected a 12-bit device ID"),
        ('{"chip": {"sram_size": -1}}', "chip.sram_size: expected a size >= 0"),
    ],
)
def test_bad_side_file_is_named(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "dev.bin"
    path.write_bytes(b"\xff" * 64 * 1024)
    side_file(path).write_text(document)
    with pytest.raises(SimulatorError) as caught:
        SimulatedBus(path)
    assert str(caught.value).startswith(str(side_file(path)))
    assert message in str(caught.value)


def test_command_line_creates_and_shows_a_device(tmp_path: Path) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(make_image(3000, seed=9))
    path = tmp_path / "dev.bin"
    command = [sys.executable, "-m", "mender_orchestrator_i2c.simulator"]
    subprocess.run(
        [*command, "init", str(path), "--flash-size=32K", "--image", str(image), "--version=1.4"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    shown = subprocess.run(
        [*command, "show", str(path)], check=True, capture_output=True, text=True, timeout=60
    )
    summary = json.loads(shown.stdout)
    assert summary["version_record"]["version"] == "1.4"
    assert summary["chip"]["flash_size"] == 32 * 1024
    assert summary["blank_pages"] == list(range(2, 15))
    again = subprocess.run(
        [*command, "init", str(path)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already exists; use --force" in again.stderr


def test_a_path_without_a_device_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.bin"
    with pytest.raises(SimulatorError) as caught:
        SimulatedBus(path)
    assert str(caught.value) == (
        f"no simulated device at {path}: create one with "
        f"`python -m mender_orchestrator_i2c.simulator init {path}`"
    )
    assert list(tmp_path.iterdir()) == []  # no blank chip, no lock file


def simulator_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mender_orchestrator_i2c.simulator", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (
            ["--flash-size=abc"],
            2,
            "argument --flash-size: expected a size in bytes (2048, 0x800, 2K, 1M), got 'abc'",
        ),
        (["--uid=zz"], 2, "argument --uid: expected 24 hexadecimal digits, got 'zz'"),
        (["--page-size=100"], 1, "error: --page-size: expected a power of two >= 256"),
        (["--pid=0x10000"], 1, "error: --pid: expected a 12-bit device ID (0x000 .. 0xfff)"),
        (
            ["--image=/nonexistent/fw.bin"],
            1,
            "error: --image /nonexistent/fw.bin: No such file or directory",
        ),
        (
            ["--image={fw}", "--version="],
            1,
            "error: --version: version '' must be 1 to 200 bytes of UTF-8",
        ),
        (
            ["--image={fw}", "--version-record=0x08000101"],
            1,
            "error: --version-record=0x08000101: expected the start of a page after the first, "
            "0x08000800 .. 0x0800f800",
        ),
        (
            ["--image={fw}", "--version-record=0x08000800"],
            1,
            "error: --image {fw}: 3000 bytes; the image must hold 1 to 2048 bytes, below the "
            "version record at 0x08000800",
        ),
    ],
)
def test_init_with_bad_arguments_names_them_and_creates_nothing(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(make_image(3000, seed=9))
    path = tmp_path / "dev.bin"
    args = [arg.format(fw=firmware) for arg in args]

    result = simulator_cli("init", path, *args)

    assert result.returncode == status
    assert message.format(fw=firmware) in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw.bin"]


def test_show_of_a_missing_device_is_an_error_not_a_new_device(tmp_path: Path) -> None:
    result = simulator_cli("show", tmp_path / "none.bin")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: no simulated device at {tmp_path / 'none.bin'}: create one with "
        f"`python -m mender_orchestrator_i2c.simulator init {tmp_path / 'none.bin'}`\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_get_checksum_answers_the_crc_of_the_area(sim: Sim, open_host: Callable[[], Host]) -> None:
    sim.chip(bootloader_version="0x12")
    image = make_image(1024, seed=9)
    sim.install_factory(image, "1.0.0")
    host = open_host()
    host.write(0xA1, 0x5E)
    assert host.read() == b"\x79"
    host.write(0x08, 0x00, 0x00, 0x00, 0x08)
    assert host.read() == b"\x79"
    host.write(0x00, 0x00, 0x04, 0x00, 0x04)  # 1024 bytes
    assert host.read() == b"\x79"
    while (answer := host.read()) == b"\x76":  # BUSY while the CRC unit runs
        pass
    assert answer == b"\x79"
    reply = host.read(5)
    # CRC-32/MPEG-2 of the little-endian words, as the STM32 CRC unit computes it
    crc = 0xFFFFFFFF
    for offset in range(0, len(image), 4):
        crc ^= int.from_bytes(image[offset : offset + 4], "little")
        for _ in range(32):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else crc << 1
    assert reply[:4] == crc.to_bytes(4, "big")
    assert reply[4] == reply[0] ^ reply[1] ^ reply[2] ^ reply[3]
    host.write(0x01, 0xFE)  # waiting for a command again
    assert host.read() == b"\x79"
