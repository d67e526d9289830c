"""What the configuration names on disk, checked before a deployment is journaled.

A problem found only after the journal holds the deployment would leave the System in a
deployment that every ``resume`` and ``rollback`` fails in the same way, so planning (and
``validate``) refuse it first.
"""

from __future__ import annotations

from orchestrator_core.config import Config
from orchestrator_core.errors import OrchestratorError


def environment_problems(config: Config) -> list[str]:
    """The Artifacts cache directory, the Manifest store and the TLS material the URL
    sources would use."""
    problems = []
    cache = config.artifacts_cache
    if cache.enabled and not cache.path.is_dir():
        problems.append(
            f"ArtifactsCache.Path {cache.path} does not exist or is not a directory; "
            f"create it, or set ArtifactsCache.Enabled to false"
        )
    store = config.manifest_store
    # the store is made when the first deployment succeeds, after every Component committed:
    # too late to find that it cannot be
    blocking = next((p for p in (store, *store.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        problems.append(
            f"ManifestStore {store}: {blocking} is not a directory; expected a directory "
            f"(or a path that can be created) for the installed Manifests"
        )
    if any(source.kind == "url" for source in config.artifact_sources):
        from orchestrator_core.artifact.http import tls_context

        try:
            tls_context(config)
        except OrchestratorError as exc:
            problems.append(exc.message)
    return problems


def problems(config: Config) -> list[str]:
    """Every problem of the configuration that planning can find without any Interface."""
    from orchestrator_core.artifact.signature import load_keys

    found = environment_problems(config)
    try:
        load_keys(config.artifact_verify_keys)
    except OrchestratorError as exc:
        found.append(exc.message)
    return found
