"""Runs the ``artifact`` command group on its own: ``python artifact_cli.py inspect FILE``."""

from orchestrator_core.artifact.commands import artifact

if __name__ == "__main__":
    artifact(prog_name="mender-orchestrator artifact")
