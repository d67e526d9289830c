"""mender-orchestrator driver for ECUs flashed with UDS (ISO 14229-1) over ISO-TP (ISO 15765-2).

The entry point ``canbus`` (group ``mender_orchestrator.drivers``) names
``mender_orchestrator_canbus.driver:CanbusDriver``; ``mender_orchestrator_canbus.simulator``
is an ECU to try it on.
"""
