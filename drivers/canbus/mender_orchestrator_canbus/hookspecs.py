"""Extension points the ``canbus`` driver adds to its Component's plugin manager.

A vendor package implements them in a plugin registered under the entry-point group
``mender_orchestrator.plugins``::

    from orchestrator_core.driver_api import hookimpl

    class BrakeEcuKeys:
        @hookimpl
        def canbus_security_key(self, ctx, level, seed):
            if ctx.component.component_type != "ecu_brake_controller":
                return None  # not ours: let another plugin (or the default) answer
            return my_secret_algorithm(seed, level)

    # pyproject.toml:
    # [project.entry-points."mender_orchestrator.plugins"]
    # brake-keys = "vendor_keys:BrakeEcuKeys"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator_core.driver_api import hookspec

if TYPE_CHECKING:
    from orchestrator_core.driver_api import InterfaceContext


@hookspec(firstresult=True)
def canbus_security_key(ctx: InterfaceContext, level: int, seed: bytes) -> bytes | None:
    """Compute the SecurityAccess key for ``seed``, or return ``None`` to let others answer.

    Called during ``ArtifactInstall`` and ``ArtifactRollback`` after the ECU answered
    SecurityAccess requestSeed (0x27, sub-function ``level``, odd) with a non-zero ``seed``,
    once for each level of the flash profile's ``security_levels`` in turn; the result is
    sent with sendKey (sub-function ``level + 1``). ``ctx.component`` tells which
    ECU is asking. The driver's own implementation (the simulator's documented algorithm, see
    ``mender_orchestrator_canbus.security``) is marked ``trylast``, so any vendor plugin that
    returns bytes wins.
    """
