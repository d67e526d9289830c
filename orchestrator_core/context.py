"""What a driver is handed when the engine calls one of its hooks.

These types are the whole contract between the core and a driver; a driver package imports
them from ``orchestrator_core.driver_api``, the public API, not from here.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pluggy

    from orchestrator_core.installed import PreviousArtifact


@dataclass(frozen=True)
class Component:
    """One entry of the Topology's ``components`` list."""

    component_type: str
    interface: str
    interface_args: tuple[str, ...] = ()
    position: int = 0  # index in the Topology list, so messages can point at the entry

    @property
    def label(self) -> str:
        """How messages name the Component before its ID is known."""
        return f"{self.component_type}[{self.position}] (interface {self.interface})"


class RebootNeed(enum.Enum):
    """Answer of the ``NeedsArtifactReboot`` query."""

    NO = "No"
    YES = "Yes"
    AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class ArtifactInfo:
    """The parts of an Artifact's header a driver may need (already verified)."""

    name: str
    group: str | None
    payload_type: str | None
    provides: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    # header-info + type-info + meta-data, as parsed JSON, for drivers that want more
    header_info: Mapping[str, Any] = field(default_factory=dict)
    type_info: Mapping[str, Any] = field(default_factory=dict)
    meta_data: Mapping[str, Any] = field(default_factory=dict)
    # payload (name, size) in Artifact order where the caller knows them; a deployment leaves
    # it empty, as sizes are known only once the data section streams: read ctx.files_dir
    files: tuple[tuple[str, int], ...] = ()

    def version_for(self, interface: str) -> str:
        """The version this Artifact installs for ``interface``: its provides
        ``rootfs-image.<interface>.version``, else its name."""
        value = self.provides.get(f"rootfs-image.{interface}.version")
        if isinstance(value, tuple):
            value = ",".join(value)
        return value or self.name


class PayloadFile(Protocol):
    """One payload file as it streams past; bytes are checked against the manifest.

    ``read`` raises ``ArtifactError`` when the file's checksum does not match once it has
    been read to its end.
    """

    name: str
    size: int

    def read(self, n: int = -1, /) -> bytes: ...


class PayloadFeed(Protocol):
    """The payload of one Artifact during ``Download``, readable once, front to back."""

    @property
    def consumed(self) -> bool:
        """True once a reader has started taking the payload."""
        ...

    def files(self) -> Iterator[PayloadFile]:
        """The payload files, one at a time; each must be read to its end before the next."""
        ...

    def whole_artifact(self) -> Iterator[bytes]:
        """The complete ``.mender`` file as chunks (``NeedsUnpackedArtifact: No``).

        Still verified: the checksums are checked as the chunks go past.
        """
        ...


@dataclass
class InterfaceContext:
    """The argument of every hook: who is being called, where, and with what."""

    component: Component
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    timeout_seconds: float
    component_id: str | None = None
    work_dir: Path | None = None  # the File API directory; None outside a deployment
    artifact: ArtifactInfo | None = None  # the Artifact being installed, during a deployment
    payload: PayloadFeed | None = None  # set during Download only
    # the Component's pluggy hook relay, for driver-specific hookspecs (ctx.hook.NAME(...))
    hook: pluggy.HookRelay | None = None
    started: float = field(default_factory=time.monotonic)
    # set at the deadline (the engine gives an in-process call up soon after) and when the
    # orchestrator is told to stop (SIGTERM, SIGHUP, SIGINT): a driver's transport stops
    # waiting and the hook returns or raises; see docs/drivers.md
    cancelled: threading.Event = field(default_factory=threading.Event)
    # where ctx.progress() reports go: (done, total, what); None when nobody listens
    progress_sink: Callable[[int, int | None, str], None] | None = None
    # during a deployment, for a driver with ``keeps_previous_artifact = True``: the Artifact
    # the Component ran before it began (``installed.PreviousArtifact``), None when none was
    # kept yet; a driver rolls back by installing it again
    previous_artifact: PreviousArtifact | None = None

    def progress(self, done: int, total: int | None = None, what: str = "bytes") -> None:
        """Report how far a long state has got: ``done`` of ``total`` (None: unknown) units
        of ``what``. Cheap enough to call per chunk; the live status line and the journal
        (for ``status``) take it, the journal at most once a second per Component."""
        if self.progress_sink is not None:
            self.progress_sink(done, total, what)

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` value after which the call must give up."""
        return self.started + self.timeout_seconds

    @property
    def files_dir(self) -> Path:
        """``files/`` of the File API directory: payload the Interface did not stream itself."""
        if self.work_dir is None:
            raise RuntimeError("files_dir is only defined during a deployment")
        return self.work_dir / "files"

    @property
    def name(self) -> str:
        """How messages name the Component once the ID is known."""
        if self.component_id is None:
            return self.component.label
        component = self.component
        return f"{component.component_type}/{self.component_id} (interface {component.interface})"
