"""A simulated ECU: a UDS server on python-can, for running the canbus driver without hardware.

Run it with ``python -m mender_orchestrator_canbus.simulator --help``; tests build it in
process from ``FlashStore``, ``Ecu`` and ``EcuServer``.
"""

from mender_orchestrator_canbus.simulator.ecu import Ecu, EcuConfig, Faults
from mender_orchestrator_canbus.simulator.flash import FlashStore
from mender_orchestrator_canbus.simulator.server import EcuServer

__all__ = ["Ecu", "EcuConfig", "EcuServer", "Faults", "FlashStore"]
