"""Mender Orchestrator driver: ESP32 chips updated through their ROM serial loader."""

from importlib.metadata import version

__version__ = version("mender-orchestrator-esp32")
