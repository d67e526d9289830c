"""Extension point of the ``mcuboot`` driver, for vendor plugins (see the README).

A plugin registered in the entry-point group ``mender_orchestrator.plugins`` may add an SMP
transport (BLE, a CAN or USB bridge) the driver does not have built in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator_core.driver_api import hookspec

if TYPE_CHECKING:
    from orchestrator_core.driver_api import InterfaceContext
    from smpclient.transport import SMPTransport

    from mender_orchestrator_mcuboot.settings import Settings


@hookspec(firstresult=True)
def mcuboot_transport(
    ctx: InterfaceContext, settings: Settings
) -> tuple[SMPTransport, str] | None:
    """An unconnected smpclient ``SMPTransport`` for ``settings.transport`` and the address
    its ``connect`` takes, or ``None`` when the transport is not this plugin's.

    Built in: ``udp`` (``--host``, ``--port``, ``--mtu``) and ``serial`` (``--device``,
    ``--baudrate``). A plugin's transport gets ``--address`` as ``settings.address``.
    """
