"""The state names ``--stop-before`` accepts, in a module of their own: the command line
needs them to build its options, and importing the deployment sequence for them would cost
every short command (``show-inventory`` on each poll) what only deployments use."""

from __future__ import annotations

STATES = (
    "Download",
    "ArtifactInstall",
    "ArtifactReboot",
    "ArtifactVerifyReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactVerifyRollbackReboot",
    "ArtifactFailure",
    "Cleanup",
)
