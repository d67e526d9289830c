"""The deployment engine: runs the steps of ``sequence`` against the drivers, journals them.

The engine owns execution only: which step comes next is decided by
``sequence.deployment_steps``; here each step is replayed from the journal when it already
ran, or executed (Components of the step in parallel, a barrier at its end) when it did not.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core import (
    atomic,
    drivers,
    filetree,
    manifest_store,
    processes,
    replay,
    startup,
)
from orchestrator_core.config import Config
from orchestrator_core.context import InterfaceContext
from orchestrator_core.deployment_checks import check_before_journal
from orchestrator_core.drivers import ComponentDriver
from orchestrator_core.errors import Busy, JournalMismatch, NothingToResume, OrchestratorError
from orchestrator_core.installed import InstalledArtifacts, StoredPayload
from orchestrator_core.journal import DeploymentRow, EventRow, Journal, StepIdentity, damaged_plan
from orchestrator_core.lock import exclusive
from orchestrator_core.log import component_logger
from orchestrator_core.planner import Plan, PlannedComponent, deployment_dir, work_dir
from orchestrator_core.progress import ProgressObserver
from orchestrator_core.run_guard import guarded
from orchestrator_core.sequence import (
    CLEANUP,
    COMMIT,
    INSTALL,
    Outcome,
    Progress,
    Result,
    Step,
    deployment_steps,
    recovery_steps,
)
from orchestrator_core.shared_payload import SharedPayloads

TREE_MAKERS = 2  # threads making a step's File API directories (see _prepare_work_dirs)
log = logging.getLogger("mender_orchestrator.engine")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INCONSISTENT = 3
EXIT_REBOOT = 4
TEST_BOOT_ID = "MENDER_ORCHESTRATOR_TEST_BOOT_ID"
# Left in the datastore while the orchestrator reboots the system itself for a run that was
# not driven stage by stage (no --stop-before): the boot-time unit in support/systemd resumes
# only then, so it never runs ahead of a caller (the Mender client) that continues by itself.
RESUME_AT_BOOT = "resume-at-boot"

# Journaled when a `rollback` run exits 0 at a stop after completing the rollback path: its
# caller has reported the failure, so the `resume` that runs Cleanup afterwards succeeds.
ROLLBACK_REPORTED = "rollback-reported"

HOOK_NAMES = {
    "Download": "download",
    "ArtifactInstall": "artifact_install",
    "ArtifactReboot": "artifact_reboot",
    "ArtifactVerifyReboot": "artifact_verify_reboot",
    "ArtifactCommit": "artifact_commit",
    "Cleanup": "cleanup",
    "ArtifactRollback": "artifact_rollback",
    "ArtifactRollbackReboot": "artifact_rollback_reboot",
    "ArtifactVerifyRollbackReboot": "artifact_verify_rollback_reboot",
    "ArtifactFailure": "artifact_failure",
}


class RunOptions(NamedTuple):
    stop_before: frozenset[str] = frozenset()
    exit_on_reboot: bool = False
    command: str = "install"  # install, resume or rollback: decides exit codes at stops


class RunResult(NamedTuple):
    exit_code: int
    message: str  # names the inconsistent Components, when there are any


def _named(inconsistent: Mapping[str, str]) -> str:
    return "; ".join(f"{key}: {why}" for key, why in sorted(inconsistent.items()))


def _finished(history: list[EventRow]) -> Result | None:
    """How a member's step ended, from its journal events; None if it never finished."""
    finishes = [event for event in history if event.kind == "finish"]
    if not finishes:
        return None
    last = finishes[-1]
    return Result(bool(last.ok), last.value, last.message)


def _row(step: Step) -> StepIdentity:
    return replay.identity(step)


def _next(steps: Generator[Step, Outcome, None], outcome: Outcome | None) -> Step | None:
    """The next step of ``steps`` (None: the first), or None once they have ended."""
    try:
        return next(steps) if outcome is None else steps.send(outcome)
    except StopIteration:
        return None


