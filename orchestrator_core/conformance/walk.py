"""The engine's state sequence (SPEC 7) for one Component and one Artifact, with a failure
of the rest of the System injected after a chosen state, so that each point from which the
engine may roll back can be tried.

The File API directory is made by ``filetree.prepare`` and ``Download`` is fed by
``open_payload`` exactly as ``engine.Deployment`` does; the directory is private to the walk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_core import filetree
from orchestrator_core.artifact import ArtifactHeader
from orchestrator_core.config import Config
from orchestrator_core.conformance.probe import CallFailed, Probe
from orchestrator_core.context import InterfaceContext, RebootNeed

# the states after which the engine may roll a Component back (another Component failed)
ROLLBACK_POINTS = ("ArtifactInstall", "ArtifactReboot", "ArtifactVerifyReboot", "ArtifactCommit")


@dataclass(frozen=True)
class TestArtifact:
    path: Path
    header: ArtifactHeader
    version: str  # what the Component must report once it is installed
    config: Config  # read with this config's verification keys


@dataclass
class Walk:
    """What one walk saw."""

    states: list[str] = field(default_factory=list)
    failure: str | None = None  # the first state that failed on its own
    download_mode: str | None = None
    committed_version: str | None = None  # Provides' version right after ArtifactCommit
    rollback_errors: list[str] = field(default_factory=list)
    # ArtifactFailure: its error, and the versions before and after it
    failure_state: tuple[str | None, str, str] | None = None
    cleanup_errors: list[str | None] = field(default_factory=list)
    version_after_cleanup: list[str] = field(default_factory=list)


class _Injected(Exception):
    """The rest of the System failed: take the rollback path."""


class Walker:
    def __init__(self, probe: Probe, version_key: str, root: Path) -> None:
        self.probe = probe
        self.version_key = version_key
        self.root = root  # private (0700): one File API directory per walk inside
        self.count = 0

    def version(self) -> str:
        provides = self.probe.call("Provides", self.probe.driver.provides)
        if self.version_key not in provides:
            raise CallFailed("Provides", f"Provides no longer reports {self.version_key}")
        return provides[self.version_key]

    def _state(self, walk: Walk, hook: str, name: str) -> None:
        walk.states.append(name)
        self.probe.call(name, lambda ctx: self.probe.driver.run_state(hook, ctx))

    def deploy(self, artifact: TestArtifact, fail_after: str | None = None,
               cleanups: int = 1) -> Walk:
        """Install ``artifact`` as the engine does; after ``fail_after`` act as if another
        Component failed. Ends with ``cleanups`` calls of Cleanup."""
        self.count += 1
        work_dir = self.root / f"walk-{self.count}"
        self._prepare(work_dir, artifact)
        self.probe.work_dir = work_dir
        self.probe.artifact = artifact.header.to_info()
        walk = Walk()
        try:
            self._install_path(walk, artifact, fail_after)
        finally:
            for _ in range(cleanups):
                self._cleanup(walk)
            self.probe.work_dir = None
            self.probe.artifact = None
            shutil.rmtree(work_dir, ignore_errors=True)
        return walk

    def _prepare(self, work_dir: Path, artifact: TestArtifact) -> None:
        header = artifact.header
        provides = self.probe.call("Provides", self.probe.driver.provides)
        filetree.prepare(
            work_dir,
            component_type=self.probe.driver.component.component_type,
            provides=provides,
            artifact_name=header.name,
            artifact_group=header.group,
            payload_type=header.payload_type,
            header_info=header.header_info_bytes,
            type_info=header.type_info_bytes,
            meta_data=header.meta_data_bytes,
        )

    def _install_path(self, walk: Walk, artifact: TestArtifact, fail_after: str | None) -> None:
        installing = False
        can_roll_back = False
        need: RebootNeed | None = None
        try:
            self._download(walk, artifact)
            can_roll_back = self.probe.call("SupportsRollback", self.probe.driver.supports_rollback)
            installing = True
            self._point(walk, "artifact_install", "ArtifactInstall", fail_after)
            need = self.probe.call("NeedsArtifactReboot", self.probe.driver.needs_artifact_reboot)
            if need is RebootNeed.YES:
                self._point(walk, "artifact_reboot", "ArtifactReboot", fail_after)
            # Automatic: the host would reboot here; a checker never reboots the host
            if need in (RebootNeed.YES, RebootNeed.AUTOMATIC):
                self._point(walk, "artifact_verify_reboot", "ArtifactVerifyReboot", fail_after)
            self._state(walk, "artifact_commit", "ArtifactCommit")
            walk.committed_version = self.version()
            if fail_after == "ArtifactCommit":
                raise _Injected
        except CallFailed as failed:
            walk.failure = failed.message
        except _Injected:
            pass
        else:
            return
        if installing:
            self._error_path(walk, can_roll_back, need)

    def _point(self, walk: Walk, hook: str, name: str, fail_after: str | None) -> None:
        self._state(walk, hook, name)
        if fail_after == name:
            raise _Injected

    def _download(self, walk: Walk, artifact: TestArtifact) -> None:
        from orchestrator_core.artifact import open_payload

        header = artifact.header
        walk.states.append("Download")
        with open_payload(header.name, str(artifact.path), header.manifest_digest,
                          artifact.config) as feed:

            def download(ctx: InterfaceContext) -> None:
                ctx.payload = feed
                try:
                    self.probe.driver.run_state("download", ctx)
                finally:
                    ctx.payload = None

            self.probe.call("Download", download)
            if feed.consumed:
                walk.download_mode = "read the payload while it streamed"
            elif self.probe.work_dir is not None:
                feed.save_to(filetree.files_dir(self.probe.work_dir))
                walk.download_mode = "left the payload to files/"

    def _error_path(self, walk: Walk, can_roll_back: bool, need: RebootNeed | None) -> None:
        """SPEC 7.2 for one Component: failures are noted and the path goes on."""
        if can_roll_back:
            self._noted(walk, "artifact_rollback", "ArtifactRollback")
            if need is None:
                try:
                    need = self.probe.call("NeedsArtifactReboot",
                                           self.probe.driver.needs_artifact_reboot)
                except CallFailed as failed:
                    walk.rollback_errors.append(failed.message)
            if need is RebootNeed.YES:
                self._noted(walk, "artifact_rollback_reboot", "ArtifactRollbackReboot")
            if need in (RebootNeed.YES, RebootNeed.AUTOMATIC):
                self._noted(walk, "artifact_verify_rollback_reboot",
                            "ArtifactVerifyRollbackReboot")
        before = self._version_or_error()
        walk.states.append("ArtifactFailure")
        error = None
        try:
            self.probe.call("ArtifactFailure",
                            lambda ctx: self.probe.driver.run_state("artifact_failure", ctx))
        except CallFailed as failed:
            error = failed.message
        walk.failure_state = (error, before, self._version_or_error())

    def _noted(self, walk: Walk, hook: str, name: str) -> None:
        try:
            self._state(walk, hook, name)
        except CallFailed as failed:
            walk.rollback_errors.append(failed.message)

    def _cleanup(self, walk: Walk) -> None:
        walk.states.append("Cleanup")
        try:
            self.probe.call("Cleanup", lambda ctx: self.probe.driver.run_state("cleanup", ctx))
        except CallFailed as failed:
            walk.cleanup_errors.append(failed.message)
        else:
            walk.cleanup_errors.append(None)
        walk.version_after_cleanup.append(self._version_or_error())

    def _version_or_error(self) -> str:
        try:
            return self.version()
        except CallFailed as failed:
            return f"(Provides failed: {failed.message})"
