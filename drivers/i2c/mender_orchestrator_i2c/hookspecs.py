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


@hookspec(firstresult=True)
def i2c_reset_mcu(ctx: InterfaceContext, bus: I2CBus, address: int) -> bool | None:
    """Restart the MCU from its flash (BOOT0 low, pulse NRST); return ``True`` once done.

    Used to start a new or restored application where the board wires NRST (and BOOT0) to
    the host, instead of the bootloader's Go: a reset starts the application exactly as a
    power-up does, and it works under readout protection, which refuses Go. Without an
    implementation (``None``) the driver uses Go. Built in: ``--nrst-gpio`` through libgpiod.
    """


@hookspec(firstresult=True)
def i2c_query_application(
    ctx: InterfaceContext, bus: I2CBus, address: int
) -> dict[str, str] | None:
    """Ask the running application (not the bootloader) what it is; ``None`` if it cannot.

    Queries (Identity, Provides, Inventory) must not stop the application, so the driver
    asks this hook first, then what it recorded at the last install. Keys the driver uses:
    ``version`` (the running firmware's version), ``pid`` and ``uid`` (hexadecimal, as the
    bootloader would report them). No built-in implementation.
    """
