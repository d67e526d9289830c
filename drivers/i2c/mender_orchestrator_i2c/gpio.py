"""NRST through a GPIO line, with libgpiod's Python bindings (``gpiod``, optional).

Only imported when ``--nrst-gpio`` is given, so boards without it need no libgpiod.
"""

from __future__ import annotations

import time

from orchestrator_core.driver_api import InterfaceContext, InterfaceError

PULSE_SECONDS = 0.01  # NRST low for 10 ms: far above the 20 us minimum of every STM32


def pulse(ctx: InterfaceContext, chip: str, line: int) -> None:
    """Drive NRST low, then release it: the MCU restarts (from flash, BOOT0 being low)."""
    try:
        import gpiod
        from gpiod.line import Direction, Value
    except ImportError as exc:
        raise InterfaceError(
            f"{ctx.name}: --nrst-gpio needs libgpiod's Python bindings: pip install "
            f"'mender-orchestrator-i2c[gpio]' ({exc})"
        ) from exc
    settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE)
    try:
        with gpiod.request_lines(
            chip, consumer="mender-orchestrator-i2c", config={line: settings}
        ) as request:
            time.sleep(PULSE_SECONDS)
            request.set_value(line, Value.ACTIVE)
    except OSError as exc:
        raise InterfaceError(
            f"{ctx.name}: cannot pulse NRST on {chip} line {line}: {exc.strerror or exc}"
        ) from exc
