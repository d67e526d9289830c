"""NRST (and BOOT0) through GPIO lines, with libgpiod's Python bindings (``gpiod``, optional).

Only imported when ``--nrst-gpio`` is given, so boards without it need no libgpiod.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from orchestrator_core.driver_api import InterfaceContext, InterfaceError

PULSE_SECONDS = 0.01  # NRST low for 10 ms: far above the 20 us minimum of every STM32
BOOT_SECONDS = 0.05  # after NRST is released, before BOOT0 may change: the boot pins are latched

Line = tuple[str, int]  # (chip, line offset), as --nrst-gpio and --boot0-gpio give them


def _gpiod(ctx: InterfaceContext) -> tuple[Any, Any]:
    try:
        # imported by name: an optional dependency, without type information
        return importlib.import_module("gpiod"), importlib.import_module("gpiod.line")
    except ImportError as exc:
        raise InterfaceError(
            f"{ctx.name}: --nrst-gpio needs libgpiod's Python bindings: pip install "
            f"'mender-orchestrator-i2c[gpio]' ({exc})"
        ) from exc


def restart(ctx: InterfaceContext, nrst: Line, boot0: Line | None, *, bootloader: bool) -> None:
    """Pulse NRST: the MCU restarts into its system bootloader (``bootloader``, BOOT0 held
    high meanwhile) or from its flash (BOOT0 low). Without a BOOT0 line, only from flash."""
    gpiod, types = _gpiod(ctx)
    low, high = types.Value.INACTIVE, types.Value.ACTIVE
    output = types.Direction.OUTPUT
    try:
        requests = []
        if boot0 is not None:
            level = high if bootloader else low
            settings = gpiod.LineSettings(direction=output, output_value=level)
            requests.append(
                gpiod.request_lines(boot0[0], consumer="mender-orchestrator-i2c BOOT0",
                                    config={boot0[1]: settings})
            )  # fmt: skip
        try:
            settings = gpiod.LineSettings(direction=output, output_value=low)
            with gpiod.request_lines(
                nrst[0], consumer="mender-orchestrator-i2c NRST", config={nrst[1]: settings}
            ) as request:
                time.sleep(PULSE_SECONDS)
                request.set_value(nrst[1], high)
                time.sleep(BOOT_SECONDS)
        finally:
            for held in requests:  # BOOT0 released once the boot pins were latched
                held.release()
    except OSError as exc:
        raise InterfaceError(
            f"{ctx.name}: cannot drive NRST/BOOT0 (--nrst-gpio {nrst[0]}:{nrst[1]}"
            f"{'' if boot0 is None else f', --boot0-gpio {boot0[0]}:{boot0[1]}'}): "
            f"{exc.strerror or exc}"
        ) from exc
