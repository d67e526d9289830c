"""A CLI-compatible, pluggable implementation of Mender Orchestrator."""

DISTRIBUTION = "mender-orchestrator-py"

# The same as pyproject.toml's version (tests/test_startup.py holds them together): a constant,
# because reading the installed metadata costs more than all of ``--version`` should.
__version__ = "0.1.0"
