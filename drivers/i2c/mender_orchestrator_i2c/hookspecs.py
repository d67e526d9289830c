"""Extension points of the ``i2c`` driver, for vendor plugins.

A plugin is any object (or module) with functions marked ``orchestrator_core.driver_api.hookimpl``,
registered through the entry-point group ``mender_orchestrator.plugins``. The driver adds these
specifications to each of its Components' plugin managers and calls them through ``ctx.hook``;
its own built-in answers run last, so a plugin's answer always wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator_core.driver_api import hookspec

if TYPE_CHECKING:
    from orchestrator_core.driver_api import InterfaceContext

    from mender_orchestrator_i2c.bus import I2CBus


@hookspec(firstresult=True)
def i2c_open_bus(ctx: InterfaceContext, bus: str) -> I2CBus | None:
    """Open the bus named by ``--bus`` (the text after ``=``) and return it, or ``None``.

    The returned object must offer ``i2c_rdwr(*msgs)`` taking smbus2 ``i2c_msg`` objects, as
    ``smbus2.SMBus`` does, and ``close()``. Implement it for a bus that is not a Linux
    ``/dev/i2c-N`` device (a USB-I2C bridge, a remote board). Built in: ``N`` opens
    ``/dev/i2c-N`` with smbus2; ``sim:PATH`` opens the simulator.
    """


@hookspec(firstresult=True)
def i2c_enter_bootloader(ctx: InterfaceContext, bus: I2CBus, address: int) -> bool | None:
    """Restart the MCU into its system bootloader; return ``True`` once that is done.

    Called when the bootloader does not answer at ``address`` (the MCU runs its application).
    On a real board this drives BOOT0 high and pulses NRST through GPIOs, or sends the
    application its own "jump to bootloader" request. Built in: the simulator's reset lines;
    on any other bus nothing, and the driver reports that no plugin could do it.
    """
