"""A CLI-compatible, pluggable implementation of Mender Orchestrator."""

__version__ = "0.1.0"
