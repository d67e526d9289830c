"""The payload of an Artifact during ``Download``: the ``PayloadFeed`` of ``context.py``.

A feed reads a fresh stream of the Artifact, checks that its header is the one the plan was
made with (same manifest digest), and then hands the payload out once, in one of three
ways: file by file (``files``), as the verbatim ``.mender`` bytes (``whole_artifact``), or
stored into the File API ``files/`` directory (``save_to``). Every way verifies as it reads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pluggy

from orchestrator_core.artifact.cache import ArtifactsCache, CacheStream
from orchestrator_core.artifact.layers import CHUNK
from orchestrator_core.artifact.reader import ArtifactReader, PayloadFileReader
from orchestrator_core.artifact.sources import open_artifact
from orchestrator_core.atomic import make_private_dir, replacing
from orchestrator_core.config import Config
from orchestrator_core.errors import ArtifactError

log = logging.getLogger("mender_orchestrator.artifact")


class ArtifactPayload:
    """One read of one Artifact's payload (readable once, front to back)."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        source_name: str,
        manifest_digest: str,
        verify_keys: Sequence[Path],
    ) -> None:
        self._reader = ArtifactReader(stream, source_name=source_name, verify_keys=verify_keys)
        self._expected = manifest_digest
        self._started = False
        self._files: Iterator[PayloadFileReader] | None = None
        # hooks for whoever supplied the stream (the cache): before save_to reads, and once
        # the whole Artifact has been read and verified
        self.before_save: Callable[[], None] = lambda: None
        self.on_verified: Callable[[], None] = lambda: None

    @property
    def consumed(self) -> bool:
        return self._started

    @property
    def bytes_read(self) -> int:
        """Bytes taken from the source so far (for progress displays)."""
        return self._reader.source.position

    def _begin(self) -> None:
        if self._started:
            self._reader.fail("its payload was already read: a feed is readable once")
        self._started = True
        header = self._reader.read_header()
        if header.manifest_digest != self._expected:
            self._reader.fail(
                f"is not the Artifact whose header was checked before the deployment (manifest "
                f"sha256 {header.manifest_digest}, expected {self._expected}): it changed since"
            )

    def files(self) -> Iterator[PayloadFileReader]:
        if self._files is None:
            self._files = self._each_file()
        return self._files

    def _each_file(self) -> Iterator[PayloadFileReader]:
        self._begin()
        yield from self._reader.payload_files()
        self.on_verified()

    def whole_artifact(self) -> Iterator[bytes]:
        """The ``.mender`` bytes, verified in tandem: each chunk is handed out only after the
        read that took it from the source returned, so the bytes that complete a bad file
        (or a bad Artifact) are never handed out."""
        pending: list[bytes] = []
        self._reader.source.tap = lambda view: pending.append(bytes(view))
        self._begin()
        scratch = bytearray(CHUNK)
        for payload in self._reader.payload_files():
            while payload.readinto(scratch):
                if pending:
                    yield b"".join(pending)
                    pending.clear()
        self.on_verified()
        if pending:
            yield b"".join(pending)
            pending.clear()

    def save_to(self, directory: Path) -> list[Path]:
        """Store the payload files not yet read into ``directory`` (the File API ``files/``),
        each atomically (temporary name, fsync, rename) once it has been verified."""
        self.before_save()
        make_private_dir(directory)
        scratch = bytearray()
        stored = []
        for payload in self.files():
            # sized to the largest file so far: zeroing a whole chunk costs more than a small
            # file's copy, and a System may store the same small file for hundreds of Components
            if len(scratch) < min(CHUNK, payload.size):
                scratch = bytearray(min(CHUNK, payload.size))
            view = memoryview(scratch)
            try:
                with replacing(directory / payload.name) as out:
                    while count := payload.readinto(view):
                        out.write(view[:count])
            except OSError as exc:
                raise ArtifactError(
                    f"cannot store payload file {payload.name} in {directory}: "
                    f"{exc.strerror or exc}"
                ) from exc
            stored.append(directory / payload.name)
        return stored


@contextlib.contextmanager
def open_payload(
    artifact_name: str,
    artifact_path: str | None,
    manifest_digest: str,
    config: Config,
    cache: ArtifactsCache | None = None,
    *,
    plugins: pluggy.PluginManager | None = None,
) -> Iterator[ArtifactPayload]:
    """The payload feed for a ``Download``: from ``artifact_path`` if that file exists,
    else by name, through the cache when one is given."""

    def from_sources() -> tuple[BinaryIO, str]:
        return open_artifact(artifact_name, None, config, plugins=plugins)

    if artifact_path and Path(artifact_path).is_file():
        stream, source = open_artifact(artifact_name, artifact_path, config, plugins=plugins)
    elif cache is not None:
        stream, source = _open_cached(
            cache, artifact_name, manifest_digest, config.artifact_verify_keys, from_sources
        )
    else:
        stream, source = from_sources()
    with stream:
        feed = ArtifactPayload(
            stream,
            source_name=source,
            manifest_digest=manifest_digest,
            verify_keys=config.artifact_verify_keys,
        )
        if isinstance(stream, CacheStream):
            feed.before_save = stream.require_cached
            feed.on_verified = stream.confirm_verified
        yield feed


def _open_cached(
    cache: ArtifactsCache,
    name: str,
    manifest_digest: str,
    verify_keys: Sequence[Path],
    opener: Callable[[], tuple[BinaryIO, str]],
) -> tuple[BinaryIO, str]:
    stream, source = cache.open(name, opener)
    cached = stream.cached_path if isinstance(stream, CacheStream) else None
    if cached is None:
        return stream, source
    if name in cache.verified:
        return stream, source
    # An entry left by an earlier deployment may be another Artifact of the same name, or
    # have rotted on disk: kept, it would fail every deployment of this Artifact. A local read
    # costs far less than a failed deployment.
    problem = _verify_entry(cached, manifest_digest, verify_keys)
    if problem is None:
        cache.verified.add(name)
        return stream, source
    log.warning(
        "ArtifactsCache: the cached copy of %s fails verification (%s); evicted, fetching it "
        "again",
        name,
        problem,
    )
    stream.close()
    cache.invalidate(name)
    return cache.open(name, opener)


def _verify_entry(path: Path, manifest_digest: str, verify_keys: Sequence[Path]) -> str | None:
    """Why the cache entry ``path`` is not the Artifact, whole and intact; ``None`` if it is."""
    try:
        with open(path, "rb") as check:
            feed = ArtifactPayload(
                check,
                source_name=str(path),
                manifest_digest=manifest_digest,
                verify_keys=verify_keys,
            )
            scratch = bytearray(CHUNK)
            for payload in feed.files():
                while payload.readinto(scratch):
                    pass
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except ArtifactError as exc:
        return exc.message
    return None
