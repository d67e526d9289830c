"""The Interface protocol v1 as pluggy hook specifications.

One hook per query and per state of SPEC section 4. Every Component gets its own
``pluggy.PluginManager`` holding its driver (an in-process driver object, or the ``exec``
driver wrapping an executable), the driver's own extra hookspecs, and the global plugins
(observers, vendor extensions), so ``pm.hook.artifact_install(ctx=...)`` reaches exactly that
Component's driver plus any ``hookwrapper`` observers.

Conventions for implementers:

* Queries are ``firstresult``: return the answer, or ``None`` for "printed nothing", which
  makes the engine use the protocol default given in each docstring.
* States return nothing and raise ``orchestrator_core.errors.InterfaceError`` (with a message
  naming what went wrong) on failure. A state a driver does not implement succeeds, as an
  executable Interface must exit 0 for a state it does not know.
* ``ctx`` is an ``orchestrator_core.context.InterfaceContext``; calls must finish before
  ``ctx.deadline`` (``time.monotonic()`` based) and give up with an ``InterfaceError`` if not.

Artifact sources are hooks too (``artifact_source_open``), so a vendor can add a place to
fetch Artifacts from; they live on the global plugin manager, not a Component's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

import pluggy

if TYPE_CHECKING:
    from orchestrator_core.config import Config
    from orchestrator_core.context import InterfaceContext, RebootNeed

PROJECT = "mender_orchestrator"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------- queries


@hookspec(firstresult=True)
def identity(ctx: InterfaceContext) -> str | None:
    """Return the Component ID (the ``id=`` value of the ``Identity`` query).

    Called before anything else, for every Component, by every command that touches the
    System. ``ctx.component_id`` is ``None``. The ID must be stable and unique in the System.
    """


@hookspec(firstresult=True)
def provides(ctx: InterfaceContext) -> dict[str, str] | None:
    """Return the Component's Provides (``key=value`` lines of the ``Provides`` query).

    Called after ``identity``. Must include ``rootfs-image.<interface>.version`` (or
    ``rootfs-image.version`` for the system device) and must not include ``device_type``.
    """


@hookspec(firstresult=True)
def inventory(ctx: InterfaceContext) -> list[tuple[str, str]] | None:
    """Return inventory attributes as ``(key, value)`` pairs; a key may repeat.

    Called by ``show-inventory`` only.
    """


@hookspec(firstresult=True)
def needs_unpacked_artifact(ctx: InterfaceContext) -> bool | None:
    """``True``: stream payload files one by one; ``False``: stream the whole ``.mender``.

    Asked before ``download``. Default when ``None``: ``True``.
    """


@hookspec(firstresult=True)
def provide_payload_file_sizes(ctx: InterfaceContext) -> bool | None:
    """``True``: the executable wants ``DownloadWithFileSizes`` (stream sizes given).

    Asked before ``download``. Default when ``None``: ``False``.
    """


@hookspec(firstresult=True)
def needs_artifact_reboot(ctx: InterfaceContext) -> RebootNeed | None:
    """Whether the Component needs ``artifact_reboot`` after ``artifact_install``.

    Asked after ``artifact_install`` succeeded. ``RebootNeed.AUTOMATIC`` makes the
    orchestrator reboot the system device once for the order group instead.
    Default when ``None``: ``RebootNeed.NO``.
    """


@hookspec(firstresult=True)
def supports_rollback(ctx: InterfaceContext) -> bool | None:
    """Whether ``artifact_rollback`` can restore the previous software.

    Asked after ``download`` and before any rollback decision. Default when ``None``: ``False``.
    """


# --------------------------------------------------------------------------- update states


@hookspec
def download(ctx: InterfaceContext) -> None:
    """Receive the payload while it streams (``ctx.payload``); stage, never install.

    If the driver does not read ``ctx.payload``, the engine stores the payload files in
    ``ctx.files_dir`` after this hook returns. Checksums are verified as bytes are read; a
    mismatch raises from the payload reader and fails the state. On failure only
    ``cleanup`` follows.
    """


@hookspec
def artifact_install(ctx: InterfaceContext) -> None:
    """Install the Artifact, or activate what ``download`` staged.

    Payload files not streamed during ``download`` are in ``ctx.files_dir``.
    """


@hookspec
def artifact_reboot(ctx: InterfaceContext) -> None:
    """Reboot the peripheral (only when ``needs_artifact_reboot`` said ``YES``); never the host."""


@hookspec
def artifact_verify_reboot(ctx: InterfaceContext) -> None:
    """Check that the Component came back up running the new software."""


@hookspec
def artifact_commit(ctx: InterfaceContext) -> None:
    """Make the update permanent, keeping what an explicit rollback needs."""


@hookspec
def cleanup(ctx: InterfaceContext) -> None:
    """Remove temporary data. Always the last state, whatever happened; changes nothing else."""


# --------------------------------------------------------------------------- error states


@hookspec
def artifact_rollback(ctx: InterfaceContext) -> None:
    """Restore the previous software.

    Called when ``supports_rollback`` is true, ``artifact_install`` had started, and the
    deployment failed anywhere in the System before it finished committing.
    """


@hookspec
def artifact_rollback_reboot(ctx: InterfaceContext) -> None:
    """Reboot the peripheral after ``artifact_rollback`` (when it needed a reboot).

    Also called again, a bounded number of times, when ``artifact_verify_rollback_reboot``
    fails.
    """


@hookspec
def artifact_verify_rollback_reboot(ctx: InterfaceContext) -> None:
    """Check that the Component came back up running the previous software."""


@hookspec
def artifact_failure(ctx: InterfaceContext) -> None:
    """Tidy up after a failed install (after the rollback states, if they ran)."""


# --------------------------------------------------------------------------- framework hooks


@hookspec(firstresult=True)
def artifact_source_open(artifact_name: str, config: Config) -> tuple[BinaryIO, str] | None:
    """Open the Artifact named ``artifact_name`` for reading, or return ``None``.

    Called when a Manifest entry's ``artifact_path`` does not exist. The bundled source (the
    config's ``ArtifactSources``: directories, URL templates) runs first; the first source to
    return wins. Return the open binary stream (the caller closes it; it needs only
    ``read``/``readinto``, front to back) and a description of where it came from, for
    messages. Raise ``orchestrator_core.errors.ArtifactError`` for a source that failed.
    """
