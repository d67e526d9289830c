"""SPEC section 7 as data: the order of every step of a deployment, and its decisions.

``deployment_steps`` is a generator. It yields a ``Step`` (a state, a query or a system
reboot, for some Components of one order group) and receives the ``Outcome`` of that step,
then decides what comes next. It does no I/O, so the engine can *replay* it: on ``resume``
it feeds back the outcomes recorded in the journal until it reaches a step that has not run,
and because the generator is deterministic the replay lands exactly where the last process
stopped. Every decision the deployment makes therefore lives here, in one readable place.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Mapping, Sequence
from typing import NamedTuple

INSTALL, COMMIT, ROLLBACK, CLEANUP = "install", "commit", "rollback", "cleanup"

SYSTEM_REBOOT = "SystemReboot"


class Step(NamedTuple):
    kind: str  # "state", "query" or "reboot"
    name: str  # a protocol state, a query (SupportsRollback, NeedsArtifactReboot), SYSTEM_REBOOT
    group: int  # the order group
    phase: str  # INSTALL, COMMIT, ROLLBACK or CLEANUP
    members: tuple[str, ...]  # Component keys
    # names under which ``--stop-before`` stops here: the step's own name, plus the name of
    # the pass it opens (the rollback path is entered as "ArtifactRollback" even when its
    # first step is another state)
    stop_names: frozenset[str] = frozenset()


class Result(NamedTuple):
    ok: bool
    value: str | None = None  # a query's answer
    message: str | None = None  # why it failed


Outcome = Mapping[str, Result]


class Progress:
    """What the deployment has concluded so far; read by the engine when it stops, and by
    ``recovery_steps`` when the journal stops matching the steps. A plain class: a dataclass
    costs ~0.4 ms of every command's start-up to build."""

    def __init__(
        self,
        failure: str | None = None,
        phase: str = INSTALL,
        *,
        inconsistent: dict[str, str] | None = None,
        entered: dict[int, tuple[str, ...]] | None = None,
        installing: list[str] | None = None,
        can_roll_back: dict[str, bool] | None = None,
        reboot_need: dict[str, str] | None = None,
        rebooted: set[str] | None = None,
    ) -> None:
        self.failure = failure
        self.phase = phase
        # key -> why
        self.inconsistent: dict[str, str] = {} if inconsistent is None else inconsistent
        # group -> its keys
        self.entered: dict[int, tuple[str, ...]] = {} if entered is None else entered
        # ArtifactInstall entered
        self.installing: list[str] = [] if installing is None else installing
        self.can_roll_back: dict[str, bool] = {} if can_roll_back is None else can_roll_back
        self.reboot_need: dict[str, str] = {} if reboot_need is None else reboot_need
        # the system rebooted for these (install)
        self.rebooted: set[str] = set() if rebooted is None else rebooted


def _failures(outcome: Outcome) -> list[str]:
    # the engine's messages name their Component already
    return [str(result.message) for result in outcome.values() if not result.ok]


def deployment_steps(
    groups: Sequence[tuple[int, tuple[str, ...]]], retries: int, progress: Progress
) -> Generator[Step, Outcome, None]:
    """All steps of one deployment over ``groups`` (ascending order, Component keys)."""
    entered = progress.entered  # order group -> its Components that began
    installing = progress.installing  # ArtifactInstall entered: these need the error states
    can_roll_back = progress.can_roll_back
    reboot_need = progress.reboot_need
    rebooted = progress.rebooted  # the system rebooted for these in the install path

    def step(
        kind: str,
        name: str,
        group: int,
        phase: str,
        members: Sequence[str],
        opens: str | None = None,
    ) -> Step:
        names = {name} | ({opens} if opens else set())
        return Step(kind, name, group, phase, tuple(members), frozenset(names))

    for order, keys in groups:
        entered[order] = keys
        outcome = yield step("state", "Download", order, INSTALL, keys)
        if _failures(outcome):
            progress.failure = "; ".join(_failures(outcome))
            break
        outcome = yield step("query", "SupportsRollback", order, INSTALL, keys)
        can_roll_back.update({k: r.ok and r.value == "Yes" for k, r in outcome.items()})
        if _failures(outcome):
            progress.failure = "; ".join(_failures(outcome))
            break
        outcome = yield step("state", "ArtifactInstall", order, INSTALL, keys)
        installing.extend(keys)
        if _failures(outcome):
            progress.failure = "; ".join(_failures(outcome))
            break
        outcome = yield step("query", "NeedsArtifactReboot", order, INSTALL, keys)
        reboot_need.update({k: r.value or "No" for k, r in outcome.items() if r.ok})
        if _failures(outcome):
            progress.failure = "; ".join(_failures(outcome))
            break
        rebooting = [k for k in keys if reboot_need[k] == "Yes"]
        automatic = [k for k in keys if reboot_need[k] == "Automatic"]
        if rebooting:
            outcome = yield step("state", "ArtifactReboot", order, INSTALL, rebooting)
            if _failures(outcome):
                progress.failure = "; ".join(_failures(outcome))
                break
        if automatic:
            outcome = yield step("reboot", SYSTEM_REBOOT, order, INSTALL, automatic)
            rebooted.update(k for k, r in outcome.items() if r.ok)
            if _failures(outcome):
                progress.failure = "; ".join(_failures(outcome))
                break
        if rebooting or automatic:
            verifying = [k for k in keys if k in rebooting or k in automatic]
            outcome = yield step("state", "ArtifactVerifyReboot", order, INSTALL, verifying)
            if _failures(outcome):
                progress.failure = "; ".join(_failures(outcome))
                break

    if progress.failure is None:
        progress.phase = COMMIT
        for index, (order, keys) in enumerate(groups):
            opens = "ArtifactCommit" if index == 0 else None
            outcome = yield step("state", "ArtifactCommit", order, COMMIT, keys, opens)
            if _failures(outcome):
                progress.failure = "; ".join(_failures(outcome))
                break

    if progress.failure is not None:
        progress.phase = ROLLBACK
        yield from _rollback_path(
            groups, entered, installing, can_roll_back, reboot_need, rebooted, retries, progress
        )

    yield from _cleanup(groups, progress)


