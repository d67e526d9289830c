"""Opening an I2C bus: a Linux ``/dev/i2c-N`` through smbus2, or the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator_core.driver_api import InterfaceError


class I2CBus(Protocol):
    """The part of ``smbus2.SMBus`` the driver uses."""

    def i2c_rdwr(self, *msgs: Any) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ResettableBus(Protocol):
    """A bus that also drives the MCU's BOOT0/NRST lines (the simulator does)."""

    def reset_to_bootloader(self) -> None: ...


def open_builtin(spec: str) -> I2CBus:
    """Open ``N`` (``/dev/i2c-N``) or ``sim:PATH``; ``spec`` was checked by the settings."""
    if spec.startswith("sim:"):
        from mender_orchestrator_i2c.simulator import SimulatedBus, SimulatorError

        try:
            return SimulatedBus(Path(spec[4:]))
        except (OSError, SimulatorError) as exc:
            raise InterfaceError(f"cannot open the simulated I2C bus {spec}: {exc}") from exc
    import smbus2

    try:
        return smbus2.SMBus(int(spec))
    except OSError as exc:
        raise InterfaceError(f"cannot open /dev/i2c-{spec}: {exc.strerror or exc}") from exc
