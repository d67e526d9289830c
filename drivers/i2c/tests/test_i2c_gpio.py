"""--nrst-gpio / --boot0-gpio through libgpiod's Python bindings (``gpiod`` 2.x).

No GPIO chip exists on a test machine (gpio-sim needs a kernel module), so the bindings are
replaced at the library boundary by a carrier board with the same API surface the driver uses
(``request_lines(path, consumer=, config={offset: LineSettings})``, ``LineRequest.set_value``,
``release``, ``gpiod.line.Value``/``Direction``), whose NRST line restarts the simulated STM32
on its rising edge, into the bootloader when BOOT0 is high then, from flash otherwise. Lines
released go to their pulls: NRST up (the STM32's own pull-up), BOOT0 down (the board's)."""

from __future__ import annotations

import enum
import errno
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from i2c_helpers import NORMAL_PATH, Sim, artifact_for, make_image
from orchestrator_core.context import InterfaceContext
from orchestrator_core.hookspecs import hookimpl
from test_i2c_driver import VERSION_KEY

from mender_orchestrator_i2c.gpio import PULSE_SECONDS
from mender_orchestrator_i2c.simulator import SimulatedBus

CHIP = "/dev/gpiochip0"
WIRING = {17: "NRST", 4: "BOOT0"}
PULLS = {"NRST": 1, "BOOT0": 0}


class Value(enum.Enum):
    INACTIVE = 0
    ACTIVE = 1


class Direction(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


@dataclass
class LineSettings:
    direction: Direction = Direction.AS_IS
    output_value: Value = Value.INACTIVE


class Board:
    """The carrier board: GPIO chip ``CHIP`` wired to the STM32's NRST and BOOT0."""

    def __init__(self) -> None:
        self.levels = dict(PULLS)
        self.held: dict[int, str] = {}  # offset -> consumer
        self.events: list[tuple[float, str, int]] = []
        self.bus: SimulatedBus | None = None
        self.boots: list[str] = []

    def request_lines(
        self, path: str, consumer: str | None = None, config: dict[int, LineSettings] | None = None
    ) -> LineRequest:
        if path != CHIP:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        config = config or {}
        for offset in config:
            if offset not in WIRING:
                raise ValueError(f"line offset {offset} out of range")
            if offset in self.held:
                raise OSError(errno.EBUSY, "Device or resource busy")
        for offset, settings in config.items():
            assert settings.direction is Direction.OUTPUT
            self.held[offset] = consumer or "?"
            self.drive(offset, settings.output_value.value)
        return LineRequest(self, list(config))

    def drive(self, offset: int, level: int) -> None:
        name = WIRING[offset]
        before, self.levels[name] = self.levels[name], level
        if before == level:
            return  # no edge: nothing happens on the wire
        self.events.append((time.monotonic(), name, level))
        if name == "NRST" and before == 0 and level == 1:  # out of reset: BOOT0 is latched
            assert self.bus is not None
            into = "bootloader" if self.levels["BOOT0"] else "flash"
            self.boots.append(into)
            if into == "bootloader":
                self.bus.reset_to_bootloader()
            else:
                self.bus.reset_to_application()


class LineRequest:
    def __init__(self, board: Board, offsets: list[int]) -> None:
        self.board, self.offsets = board, offsets

    def set_value(self, offset: int, value: Value) -> None:
        assert offset in self.offsets, "a line this request does not hold"
        self.board.drive(offset, value.value)

    def release(self) -> None:
        for offset in self.offsets:
            del self.board.held[offset]
            self.board.drive(offset, PULLS[WIRING[offset]])
        self.offsets = []

    def __enter__(self) -> LineRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class BoardBus:
    """Hands the bus the driver opens to the board, so NRST can restart that chip."""

    def __init__(self, board: Board) -> None:
        self.board = board

    @hookimpl
    def i2c_open_bus(self, ctx: InterfaceContext, bus: str) -> SimulatedBus:
        self.board.bus = SimulatedBus(Path(bus.removeprefix("sim:")))
        return self.board.bus


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Board:
    wired = Board()
    gpiod = types.ModuleType("gpiod")
    line = types.ModuleType("gpiod.line")
    line.Value, line.Direction = Value, Direction  # type: ignore[attr-defined]
    gpiod.LineSettings, gpiod.request_lines = LineSettings, wired.request_lines  # type: ignore[attr-defined]
    gpiod.line = line  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    return wired


GPIO_ARGS = (f"--nrst-gpio={CHIP}:17", f"--boot0-gpio={CHIP}:4")


def test_nrst_and_boot0_enter_the_bootloader_and_start_the_application(
    sim: Sim, runner_for: Any, board: Board
) -> None:
    sim.install_factory(make_image(4000, seed=1), "1.0.0", mode="application")
    image = make_image(5000, seed=2)
    runner = runner_for(sim, *GPIO_ARGS, plugins=[BoardBus(board)])

    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))

    assert outcome.failure is None, outcome.failure
    assert outcome.states == NORMAL_PATH
    # entered for the install and for the check after the reboot; started once by reset
    assert board.boots == ["bootloader", "flash", "bootloader"]
    assert board.held == {} and board.levels == PULLS  # every line released
    levels = [(name, level) for _, name, level in board.events]
    enter = [("BOOT0", 1), ("NRST", 0), ("NRST", 1), ("BOOT0", 0)]  # BOOT0 held past the edge
    start = [("NRST", 0), ("NRST", 1)]  # BOOT0 stays low
    assert levels == enter + start + enter
    pulses = [b[0] - a[0] for a, b in zip(board.events, board.events[1:], strict=False)
              if (a[1], a[2], b[1], b[2]) == ("NRST", 0, "NRST", 1)]  # fmt: skip
    assert len(pulses) == 3 and min(pulses) >= PULSE_SECONDS
    assert sim.flash()[: len(image)] == image
    assert sim.state()["mode"] == "application"
    assert runner.query("provides") == {VERSION_KEY: "2.0.0"}


def test_a_gpio_chip_that_is_not_there_is_named(sim: Sim, runner_for: Any, board: Board) -> None:
    sim.install_factory(make_image(4000, seed=1), "1.0.0", mode="application")
    image = make_image(5000, seed=2)
    runner = runner_for(
        sim, "--nrst-gpio=/dev/gpiochip7:17", "--boot0-gpio=/dev/gpiochip7:4",
        plugins=[BoardBus(board)],
    )  # fmt: skip
    outcome = runner.deploy(image, artifact_for(image, "2.0.0"))
    assert (
        "cannot drive NRST/BOOT0 (--nrst-gpio /dev/gpiochip7:17, --boot0-gpio "
        "/dev/gpiochip7:4): No such file or directory"
    ) in str(outcome.failure)
    assert board.boots == []


def test_a_line_held_by_another_program_is_a_clear_error(
    sim: Sim, runner_for: Any, board: Board
) -> None:
    sim.install_factory(make_image(4000, seed=1), "1.0.0", mode="application")
    board.held[17] = "someone-else"
    image = make_image(5000, seed=2)
    outcome = runner_for(sim, *GPIO_ARGS, plugins=[BoardBus(board)]).deploy(
        image, artifact_for(image, "2.0.0")
    )
    assert f"--nrst-gpio {CHIP}:17, --boot0-gpio {CHIP}:4): Device or resource busy" in str(
        outcome.failure
    )
    assert board.held == {17: "someone-else"}  # BOOT0 was released again
    assert sim.state()["mode"] == "application"
