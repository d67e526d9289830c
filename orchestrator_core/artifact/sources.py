"""Where Artifacts come from (SPEC 8): ``artifact_path``, else by name through the sources.

Sources are implementations of the ``artifact_source_open`` hook. The bundled one walks the
config's ``ArtifactSources`` in order (local directories, HTTP(S) URL templates) and runs
first; a vendor adds a source by shipping a plugin in the ``mender_orchestrator.plugins``
entry-point group that implements the same hook, and is asked when the configured sources
do not have the Artifact.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import quote

import pluggy

from orchestrator_core import hookspecs
from orchestrator_core.artifact.layers import CHUNK
from orchestrator_core.artifact.reader import read_header
from orchestrator_core.config import ArtifactSourceConfig, Config
from orchestrator_core.errors import ArtifactError

log = logging.getLogger("mender_orchestrator.artifact")

Opened = tuple[BinaryIO, str]


def open_file(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ArtifactError(f"Artifact {path}: cannot open it ({exc.strerror or exc})") from exc


class _Pass:
    """What a directory source learnt during one pass of lookups (a plan's): each directory's
    ``.mender`` files, and the artifact_name inside each file (or why it has none)."""

    def __init__(self) -> None:
        self.listings: dict[Path, list[Path]] = {}
        self.names: dict[Path, str | ArtifactError] = {}


# Set while a plan looks up the Artifacts of all its component types: in a directory of files
# not named after their Artifacts, each lookup would otherwise list the directory and read
# the headers of the files before its own again, N*N/2 header reads for N component types.
# Kept for one pass only: later the directory may have changed.
_pass: _Pass | None = None


@contextmanager
def names_remembered() -> Iterator[None]:
    """List each directory, and read each Artifact file's name, at most once while the
    block runs."""
    global _pass
    _pass = _Pass()
    try:
        yield
    finally:
        _pass = None


def _listing(directory: Path) -> list[Path]:
    """The ``.mender`` files of ``directory``, sorted."""
    known = _pass.listings.get(directory) if _pass is not None else None
    if known is None:
        known = sorted(p for p in directory.glob("*.mender") if p.is_file())
        if _pass is not None:
            _pass.listings[directory] = known
    return known


def _name_of(path: Path) -> str:
    """The artifact_name inside ``path``."""
    known = _pass.names.get(path) if _pass is not None else None
    if known is None:
        try:
            with open(path, "rb") as stream:
                known = read_header(stream, source_name=str(path)).name
        except OSError as exc:
            known = ArtifactError(f"Artifact {path}: cannot read it ({exc.strerror or exc})")
        except ArtifactError as exc:
            known = exc
        if _pass is not None:
            _pass.names[path] = known
    if isinstance(known, ArtifactError):
        raise ArtifactError(known.message)
    return known


def open_from_directory(directory: Path, name: str) -> Opened | None:
    """The ``.mender`` file in ``directory`` holding Artifact ``name``: the file named after
    it if that is the one, else any other, found by the name inside."""
    if not directory.is_dir():
        raise ArtifactError(f"artifact source directory {directory} does not exist")
    plain = "/" not in name and name not in (".", "..") and "\0" not in name
    named = [p for p in (directory / f"{name}.mender", directory / name) if plain and p.is_file()]
    others = [p for p in _listing(directory) if p not in named]
    unreadable: list[str] = []
    for path in named + others:
        try:
            if _name_of(path) == name:
                return open_file(path), str(path)
        except ArtifactError as exc:
            log.debug("skipping %s while looking for %s: %s", path, name, exc.message)
            if path in named:
                unreadable.append(exc.message)
    if unreadable:
        # a file named after the Artifact that is broken is worth more than "not found"
        raise ArtifactError(f"Artifact {name!r} not found in {directory}: {unreadable[0]}")
    return None


def url_for(template: str, name: str) -> str:
    return template.replace("{artifact_name}", quote(name, safe=""))


def open_from_url(template: str, name: str, config: Config) -> Opened | None:
    # requests is imported only where a URL source is used: most deployments read local files
    from orchestrator_core.artifact.http import HttpArtifactStream, NotFound, make_session, redact

    url = url_for(template, name)
    try:
        stream = HttpArtifactStream(make_session(config), url, limits=config.http_limits)
    except NotFound:
        return None
    return io.BufferedReader(stream, CHUNK), redact(url)


def _describe(source: ArtifactSourceConfig) -> str:
    if source.kind == "url":
        from orchestrator_core.artifact.http import redact

        return f"URL {redact(source.location)}"
    return f"directory {source.location}"


class ConfiguredSources:
    """The bundled source: the config's ``ArtifactSources``, in order."""

    @hookspecs.hookimpl(tryfirst=True)
    def artifact_source_open(self, artifact_name: str, config: Config) -> Opened | None:
        problems: list[str] = []
        for source in config.artifact_sources:
            try:
                if source.kind == "url":
                    found = open_from_url(source.location, artifact_name, config)
                else:
                    found = open_from_directory(Path(source.location), artifact_name)
            except ArtifactError as exc:
                # a broken source must not hide the Artifact in the next one
                log.warning("artifact source %s: %s", _describe(source), exc.message)
                problems.append(exc.message)
                continue
            if found is not None:
                return found
        if problems:
            raise ArtifactError(
                f"Artifact {artifact_name!r} not found, and some sources failed: "
                + "; ".join(problems)
            )
        return None


def source_manager(
    extra_plugins: Iterable[object] | None = None, *, without_configured: bool = False
) -> pluggy.PluginManager:
    """A plugin manager with the bundled source (unless ``without_configured``), plus vendor
    plugins.

    ``extra_plugins`` defaults to the installed ``mender_orchestrator.plugins`` entry points.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if not without_configured:
        manager.register(ConfiguredSources(), name="artifact-sources")
    if extra_plugins is None:
        from orchestrator_core.drivers import global_plugins

        extra_plugins = global_plugins()
    for plugin in extra_plugins:
        if not manager.is_registered(plugin):
            manager.register(plugin)
    return manager


def open_artifact(
    artifact_name: str | None,
    artifact_path: str | None,
    config: Config,
    *,
    plugins: pluggy.PluginManager | None = None,
) -> Opened:
    """Open an Artifact: ``artifact_path`` if that file exists, else by name from the sources.

    Returns the stream (the caller closes it) and a description of where it came from.
    """
    if artifact_path:
        path = Path(artifact_path)
        if path.is_file():
            return open_file(path), str(path)
    if not artifact_name:
        raise ArtifactError(
            f"Artifact file {artifact_path} does not exist, and there is no artifact_name to "
            f"look for instead"
        )
    if plugins is None:
        # The configured sources come first anyway; only when they do not have the Artifact
        # are the vendor plugins looked up (scanning entry points is a good part of start-up).
        found = ConfiguredSources().artifact_source_open(artifact_name, config)
        if found is not None:
            return found
        plugins = source_manager(without_configured=True)
    found = cast(
        "Opened | None",
        plugins.hook.artifact_source_open(artifact_name=artifact_name, config=config),
    )
    if found is not None:
        return found
    tried = [f"artifact_path {artifact_path} (no such file)"] if artifact_path else []
    tried += [_describe(source) for source in config.artifact_sources]
    others = sum(
        1 for plugin in plugins.get_plugins() if not isinstance(plugin, ConfiguredSources)
    )
    if others:
        tried.append(f"{others} plugin source(s)")
    where = "; ".join(tried) if tried else "no artifact_path and no ArtifactSources configured"
    raise ArtifactError(f"Artifact {artifact_name!r} not found (tried: {where})")