def _boot_id() -> str:
    """This boot's identity: a change between two runs means the system rebooted."""
    simulated = os.environ.get(TEST_BOOT_ID)  # tests cannot reboot the machine they run on
    if simulated:
        return simulated
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Deployment:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        row: DeploymentRow,
        preloaded: Mapping[str, ComponentDriver] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.id = row.id
        self.row = row
        try:
            self.plan = Plan.from_json(row.plan)
        except JournalMismatch as exc:
            raise JournalMismatch(
                f"deployment {row.id} of {row.manifest_name}: {exc.message}"
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged_plan(journal.path, row.id, exc) from None
        self.directory = deployment_dir(config.work_root, row.id)  # the File API trees
        self._drivers: dict[str, ComponentDriver] = {}
        self._preloaded = dict(preloaded or {})
        self._managers = drivers.ExecutableManagers()
        self._progress = ProgressObserver()
        self._observing = threading.Lock()  # Components that share a plugin manager
        self._prepared: set[str] = set()  # File API dirs made by this process
        self._cache = _open_cache(config)
        self._installed = InstalledArtifacts(config.datastore_dir / "installed")
        self._payloads = SharedPayloads(filetree.shared_copies(self.directory))

    # ---- replay

    def _recorded(self) -> dict[int, dict[str, list[EventRow]]]:
        by_step: dict[int, dict[str, list[EventRow]]] = {}
        for event in self.journal.events(self.id):
            if event.seq is not None:
                by_step.setdefault(event.seq, {}).setdefault(event.component, []).append(event)
        return by_step

    def rollback_requested(self) -> bool:
        return any(e.kind == "rollback-requested" for e in self.journal.events(self.id))

    def _why_roll_back(self) -> str | None:
        """Why steps of the install and commit passes that have not begun must not run:
        a ``rollback`` command, or a reboot nobody asked for (SPEC 7.4: the System takes the
        rollback path). Notes this process's boot in the journal."""
        events = self.journal.events(self.id)
        now = _boot_id()
        boots = [e.value for e in events if e.kind == "boot"]
        if boots and boots[-1] != now and not self._reboot_pending(events):
            self.journal.record(self.id, None, "", "spontaneous-reboot", None, now)
            log.error("the system rebooted during the deployment without being asked to")
            events = self.journal.events(self.id)
        if not boots or boots[-1] != now:
            self.journal.record(self.id, None, "", "boot", None, now)
        kinds = {e.kind for e in events}
        if "spontaneous-reboot" in kinds:
            return "the system rebooted on its own during the deployment"
        if "rollback-requested" in kinds:
            return "rollback requested"
        return None

    def _rollback_reported(self) -> bool:
        return any(e.kind == ROLLBACK_REPORTED for e in self.journal.events(self.id))

    def _reboot_pending(self, events: list[EventRow]) -> bool:
        """A system reboot step was entered and not finished: we asked for this reboot."""
        reboots = {seq for seq, kind, *_ in self.journal.steps(self.id) if kind == "reboot"}
        entered = {(e.seq, e.component) for e in events if e.seq in reboots and e.kind == "enter"}
        finished = {(e.seq, e.component) for e in events if e.seq in reboots and e.kind == "finish"}
        return bool(entered - finished)

    def _retries(self) -> int:
        if self.plan.rollback_reboot_retries is not None:
            return self.plan.rollback_reboot_retries
        log.warning(
            "deployment %d began under a mender-orchestrator that did not record "
            "RollbackRebootRetries in its plan; the configured %d is used, and every replayed "
            "step is checked against the journal",
            self.id,
            self.config.rollback_reboot_retries,
        )
        return self.config.rollback_reboot_retries

    def run(self, options: RunOptions) -> RunResult:
        startup.resume_collection()  # a deployment may run for hours: start-up is over
        progress = Progress()
        retries = self._retries()  # frozen in the plan at install time
        steps = deployment_steps(self.plan.groups, retries, progress)
        recorded = self._recorded()
        identities = self.journal.identities(self.id)
        switches = replay.switches(self.journal.events(self.id))
        roll_back_because = self._why_roll_back()
        seq = 0
        step = _next(steps, None)
        while True:
            switch = switches.pop(0) if switches and switches[0].at == seq else None
            why = None if switch else replay.mismatch(seq, step, identities, recorded)
            if why is not None:
                switch = self._diverged(seq, why, identities, recorded, options)
            if switch is not None:
                keys = {key for _, members in self.plan.groups for key in members}
                touched = replay.touched(recorded, switch, keys)
                steps = recovery_steps(self.plan.groups, touched, retries, progress, switch.why)
                seq, step = switch.base, _next(steps, None)
                continue
            if step is None:
                break
            events = recorded.get(seq, {})
            outcome = self._replayed(step, events)
            if outcome is None:
                if not events:
                    if roll_back_because and step.phase in (INSTALL, COMMIT):
                        outcome = self._refuse(seq, step, roll_back_because)
                    elif step.stop_names & options.stop_before:
                        return self._stopped(seq, step, progress, options)
                if outcome is None:
                    outcome = self._execute(seq, step, events, options)
                    if outcome is None:  # a system reboot is under way
                        return RunResult(EXIT_REBOOT, "system reboot needed; run resume after it")
            step = _next(steps, outcome)
            seq += 1
        return self._finished(progress, options)

    def _diverged(
        self,
        seq: int,
        why: str,
        identities: Mapping[int, StepIdentity],
        recorded: Mapping[int, object],
        options: RunOptions,
    ) -> replay.Switch:
        """The journal does not match the steps at ``seq``: nothing recorded from there on
        can be trusted. ``resume`` refuses; ``rollback`` switches to the recovery steps."""
        what = (
            f"deployment {self.id} of {self.plan.manifest_name}: the journal does not match "
            f"the steps this mender-orchestrator replays: {why}"
        )
        if options.command != "rollback":
            raise JournalMismatch(
                f"{what} (was the program or its configuration changed in the middle of the "
                f"deployment?); it stays in progress: run 'mender-orchestrator rollback' to roll "
                f"back every Component it may have touched"
            )
        log.error("%s; rolling back every Component it may have touched", what)
        switch = replay.Switch(seq, replay.after(identities, recorded, seq), why)
        self.journal.record(
            self.id, None, "", replay.RECOVERY, None, f"{switch.at} {switch.base}", why
        )
        return switch

    def _replayed(self, step: Step, events: dict[str, list[EventRow]]) -> Outcome | None:
        """The recorded outcome of a step that finished for every member, else None."""
        outcome = {}
        for key in step.members:
            result = _finished(events.get(key, []))
            if result is None:
                return None
            outcome[key] = result
        return outcome

    def _refuse(self, seq: int, step: Step, why: str) -> Outcome:
        self.journal.record_step(self.id, seq, _row(step))
        outcome = {
            key: Result(False, None, f"{key}: {step.name} not run, {why}") for key in step.members
        }
        for key, result in outcome.items():
            self.journal.record(self.id, seq, key, "finish", False, None, result.message)
        return outcome

    def _stopped(self, seq: int, step: Step, progress: Progress, options: RunOptions) -> RunResult:
        self.journal.record(self.id, None, "", "stopped", None, step.name, options.command)
        where = f"stopped before {step.name} (order group {step.group})"
        if progress.failure is None:
            return RunResult(EXIT_OK, where)
        if options.command == "rollback" and step.phase == CLEANUP:
            if progress.inconsistent:
                return RunResult(
                    EXIT_INCONSISTENT, f"{where}; inconsistent: {_named(progress.inconsistent)}"
                )
            # the caller now knows the deployment failed: a later run finishing it says ok
            self.journal.record(self.id, None, "", ROLLBACK_REPORTED)
            return RunResult(EXIT_OK, f"rolled back; {where}")
        return RunResult(EXIT_FAILED, f"deployment failed ({progress.failure}); {where}")

    # ---- execution

    def _execute(
        self, seq: int, step: Step, events: dict[str, list[EventRow]], options: RunOptions
    ) -> Outcome | None:
        outcome: dict[str, Result] = {}
        pending = []
        for key in step.members:
            history = events.get(key, [])
            result = _finished(history)
            if result is not None:
                outcome[key] = result
            elif history and step.kind == "reboot":
                # we asked for this reboot and a new process is running: it happened
                self._note_reboot_done(seq, key, history)
                outcome[key] = Result(True)
            elif step.phase in (INSTALL, COMMIT) and (history or events) and step.kind == "state":
                why = (
                    f"{key}: {step.name} was interrupted (crash, power loss or spontaneous "
                    "reboot) before it finished"
                )
                if not history:
                    why = f"{key}: {step.name} not started: the deployment was interrupted"
                self.journal.record(self.id, seq, key, "finish", False, None, why)
                log.error("%s", why)
                outcome[key] = Result(False, None, why)
            else:
                pending.append(key)
        if step.kind == "reboot":
            if pending:
                return self._reboot(seq, step, pending, options, outcome)
            return outcome
        self._announce(step, pending)
        if pending:
            self.journal.step_entered(self.id, seq, _row(step), pending)
            self._progress.step_started(step.group, step.name, pending)
            self._prepare_work_dirs(step, pending)
            try:
                results = drivers.in_parallel(lambda k: self._run_member(seq, step, k), pending)
            except BaseException:
                self.journal.flush()  # how the members that did end, ended
                raise
            finally:
                if step.name == "Download":
                    self._drop_streams_ahead(pending)
            outcome.update(zip(pending, results, strict=True))
            # Each member's end is recorded with ``soon``, and made durable by the journal's
            # next write (before anything it starts: the next step's entry, the reboot's,
            # the deployment's end), or by ``_finished``'s flush before the files it changes:
            # one fsync per step, not two. A crash before that write loses the ends, as a
            # crash a moment earlier would: the step counts as interrupted, hence failed.
            self._progress.step_finished()
        return outcome

    def _announce(self, step: Step, members: list[str]) -> None:
        if members:
            log.info("order group %d: %s for %s", step.group, step.name, ", ".join(members))

    def _note_reboot_done(self, seq: int, key: str, history: list[EventRow]) -> None:
        asked_in = next((e.value for e in history if e.kind == "enter"), None)
        if asked_in and asked_in == _boot_id():
            log.warning("the system reports the same boot id as before the reboot was asked for")
        self.journal.record(self.id, seq, key, "finish", True, None, "system rebooted")

    def _reboot(
        self,
        seq: int,
        step: Step,
        members: list[str],
        options: RunOptions,
        outcome: dict[str, Result],
    ) -> Outcome | None:
        self.journal.step_entered(self.id, seq, _row(step), members, value=_boot_id())
        log.info("order group %d: system reboot needed for %s", step.group, ", ".join(members))
        if options.exit_on_reboot:
            return None
        command = list(self.config.reboot_command)
        marker = self.config.datastore_dir / RESUME_AT_BOOT
        if not options.stop_before:
            atomic.write_bytes(marker, b"")
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure: str | None = f"RebootCommand {command} could not run: {exc}"
        else:
            failure = (
                None
                if completed.returncode == 0
                else (
                    f"RebootCommand {command} exited with {completed.returncode}: "
                    f"{completed.stderr.strip()[-500:]}"
                )
            )
        if failure is None and not options.stop_before:
            # the system is going down; whatever runs next is `resume` after the reboot
            log.info("system reboot started with %s; the deployment continues on resume", command)
            raise SystemExit(EXIT_OK)
        if failure is None:
            failure = self._await_reboot(command)
        marker.unlink(missing_ok=True)
        log.error("%s", failure)
        for key in members:
            outcome[key] = Result(False, None, f"{key}: {failure}")
            self.journal.record(self.id, seq, key, "finish", False, None, outcome[key].message)
        return outcome

    def _await_reboot(self, command: list[str]) -> str:
        """Wait for the reboot to end this process; returning means it did not.

        A caller that drives the deployment stage by stage (the Update Module, for the Mender
        client) takes exit 0 for "this stage succeeded", and the client would report success
        for a System that may still roll back (SPEC 7.4). So, like the Mender client after its
        own `reboot`, the run stays until the shutdown kills it; after the boot, the caller
        runs the same state again and `resume` continues after the reboot."""
        wait = self.config.reboot_wait_seconds
        log.info("system reboot started with %s; waiting up to %g s for it to end this run",
                 command, wait)
        time.sleep(wait)
        return f"RebootCommand {command} succeeded but the system did not go down within {wait:g} s"

    def _driver(self, planned: PlannedComponent) -> ComponentDriver:
        driver = self._drivers.get(planned.key)
        if driver is None:
            driver = self._preloaded.pop(planned.key, None) or drivers.load(
                planned.component, self.config.data_dir, self._managers
            )
            with self._observing:
                if not driver.pm.is_registered(self._progress):
                    driver.pm.register(self._progress, name="progress")
            self._drivers[planned.key] = driver
        return driver

    def _run_member(self, seq: int, step: Step, key: str) -> Result:
        planned = self.plan.component(key)
        name = f"{key} (interface {planned.component.interface})"
        directory = work_dir(self.directory, planned)
        value: str | None = None
        in_hook = False  # failures inside a hook are logged by the progress observer
        try:
            driver = self._driver(planned)
            self._prepare_work_dir(directory, planned)
            ctx = driver.context(
                log=component_logger(name),
                timeout_seconds=self.config.interface_timeout_seconds,
                component_id=planned.component_id,
                work_dir=directory,
                artifact=planned.artifact_info,
                progress_sink=self._progress_sink(seq, key),
            )
            if driver.keeps_previous_artifact:
                ctx.previous_artifact = self._installed.previous(key)
            in_hook = True
            if step.name == "SupportsRollback":
                value = "Yes" if driver.supports_rollback(ctx) else "No"
            elif step.name == "NeedsArtifactReboot":
                value = driver.needs_artifact_reboot(ctx).value
            elif step.name == "Download":
                self._download(driver, ctx, planned)
            else:
                driver.run_state(HOOK_NAMES[step.name], ctx)
            result = Result(True, value)
        except OrchestratorError as exc:
            result = Result(False, None, exc.message)
        except Exception as exc:  # disk full, a bug: this Component's state fails, not the run
            log.debug("driver error", exc_info=True)
            result = Result(False, None, f"driver raised {type(exc).__name__}: {exc}")
        if not result.ok and key not in str(result.message):
            result = Result(False, None, f"{name}: {result.message}")
        if not result.ok and not in_hook:
            component_logger(name).error("%s failed: %s", step.name, result.message)
        if processes.interrupted():  # unfinished, as after a crash: counts as failed on resume
            return result
        self.journal.record(
            self.id, seq, key, "finish", result.ok, result.value, result.message, soon=True
        )
        return result

    def _progress_sink(self, seq: int, key: str) -> Callable[[int, int | None, str], None]:
        def record(value: str, what: str) -> None:
            self.journal.record(self.id, seq, key, "progress", None, value, what, soon=True)

        return self._progress.sink(key, record)

    def _prepare_work_dirs(self, step: Step, keys: list[str]) -> None:
        """The File API directories of a step's members not made yet, and the streams trees
        of a Download, made before the step fans out by ``TREE_MAKERS`` threads.

        Made by the members' threads side by side, every system call of each hands the
        interpreter lock to another thread: 100 directories cost three times the CPU that way
        (64 ms against 20 in ``/tmp``). Where allocating an inode is slow (ext4 soon after a
        large removal: 100 directories took 180 ms of CPU in one thread), two threads made
        them in 126 ms rather than 180; on tmpfs, in the same 15 ms as one; four were slower
        (two cores). What cannot be made here is left to the member's call, which makes it
        again and reports why it failed."""
        download = step.name == "Download"
        todo = [key for key in keys if download or key not in self._prepared]
        if len(todo) < 2 * TREE_MAKERS:
            self._make_trees(todo, download)
            return
        drivers.in_parallel(
            lambda part: self._make_trees(part, download),
            [todo[start::TREE_MAKERS] for start in range(TREE_MAKERS)],
        )

    def _make_trees(self, keys: list[str], download: bool) -> None:
        for key in keys:
            planned = self.plan.component(key)
            directory = work_dir(self.directory, planned)
            try:
                if key not in self._prepared:
                    self._prepare_work_dir(directory, planned)
                if download and self._driver(planned).takes_streams_ahead:
                    filetree.make_streams(directory, ahead=True)
            except Exception:  # the member's own attempt makes it again and reports why
                continue

    def _drop_streams_ahead(self, keys: list[str]) -> None:
        """The streams trees made ahead that no Download took (its member failed before it
        streamed, or never got that far): gone before any later state."""
        for key in keys:
            directory = work_dir(self.directory, self.plan.component(key))
            if filetree.take_streams(directory):
                filetree.remove_streams(directory)

    def _prepare_work_dir(self, directory: Path, planned: PlannedComponent) -> None:
        if planned.key in self._prepared:
            # made by this process, but something may have deleted it since: without it
            # every later call fails, the rollback's too, so it is made again (as on resume)
            if (directory / filetree.TMP).is_dir():
                return
            log.warning("%s: its File API directory %s vanished; making it again",
                        planned.key, directory)
        info = planned.artifact_info
        filetree.prepare(
            directory,
            component_type=planned.component.component_type,
            provides=planned.provides,
            artifact_name=info.name,
            artifact_group=info.group,
            payload_type=info.payload_type,
            header_info=planned.verbatim("header-info"),
            type_info=planned.verbatim("type-info"),
            meta_data=planned.verbatim("meta-data"),
            shared=filetree.shared_copies(self.directory),
        )
        self._prepared.add(planned.key)

    def _download(
        self, driver: ComponentDriver, ctx: InterfaceContext, planned: PlannedComponent
    ) -> None:
        from orchestrator_core.artifact import ArtifactPayload, open_payload

        artifact = planned.artifact
        with open_payload(
            artifact["name"], artifact["path"], artifact["digest"], self.config, self._cache
        ) as feed:
            given: ArtifactPayload | StoredPayload = feed
            if driver.keeps_previous_artifact:
                given = StoredPayload(
                    self._installed.stage(planned.key, self.id, planned.artifact_info, feed.save_to)
                )
            ctx.payload = given
            try:
                driver.run_state("download", ctx)
                if not given.consumed and ctx.work_dir is not None:
                    files = filetree.files_dir(ctx.work_dir)
                    self._payloads.store(given, artifact["digest"], files)
            finally:
                ctx.payload = None

    # ---- the end

    def _finished(self, progress: Progress, options: RunOptions) -> RunResult:
        # the last step's ends are durable before what depends on them: the Manifest store and
        # the record of what each Component runs
        self.journal.flush()
        if progress.failure is None:
            manifest_store.record(self.config.manifest_store, self.row.manifest)
            status, code = "succeeded", EXIT_OK
            message = f"deployment of {self.plan.manifest_name} succeeded"
        elif progress.inconsistent:
            status, code = "inconsistent", EXIT_INCONSISTENT
            names = _named(progress.inconsistent)
            message = (
                f"deployment of {self.plan.manifest_name} failed ({progress.failure}) and these "
                f"Components are inconsistent: {names}"
            )
        else:
            # a rollback that was asked for and completed is the command's success, and so
            # is finishing one whose failure an earlier run already reported (SPEC 7.4)
            status = "failed"
            reported = options.command == "rollback" or self._rollback_reported()
            code = EXIT_OK if reported else EXIT_FAILED
            message = (
                f"deployment of {self.plan.manifest_name} failed and the System was rolled back: "
                f"{progress.failure}"
            )
        if progress.failure is None:
            # before the end is journaled: a crash in between repeats this on resume
            self._installed_changed(promote=True)
        self.journal.finish_deployment(self.id, status, message)
        self._installed_changed(promote=False)
        # only after the end is journaled: a tree that cannot go (a mount left in tmp/, a
        # read-only file system) must not keep the deployment in progress for ever; what
        # earlier deployments could not remove goes now too
        left = filetree.remove_all(self.config.work_root)
        if left:
            log.warning("the deployment has ended, but files under %s could not be removed "
                        "(%s); the next deployment's end tries again", self.config.work_root,
                        "; ".join(left[:3]))
        if self._cache is not None:
            try:
                self._cache.prune({c.artifact["name"] for c in self.plan.components})
            except OSError as exc:
                log.warning("ArtifactsCache: entries of other Artifacts were not removed: %s", exc)
        return RunResult(code, message)


    def _installed_changed(self, *, promote: bool) -> None:
        """After a success each Component runs what this deployment stored for it
        (``promote``); at the end, the copies no Component runs go."""
        try:
            if promote:
                for planned in self.plan.components:
                    self._installed.promote(planned.key, self.id)
            else:
                self._installed.tidy()
        except OSError as exc:
            log.warning("%s: the record of what each Component runs was not updated: %s",
                        self._installed.root, exc)


def _open_cache(config: Config) -> Any:
    if not config.artifacts_cache.enabled:
        return None
    from orchestrator_core.artifact import ArtifactsCache

    try:
        return ArtifactsCache(config.artifacts_cache)
    except OrchestratorError as exc:
        # Planning refuses this, but a deployment journaled before the directory went away
        # must still reach its rollback and Cleanup: they need no cache, a Download streams.
        log.warning("%s; this run goes without the cache", exc.message)
        return None


def _announce_plan(plan: Plan) -> None:
    for planned in plan.components:
        if planned.skip_reason:
            log.info("%s: left untouched, %s", planned.key, planned.skip_reason)


def refuse_in_progress(config: Config, journal: Journal | None = None) -> None:
    """Raise ``Busy`` if the journal holds a deployment in progress: ``journal`` when the
    caller has it open already, else the file, if there is one (none is created)."""
    if journal is None:
        if not config.journal_path.exists():
            return
        opened = Journal(config.journal_path)
        try:
            current = opened.in_progress()
        finally:
            opened.close()
    else:
        current = journal.in_progress()
    if current is not None:
        raise Busy(
            f"deployment {current.id} of {current.manifest_name} is still in progress; "
            f"finish it with 'mender-orchestrator resume' or 'rollback' first"
        )


def install(
    config: Config, planned: Callable[[], Plan], manifest_bytes: bytes, options: RunOptions
) -> RunResult:
    """Plan (``planned`` asks the Interfaces) and deploy, all under the lock: nothing is asked
    of any Interface while another command calls them or a deployment is in progress."""
    with exclusive(config):
        check_before_journal(config)
        # opened once: this deployment makes the journal anyway, and closing the only
        # connection of a WAL journal checkpoints it (fsyncs) for nothing
        journal = Journal(config.journal_path)
        try:
            refuse_in_progress(config, journal)
            with guarded(config, journal, options.command) as guard:
                plan = planned()
                _announce_plan(plan)
                deployment_id = journal.begin(plan.manifest_name, manifest_bytes, plan.to_json())
                guard.deployment = deployment_id
                row = journal.in_progress()
                assert row is not None and row.id == deployment_id
                return Deployment(config, journal, row, plan.drivers).run(options)
        finally:
            journal.close()


def resume(config: Config, options: RunOptions) -> RunResult:
    with exclusive(config):
        (config.datastore_dir / RESUME_AT_BOOT).unlink(missing_ok=True)
        check_before_journal(config)
        journal = Journal(config.journal_path)
        try:
            with guarded(config, journal, options.command) as guard:
                row = journal.in_progress()
                if row is None:
                    raise NothingToResume("nothing to resume: no deployment is in progress")
                guard.deployment = row.id
                if options.command == "rollback":
                    deployment = Deployment(config, journal, row)
                    if not deployment.rollback_requested():
                        journal.record(row.id, None, "", "rollback-requested")
                    return deployment.run(options)
                return Deployment(config, journal, row).run(options)
        finally:
            journal.close()