def recovery_steps(
    groups: Sequence[tuple[int, tuple[str, ...]]],
    touched: Collection[str],
    retries: int,
    progress: Progress,
    why: str,
) -> Generator[Step, Outcome, None]:
    """Where the journal stopped matching the steps above (``progress`` holds what the steps
    that still matched concluded): the rollback path for every Component that began
    ArtifactInstall or that any unmatched record names, since those may have been touched
    in ways no longer known, then Cleanup. A Component never asked SupportsRollback is asked
    first."""
    progress.failure = progress.failure or why
    progress.phase = ROLLBACK
    for order, keys in groups:
        mine = [k for k in keys if k in touched and k not in progress.installing]
        if mine:
            progress.entered.setdefault(order, keys)
            progress.installing.extend(mine)
            # whether the system rebooted for these is no longer known: a rollback reboot
            # with its verification is safer than an unverified rollback
            progress.rebooted.update(mine)
    for key in progress.installing:
        progress.inconsistent.pop(key, None)  # the rollback path below decides afresh
    opens: str | None = "ArtifactRollback"
    for order, keys in groups:
        unknown = [k for k in keys if k in progress.installing and k not in progress.can_roll_back]
        if unknown:
            outcome = yield Step(
                "query", "SupportsRollback", order, ROLLBACK, tuple(unknown),
                frozenset({"SupportsRollback"} | ({opens} if opens else set())),
            )
            opens = None
            progress.can_roll_back.update(
                {k: r.ok and r.value == "Yes" for k, r in outcome.items()}
            )
    yield from _rollback_path(
        groups, progress.entered, progress.installing, progress.can_roll_back,
        progress.reboot_need, progress.rebooted, retries, progress, opens,
    )
    yield from _cleanup(groups, progress)


def _cleanup(
    groups: Sequence[tuple[int, tuple[str, ...]]], progress: Progress
) -> Generator[Step, Outcome, None]:
    progress.phase = CLEANUP
    for order, _ in groups:
        if order in progress.entered:
            keys = progress.entered[order]
            yield Step("state", "Cleanup", order, CLEANUP, keys, frozenset({"Cleanup"}))


def _rollback_path(
    groups: Sequence[tuple[int, tuple[str, ...]]],
    entered: Mapping[int, tuple[str, ...]],
    installing: Sequence[str],
    can_roll_back: Mapping[str, bool],
    reboot_need: dict[str, str],
    rebooted: set[str],
    retries: int,
    progress: Progress,
    opens: str | None = "ArtifactRollback",
) -> Generator[Step, Outcome, None]:
    """SPEC 7.2: highest group that ran first; failures logged and ignored, except verify.

    A system reboot (``Automatic``) is repeated only for the Components it was done for in
    the install path: rebooting for an install that never got that far would restart the
    gateway for nothing, and verify a "rollback reboot" that undid no reboot.
    """

    def step(kind: str, name: str, group: int, members: Sequence[str]) -> Step:
        nonlocal opens
        names = {name} | ({opens} if opens else set())
        opens = None
        return Step(kind, name, group, ROLLBACK, tuple(members), frozenset(names))

    for order, keys in reversed(groups):
        if order not in entered:
            continue
        touched = [k for k in keys if k in installing]
        rolling = [k for k in touched if can_roll_back.get(k)]
        for key in touched:
            if not can_roll_back.get(key):
                progress.inconsistent[key] = "does not support rollback; left as installed"
        if rolling:
            outcome = yield step("state", "ArtifactRollback", order, rolling)
            for key, result in outcome.items():
                if not result.ok:
                    progress.inconsistent[key] = f"ArtifactRollback failed: {result.message}"
            unknown = [k for k in rolling if k not in reboot_need]
            if unknown:
                outcome = yield step("query", "NeedsArtifactReboot", order, unknown)
                reboot_need.update({k: r.value or "No" for k, r in outcome.items()})
            verifying = [
                k
                for k in rolling
                if reboot_need.get(k) == "Yes"
                or (reboot_need.get(k) == "Automatic" and k in rebooted)
            ]
            attempt = 0
            while verifying:
                rebooting = [k for k in verifying if reboot_need[k] == "Yes"]
                automatic = [k for k in verifying if reboot_need[k] == "Automatic"]
                if rebooting:
                    yield step("state", "ArtifactRollbackReboot", order, rebooting)
                if automatic:
                    yield step("reboot", SYSTEM_REBOOT, order, automatic)
                outcome = yield step("state", "ArtifactVerifyRollbackReboot", order, verifying)
                for key in verifying:
                    if outcome[key].ok:
                        progress.inconsistent.pop(key, None)
                verifying = [k for k in verifying if not outcome[k].ok]
                attempt += 1
                if verifying and attempt > retries:
                    for key in verifying:
                        progress.inconsistent[key] = (
                            f"ArtifactVerifyRollbackReboot still failing after {attempt} tries: "
                            f"{outcome[key].message}"
                        )
                    break
        if touched:
            yield step("state", "ArtifactFailure", order, touched)
