"""Extension points of the ``esp32`` driver, for vendor plugins.

A plugin is any object (or module) with functions marked ``orchestrator_core.driver_api.hookimpl``,
registered through the entry-point group ``mender_orchestrator.plugins``. The driver adds these
specifications to each of its Components' plugin managers and calls them through ``ctx.hook``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator_core.driver_api import hookspec

if TYPE_CHECKING:
    from orchestrator_core.driver_api import InterfaceContext


@hookspec(firstresult=True)
def esp32_query_application(ctx: InterfaceContext, port: str) -> dict[str, str] | None:
    """Ask the running application (not the ROM loader) what it is; ``None`` if it cannot.

    Queries (Identity, Provides, Inventory) must not restart the application, so the driver
    asks this hook first, then what it recorded on the host. The application is reached however
    the vendor's firmware allows (a console command on the same UART, the network); the serial
    port is named so that an implementation can tell the chips apart. Keys the driver uses, all
    optional: ``version`` (``esp_app_get_description()->version``), ``mac`` (the base MAC, 12
    hexadecimal digits), ``partition`` (the running partition's label), ``ota_state``,
    ``project``, ``idf_version``. No built-in implementation.
    """
