"""The checks of ``check-interface``, in the order they run, and the report they make."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator_core.conformance.probe import OUTPUT_LIMIT, Call, CallFailed, Probe
from orchestrator_core.conformance.walk import ROLLBACK_POINTS, TestArtifact, Walk, Walker
from orchestrator_core.context import RebootNeed
from orchestrator_core.errors import ConfigError

PASS, FAIL, SKIP = "pass", "fail", "skip"
IDENTITY_CALLS = 3  # enough to see an ID that changes from call to call

# (version key, current Provides) -> (the Artifact to install, one of the running version)
ArtifactMaker = Callable[[str, Mapping[str, str]], tuple[TestArtifact, TestArtifact | None]]


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


@dataclass
class Report:
    interface: str
    kind: str  # executable or driver
    target: str
    component_type: str
    component_id: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    checks: list[Check] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "kind": self.kind,
            "target": self.target,
            "component_type": self.component_type,
            "component_id": self.component_id,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "passed": self.passed,
            "checks": [vars(check) for check in self.checks],
            "calls": [
                {"hook": c.hook, "seconds": round(c.seconds, 3), "error": c.error,
                 "output_bytes": c.output_bytes}
                for c in self.calls
            ],
        }


@dataclass(frozen=True)
class Queries:
    component_id: str
    provides: dict[str, str]
    version_key: str
    supports_rollback: bool
    reboot: RebootNeed


def run(probe: Probe, report: Report, make_artifacts: ArtifactMaker, root: Path, *,
        dry: bool, leave_installed: bool) -> Report:
    """Every check, into ``report``; bad input (unusable ``--artifact``) raises ConfigError."""
    report.calls = probe.calls
    try:
        queries = _queries(probe, report)
        if queries is not None and dry:
            report.add("walks", SKIP, "--dry: only the queries were asked")
        elif queries is not None:
            report.version_before = queries.provides[queries.version_key]
            new, restore = make_artifacts(queries.version_key, queries.provides)
            if new.version == report.version_before:
                raise ConfigError(
                    f"{new.path}: the Component already runs {new.version}, the version this "
                    f"Artifact installs; give an Artifact of another version"
                )
            if restore is None and not queries.supports_rollback and not leave_installed:
                raise ConfigError(
                    f"{report.component_type}/{queries.component_id} answers SupportsRollback "
                    f"No: putting it back on {report.version_before} needs an Artifact of that "
                    f"version as a second --artifact (or use --leave-installed)"
                )
            _walks(Walker(probe, queries.version_key, root), report, queries, new, restore,
                   leave_installed)
    finally:
        _call_checks(report, probe, dry)
    return report


# --------------------------------------------------------------------------- queries


def _queries(probe: Probe, report: Report) -> Queries | None:
    driver = probe.driver
    ids: list[str] = []
    try:
        for _ in range(IDENTITY_CALLS):
            ids.append(probe.call("Identity", driver.identity))
    except CallFailed as failed:
        report.add("identity-valid", FAIL, failed.message)
        return None
    report.add("identity-valid", PASS, f"id={ids[0]}")
    if len(set(ids)) > 1:
        report.add("identity-stable", FAIL,
                   f"{IDENTITY_CALLS} calls answered {', '.join(repr(i) for i in ids)}")
        return None
    report.add("identity-stable", PASS, f"{IDENTITY_CALLS} calls, the same id")
    probe.component_id = report.component_id = ids[0]

    raw: list[dict[str, str]] = []
    try:
        for _ in range(2):
            raw.append(dict(probe.call("Provides", lambda c: driver.hook.provides(ctx=c)) or {}))
        provides = probe.call("Provides", driver.provides)
    except CallFailed as failed:
        report.add("provides-version-key", FAIL, failed.message)
        return None
    name = getattr(driver.pm.get_plugin("driver"), "interface_name", driver.component.interface)
    version_key = next(k for k in (f"rootfs-image.{name}.version", "rootfs-image.version")
                       if k in provides)
    report.add("provides-version-key", PASS, f"{version_key}={provides[version_key]}")
    if "device_type" in raw[0]:
        report.add("provides-no-device-type", FAIL,
                   f"Provides reports device_type={raw[0]['device_type']}; the orchestrator "
                   f"takes the device type from the Topology's component_type")
    else:
        report.add("provides-no-device-type", PASS, "no device_type key")
    if raw[0] != raw[1]:
        changed = sorted(k for k in raw[0].keys() | raw[1].keys() if raw[0].get(k) != raw[1].get(k))
        report.add("provides-stable", FAIL, f"two calls in a row differ in {', '.join(changed)}")
        return None
    report.add("provides-stable", PASS, f"{len(raw[0])} key(s), the same twice")

    try:
        answers = {
            "Inventory": f"{len(probe.call('Inventory', driver.inventory))} attributes",
            "NeedsUnpackedArtifact": probe.call("NeedsUnpackedArtifact",
                                                driver.needs_unpacked_artifact),
            "ProvidePayloadFileSizes": probe.call("ProvidePayloadFileSizes",
                                                  driver.provide_payload_file_sizes),
            "SupportsRollback": probe.call("SupportsRollback", driver.supports_rollback),
            "NeedsArtifactReboot": probe.call("NeedsArtifactReboot",
                                              driver.needs_artifact_reboot),
        }
    except CallFailed as failed:
        report.add("queries-valid", FAIL, failed.message)
        return None
    report.add("queries-valid", PASS, ", ".join(f"{k}: {_answer(v)}" for k, v in answers.items()))
    return Queries(ids[0], provides, version_key, bool(answers["SupportsRollback"]),
                   RebootNeed(answers["NeedsArtifactReboot"]))


def _answer(value: object) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, RebootNeed):
        return value.value
    return str(value)


# --------------------------------------------------------------------------- walks


def _walks(walker: Walker, report: Report, queries: Queries, new: TestArtifact,
           restore: TestArtifact | None, leave_installed: bool) -> None:
    start = queries.provides[queries.version_key]
    error_walks: list[Walk] = []
    first: Walk | None = None
    try:
        if queries.supports_rollback:
            for point in _rollback_points(queries.reboot):
                walk = walker.deploy(new, fail_after=point, cleanups=1 if first else 2)
                first = first or walk
                error_walks.append(walk)
                _rollback_check(report, point, walk, start)
                _put_back(walker, restore, start)
        else:
            for point in ROLLBACK_POINTS:
                report.add(f"rollback-after-{point}", SKIP, "SupportsRollback answered No")
            first = walker.deploy(new, fail_after="ArtifactInstall", cleanups=2)
            error_walks.append(first)
            _put_back(walker, restore, start)
        complete: Walk | None = None
        if restore is not None or leave_installed:
            complete = walker.deploy(new)
            if not leave_installed:
                _put_back(walker, restore, start)
    except CallFailed as failed:  # only Provides outside a state can end a walk early
        report.add("walk", FAIL, f"the walk stopped: {failed.message}")
        return
    _download_check(report, walker.probe, first)
    _install_check(report, new, complete, error_walks)
    _failure_check(report, error_walks)
    _cleanup_check(report, [first, *error_walks, *([complete] if complete else [])])
    name = "left-installed" if leave_installed else "left-as-found"
    wanted = new.version if leave_installed else start
    try:
        end = report.version_after = walker.version()
    except CallFailed as failed:
        report.add(name, FAIL, failed.message)
        return
    if end == wanted:
        report.add(name, PASS, f"runs {end}")
    else:
        report.add(name, FAIL, f"runs {end} at the end, not {wanted}")


def _rollback_points(reboot: RebootNeed) -> list[str]:
    points = ["ArtifactInstall"]
    if reboot is RebootNeed.YES:
        points.append("ArtifactReboot")
    if reboot in (RebootNeed.YES, RebootNeed.AUTOMATIC):
        points.append("ArtifactVerifyReboot")
    return [*points, "ArtifactCommit"]


def _put_back(walker: Walker, restore: TestArtifact | None, start: str) -> None:
    """Install the running version again if a walk left another one (no fault of ours)."""
    if restore is not None and walker.version() != start:
        walker.deploy(restore)


def _rollback_check(report: Report, point: str, walk: Walk, start: str) -> None:
    name = f"rollback-after-{point}"
    end = walk.version_after_cleanup[-1]
    if walk.failure is not None:
        report.add(name, FAIL, f"the install path failed before the rollback: {walk.failure}")
        return
    problems = list(walk.rollback_errors)
    if end != start:
        problems.insert(0, f"after the rollback path ({', '.join(walk.states)}) it runs {end}, "
                           f"not the previous version {start}")
    if problems:
        report.add(name, FAIL, "; ".join(problems))
    else:
        report.add(name, PASS, f"back on {start} after {', '.join(walk.states)}")


def _download_check(report: Report, probe: Probe, first: Walk | None) -> None:
    errors = [c.error for c in probe.calls if c.hook == "Download" and c.error]
    if errors:
        report.add("download", FAIL, errors[0])
    elif first is not None and first.download_mode:
        report.add("download", PASS, f"Download {first.download_mode}")


def _install_check(report: Report, new: TestArtifact, complete: Walk | None,
                   error_walks: list[Walk]) -> None:
    walks = [w for w in [complete, *error_walks] if w is not None]
    failed = next((w.failure for w in walks if w.failure is not None), None)
    versions = {w.committed_version for w in walks if w.committed_version is not None}
    if failed is not None:
        report.add("install", FAIL, failed)
    elif not versions:
        report.add("install", SKIP, "no walk reached ArtifactCommit")
    elif versions != {new.version}:
        report.add("install", FAIL, f"after ArtifactCommit it runs {', '.join(sorted(versions))}"
                                    f", not {new.version}, the version of the Artifact")
    else:
        states = complete.states if complete else walks[-1].states
        path = ", ".join(s for s in states if s not in ("Cleanup",))
        report.add("install", PASS, f"{path}: runs {new.version}")


def _failure_check(report: Report, error_walks: list[Walk]) -> None:
    for walk in error_walks:
        if walk.failure_state is None:
            continue
        error, before, after = walk.failure_state
        if error is not None:
            report.add("artifact-failure", FAIL, f"ArtifactFailure after a failed install: {error}")
            return
        if before != after:
            report.add("artifact-failure", FAIL,
                       f"ArtifactFailure changed the version from {before} to {after}")
            return
    report.add("artifact-failure", PASS, f"harmless after {len(error_walks)} failed installs")


def _cleanup_check(report: Report, walks: list[Walk | None]) -> None:
    for walk in walks:
        if walk is None:
            continue
        for number, error in enumerate(walk.cleanup_errors, 1):
            if error is not None:
                which = "the second Cleanup in a row" if number == 2 else "Cleanup"
                report.add("cleanup-twice", FAIL, f"{which} failed: {error}")
                return
        versions = walk.version_after_cleanup
        if len(set(versions)) > 1:
            report.add("cleanup-twice", FAIL,
                       f"a second Cleanup changed the version from {versions[0]} to {versions[1]}")
            return
    report.add("cleanup-twice", PASS, "two Cleanups in a row succeed and change nothing")


# --------------------------------------------------------------------------- every call


def _call_checks(report: Report, probe: Probe, dry: bool) -> None:
    calls = probe.calls
    if not calls:
        return
    late = [c for c in calls if c.timed_out]
    if late:
        report.add("deadline", FAIL, "; ".join(
            f"{c.hook} ran {c.seconds:.1f} s, past InterfaceTimeoutSeconds "
            f"({probe.timeout_seconds:g} s)" for c in late))
    else:
        slowest = max(calls, key=lambda c: c.seconds)
        report.add("deadline", PASS, f"slowest call {slowest.hook}, {slowest.seconds:.2f} s "
                                     f"of {probe.timeout_seconds:g} s")
    loud = [c for c in calls if c.output_bytes > OUTPUT_LIMIT]
    if loud:
        report.add("output-size", FAIL, "; ".join(
            f"{c.hook} printed {c.output_bytes} bytes (at most {OUTPUT_LIMIT})" for c in loud))
    else:
        largest = max(calls, key=lambda c: c.output_bytes)
        report.add("output-size", PASS, f"largest {largest.output_bytes} bytes ({largest.hook})")
    if dry:
        report.add("file-api-tmp-only", SKIP, "--dry: no state was run")
        return
    writes = [c for c in calls if c.outside_tmp]
    if writes:
        report.add("file-api-tmp-only", FAIL, "; ".join(
            f"{c.hook} wrote {', '.join(c.outside_tmp[:5])}" for c in writes[:3]))
    else:
        report.add("file-api-tmp-only", PASS, "nothing written outside tmp/")
