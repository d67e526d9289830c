"""The public API for driver packages: a driver imports from here and from nowhere else in
``orchestrator_core``.

Everything named in ``__all__`` is covered by ``DRIVER_API_VERSION``: it changes only with a
new minor version (additions) or a new major version (anything a driver may rely on). The
rest of ``orchestrator_core`` is internal and may change in any release.

A driver package (see docs/drivers.md):

* registers a factory in the entry-point group ``mender_orchestrator.drivers``:
  ``factory(component: Component) -> driver``, usually the driver class itself;
* declares the driver API versions it works with, ``driver_api = ">=1.0,<2"`` on the factory,
  and bounds its dependency on the core accordingly;
* parses ``component.interface_args`` with an ``InterfaceArgs`` parser exposed as the
  factory's ``interface_args_parser``;
* implements the hooks of ``DriverBase`` it needs (subclassing it gives mypy the hooks'
  signatures), each marked ``@hookimpl``; states raise
  ``InterfaceError`` (``RetryableInterfaceError`` for a transient fault) and report long work
  with ``ctx.progress(done, total, what)``.
"""

from __future__ import annotations

from orchestrator_core.api_version import DRIVER_API_VERSION, IncompatibleDriver
from orchestrator_core.args import (
    InterfaceArgs,
    absolute_path,
    expecting,
    integer,
    seconds,
    size,
)
from orchestrator_core.atomic import write_bytes as write_atomically
from orchestrator_core.context import (
    ArtifactInfo,
    Component,
    InterfaceContext,
    PayloadFeed,
    PayloadFile,
    RebootNeed,
)
from orchestrator_core.driver_base import DriverBase
from orchestrator_core.errors import (
    ArtifactError,
    ConfigError,
    InterfaceError,
    InterfaceTimeout,
    RetryableInterfaceError,
)
from orchestrator_core.hookspecs import hookimpl, hookspec
from orchestrator_core.host_record import HostRecord, HostRecordFile
from orchestrator_core.host_record import default_directory as host_record_directory
from orchestrator_core.installed import PreviousArtifact

__all__ = [
    "DRIVER_API_VERSION",
    "ArtifactError",
    "ArtifactInfo",
    "Component",
    "ConfigError",
    "DriverBase",
    "HostRecord",
    "HostRecordFile",
    "IncompatibleDriver",
    "InterfaceArgs",
    "InterfaceContext",
    "InterfaceError",
    "InterfaceTimeout",
    "PayloadFeed",
    "PayloadFile",
    "PreviousArtifact",
    "RebootNeed",
    "RetryableInterfaceError",
    "absolute_path",
    "expecting",
    "hookimpl",
    "hookspec",
    "host_record_directory",
    "integer",
    "seconds",
    "size",
    "write_atomically",
]
