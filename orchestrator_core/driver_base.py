"""``DriverBase``: every hook of the Interface protocol with its signature, contract and the
default the engine applies when a driver leaves it out. Exported by ``driver_api``.

Subclassing it is optional (the engine only looks for ``@hookimpl`` methods), but it gives a
driver its types: mypy checks each override's signature against the one here, and an editor
shows the contract. The methods here are deliberately not hooks: a driver marks its own
overrides with ``@hookimpl``, and a hook it does not override gets the protocol's default
(never this class's body, which only documents it). ``identity`` and ``provides`` have no
default, so a subclass must implement them.

Every hook takes ``ctx`` (``InterfaceContext``): the Component, its ID (None during
``identity``), the File API directory ``ctx.work_dir``, the Artifact ``ctx.artifact``, the
payload ``ctx.payload`` (``download`` only), a logger ``ctx.log``, ``ctx.deadline`` (a
``time.monotonic()`` value: give up with ``InterfaceTimeout`` past it), ``ctx.progress`` for
long work and ``ctx.hook`` for the driver's own extension hooks.

Queries return their answer; states return None and raise ``InterfaceError`` on failure
(``RetryableInterfaceError`` for a transient fault the engine may retry). A driver may be
constructed anew for every call, in a new process: what a later state needs is kept under
``ctx.work_dir``, never in ``self``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from orchestrator_core.context import Component, InterfaceContext, RebootNeed


class DriverBase(ABC):
    """Base of an in-process driver; the factory is usually the subclass itself."""

    #: True: the core keeps the Artifact each Component last installed and hands it to every
    #: state of a deployment as ``ctx.previous_artifact`` (a rollback reinstalls it)
    keeps_previous_artifact: bool = False

    def __init__(self, component: Component) -> None:
        """Called once per Topology entry with its Component; parse and check
        ``component.interface_args`` here (``InterfaceArgs.parse``), raising ``ConfigError``."""
        self.component = component

    # ------------------------------------------------------------------ queries

    @abstractmethod
    def identity(self, ctx: InterfaceContext) -> str | None:
        """The Component ID: stable across calls and unique in the System; no '/', '=',
        NUL, line breaks, nor '.' or '..'. Asked first, by every command."""

    @abstractmethod
    def provides(self, ctx: InterfaceContext) -> dict[str, str] | None:
        """The Component's Provides; must hold ``rootfs-image.<interface>.version`` and not
        ``device_type``."""

    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]] | None:
        """Inventory attributes as ``(key, value)`` pairs (a key may repeat). Default: none."""
        return None

    def needs_unpacked_artifact(self, ctx: InterfaceContext) -> bool | None:
        """True: ``download`` reads payload files one by one (``ctx.payload.files()``);
        False: the whole ``.mender`` (``ctx.payload.whole_artifact()``). Default: True."""
        return None

    def provide_payload_file_sizes(self, ctx: InterfaceContext) -> bool | None:
        """Executables only (``DownloadWithFileSizes``). Default: False."""
        return None

    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed | None:
        """Asked after ``artifact_install``: YES calls ``artifact_reboot`` and
        ``artifact_verify_reboot``; AUTOMATIC reboots the host once for the order group.
        Default: NO."""
        return None

    def supports_rollback(self, ctx: InterfaceContext) -> bool | None:
        """Whether ``artifact_rollback`` can restore the previous software. Default: False."""
        return None

    # ------------------------------------------------------------------ update states

    def download(self, ctx: InterfaceContext) -> None:
        """Receive the payload from ``ctx.payload`` while it streams and stage it; never
        install here. Left unread, the engine stores the files in ``ctx.files_dir``."""
        return None  # nothing to do by default, as for an executable

    def artifact_install(self, ctx: InterfaceContext) -> None:
        """Install the Artifact (or activate what ``download`` staged), keeping what a
        rollback needs under ``ctx.work_dir`` first."""
        return None  # nothing to do by default, as for an executable

    def artifact_reboot(self, ctx: InterfaceContext) -> None:
        """Reboot the Component (never the host); only when ``needs_artifact_reboot`` said
        YES."""
        return None  # nothing to do by default, as for an executable

    def artifact_verify_reboot(self, ctx: InterfaceContext) -> None:
        """Check that the Component came back up running the new software."""
        return None  # nothing to do by default, as for an executable

    def artifact_commit(self, ctx: InterfaceContext) -> None:
        """Make the update permanent, keeping what an explicit rollback needs until
        ``cleanup``."""
        return None  # nothing to do by default, as for an executable

    def cleanup(self, ctx: InterfaceContext) -> None:
        """Always the last state, whatever happened (it may run twice): remove temporary data,
        change nothing else."""
        return None  # nothing to do by default, as for an executable

    # ------------------------------------------------------------------ error states

    def artifact_rollback(self, ctx: InterfaceContext) -> None:
        """Restore the previous software: called when ``supports_rollback`` is true,
        ``artifact_install`` had started, and the deployment failed anywhere in the System."""
        return None  # nothing to do by default, as for an executable

    def artifact_rollback_reboot(self, ctx: InterfaceContext) -> None:
        """Reboot into the restored software; called again, a bounded number of times, when
        ``artifact_verify_rollback_reboot`` fails."""
        return None  # nothing to do by default, as for an executable

    def artifact_verify_rollback_reboot(self, ctx: InterfaceContext) -> None:
        """Check that the Component runs the previous software again."""
        return None  # nothing to do by default, as for an executable

    def artifact_failure(self, ctx: InterfaceContext) -> None:
        """Tidy up after a failed install (after the rollback states, if they ran)."""
        return None  # nothing to do by default, as for an executable
