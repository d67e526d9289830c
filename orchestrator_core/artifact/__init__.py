"""Mender Artifact v3: streaming reader, checksums, signatures, compatibility, sources, cache.

The engine's view: ``open_artifact`` + ``read_header`` to plan, ``check_compatible`` and
``is_installed`` to decide, ``open_payload`` during ``Download``, ``ArtifactsCache`` around
it. See SPEC sections 6, 7.3 and 8.

Each name is imported from its module when it is first used (PEP 562): importing one module
of this package, the header parser for ``artifact inspect`` say, does not load the sources,
the cache and HTTP with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names of __all__ and _MODULES, for type checkers
    from orchestrator_core.artifact.cache import ArtifactsCache, CacheStream
    from orchestrator_core.artifact.compat import (
        check_compatible,
        clears,
        is_installed,
        provides_after_install,
    )
    from orchestrator_core.artifact.header import ArtifactHeader
    from orchestrator_core.artifact.payload import ArtifactPayload, open_payload
    from orchestrator_core.artifact.reader import ArtifactReader, PayloadFileReader, read_header
    from orchestrator_core.artifact.signature import SignatureState, SignatureStatus
    from orchestrator_core.artifact.sources import (
        ConfiguredSources,
        open_artifact,
        source_manager,
    )

_MODULES = {
    "ArtifactHeader": "header",
    "ArtifactPayload": "payload",
    "ArtifactReader": "reader",
    "ArtifactsCache": "cache",
    "CacheStream": "cache",
    "ConfiguredSources": "sources",
    "PayloadFileReader": "reader",
    "SignatureState": "signature",
    "SignatureStatus": "signature",
    "check_compatible": "compat",
    "clears": "compat",
    "is_installed": "compat",
    "open_artifact": "sources",
    "open_payload": "payload",
    "provides_after_install": "compat",
    "read_header": "reader",
    "source_manager": "sources",
}

__all__ = [
    "ArtifactHeader",
    "ArtifactPayload",
    "ArtifactReader",
    "ArtifactsCache",
    "CacheStream",
    "ConfiguredSources",
    "PayloadFileReader",
    "SignatureState",
    "SignatureStatus",
    "check_compatible",
    "clears",
    "is_installed",
    "open_artifact",
    "open_payload",
    "provides_after_install",
    "read_header",
    "source_manager",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up here once: hundreds of Downloads import it
    return value
