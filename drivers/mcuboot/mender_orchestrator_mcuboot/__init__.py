"""Mender Orchestrator driver for Zephyr/MCUboot devices over SMP (UDP or serial), with a
simulator of such a device."""

__version__ = "0.1.0"
