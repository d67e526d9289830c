"""Mender Orchestrator driver for STM32 MCUs updated through their I2C system bootloader (AN4221)."""

__version__ = "0.1.0"
