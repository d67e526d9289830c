"""The exceptions that end up in front of a user.

Every error a user can cause (bad YAML, a misbehaving Interface, a broken Artifact) is one of
these, carrying a complete one-paragraph message; the CLI prints the message and exits with
``exit_code``. Anything else reaching the CLI is a bug in this program.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error that is reported to the user as a message, not a traceback."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(OrchestratorError):
    """An input file (config, Topology, Manifest) is unreadable or invalid."""

    exit_code = 2


class ValidationErrors(ConfigError):
    """Several independent problems found in one pass, reported together."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DriverNotFound(ConfigError):
    """A Topology ``interface`` names neither an executable nor an installed driver."""


class InterfaceError(OrchestratorError):
    """An Interface (executable or in-process driver) failed a state or answered badly."""


class InterfaceTimeout(InterfaceError):
    """An Interface call ran past ``InterfaceTimeoutSeconds`` and was killed."""


class ArtifactError(OrchestratorError):
    """An Artifact is malformed, fails verification, or cannot be fetched."""


class IncompatibleArtifact(ArtifactError):
    """An Artifact is valid but may not be installed on a Component."""


class NothingToResume(OrchestratorError):
    """``resume`` or ``rollback`` was called with no deployment in progress."""

    exit_code = 6


class Busy(OrchestratorError):
    """Another mender-orchestrator holds the lock, or ``install`` found a deployment still in
    progress: nothing was touched, the command may be run again later."""

    exit_code = 5


class JournalMismatch(OrchestratorError):
    """The journal or the plan of a deployment does not match what this program would replay
    (another format, or other steps at the same positions): replaying it could run the wrong
    states, so it is refused; ``rollback`` still recovers the System."""

    exit_code = 3


class RetryableInterfaceError(InterfaceError):
    """A transient fault (bus busy, device not answering yet): the call may succeed if made
    again. The driver layer retries it within the call's deadline (``drivers.RETRY_POLICY``);
    a plain ``InterfaceError`` is fatal at once."""
