"""Mender Orchestrator driver: STM32 MCUs updated through their I2C system bootloader."""

from importlib.metadata import version

__version__ = version("mender-orchestrator-i2c")
