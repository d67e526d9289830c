"""A CLI-compatible, pluggable implementation of Mender Orchestrator."""

DISTRIBUTION = "mender-orchestrator-py"

# The distribution's version, read from here by pyproject.toml (``dynamic``): a constant, because
# reading the installed metadata costs more than all of ``--version`` should.
__version__ = "0.1.0"
