"""Mender Orchestrator driver for the `{{ cookiecutter.driver_name }}` interface."""

__version__ = "0.1.0"
