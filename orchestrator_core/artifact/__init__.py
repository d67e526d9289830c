"""Mender Artifact v3: streaming reader, checksums, signatures, compatibility, sources, cache.

The engine's view: ``open_artifact`` + ``read_header`` to plan, ``check_compatible`` and
``is_installed`` to decide, ``open_payload`` during ``Download``, ``ArtifactsCache`` around
it. See SPEC sections 6, 7.3 and 8.
"""

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
from orchestrator_core.artifact.sources import ConfiguredSources, open_artifact, source_manager

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
