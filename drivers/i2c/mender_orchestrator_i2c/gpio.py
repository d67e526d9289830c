"""NRST through a GPIO line, with libgpiod's Python bindings (``gpiod``, optional).

Only imported when ``--nrst-gpio`` is given, so boards without it need no libgpiod.
"""

from __future__ import annotations

import importlib
import time

from orchestrator_core.driver_api import InterfaceContext, InterfaceError

PULSE_SECONDS = 0.01  # NRST low for 10 ms: far above the 20 us minimum of every STM32


def pulse(ctx: InterfaceContext, chip: str, line: int) -> None:
    """Drive NRST low, then release it: the MCU restarts (from flash, BOOT0 being low)."""
    try:
        # imported by name: an optional dependency, without type information
        gpiod = importlib.import_module("gpiod")
        line_types = importlib.import_module("gpiod.line")
    except ImportError as exc:
        raise InterfaceError(
            f"{ctx.name}: --nrst-gpio needs libgpiod's Python bindings: pip install "
            f"'mender-orchestrator-i2c[gpio]' ({exc})"
        ) from exc
    low, high = line_types.Value.INACTIVE, line_types.Value.ACTIVE
    settings = gpiod.LineSettings(direction=line_types.Direction.OUTPUT, output_value=low)
    try:
        with gpiod.request_lines(
            chip, consumer="mender-orchestrator-i2c", config={line: settings}
        ) as request:
            time.sleep(PULSE_SECONDS)
            request.set_value(line, high)
    except OSError as exc:
        raise InterfaceError(
            f"{ctx.name}: cannot pulse NRST on {chip} line {line}: {exc.strerror or exc}"
        ) from exc
