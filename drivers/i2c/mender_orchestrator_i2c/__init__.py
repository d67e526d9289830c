"""Mender Orchestrator driver: STM32 MCUs updated through their I2C system bootloader."""

__version__ = "0.1.0"
