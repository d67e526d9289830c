"""SPEC 7's order of steps, driven with scripted outcomes (the generator does no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator_core.sequence import Progress, Result, Step, deployment_steps, recovery_steps

Answer = Callable[[Step, str], Result]


def ok(step: Step, key: str) -> Result:
    if step.name == "SupportsRollback":
        return Result(True, "Yes")
    if step.name == "NeedsArtifactReboot":
        return Result(True, "Yes")
    return Result(True)


def walk(groups: list[tuple[int, tuple[str, ...]]], answer: Answer, retries: int = 3
         ) -> tuple[list[tuple[str, int, tuple[str, ...]]], Progress]:
    progress = Progress()
    steps = deployment_steps(groups, retries, progress)
    seen = []
    try:
        step = next(steps)
        while True:
            seen.append((step.name, step.group, step.members))
            step = steps.send({key: answer(step, key) for key in step.members})
    except StopIteration:
        pass
    return seen, progress


def failing(state: str, key: str, base: Answer = ok) -> Answer:
    def answer(step: Step, member: str) -> Result:
        if step.name == state and member == key:
            return Result(False, None, f"{state} broke")
        return base(step, member)
    return answer


def reboot(answer_by_key: dict[str, str], base: Answer = ok) -> Answer:
    def answer(step: Step, member: str) -> Result:
        if step.name == "NeedsArtifactReboot":
            return Result(True, answer_by_key.get(member, "No"))
        return base(step, member)
    return answer


GROUPS = [(10, ("a",)), (20, ("b", "c")), (30, ("d",))]


def test_normal_path_groups_then_commit_then_cleanup() -> None:
    seen, progress = walk(GROUPS, reboot({"a": "Yes", "b": "Automatic", "c": "No"}))
    assert progress.failure is None
    assert seen == [
        ("Download", 10, ("a",)),
        ("SupportsRollback", 10, ("a",)),
        ("ArtifactInstall", 10, ("a",)),
        ("NeedsArtifactReboot", 10, ("a",)),
        ("ArtifactReboot", 10, ("a",)),
        ("ArtifactVerifyReboot", 10, ("a",)),
        ("Download", 20, ("b", "c")),
        ("SupportsRollback", 20, ("b", "c")),
        ("ArtifactInstall", 20, ("b", "c")),
        ("NeedsArtifactReboot", 20, ("b", "c")),
        ("SystemReboot", 20, ("b",)),
        ("ArtifactVerifyReboot", 20, ("b",)),
        ("Download", 30, ("d",)),
        ("SupportsRollback", 30, ("d",)),
        ("ArtifactInstall", 30, ("d",)),
        ("NeedsArtifactReboot", 30, ("d",)),
        ("ArtifactCommit", 10, ("a",)),
        ("ArtifactCommit", 20, ("b", "c")),
        ("ArtifactCommit", 30, ("d",)),
        ("Cleanup", 10, ("a",)),
        ("Cleanup", 20, ("b", "c")),
        ("Cleanup", 30, ("d",)),
    ]


def test_download_failure_in_lowest_group_only_cleans_up() -> None:
    seen, progress = walk(GROUPS, failing("Download", "a"))
    assert progress.failure == "Download broke"
    assert seen == [("Download", 10, ("a",)), ("Cleanup", 10, ("a",))]
    assert progress.inconsistent == {}


def test_install_failure_in_middle_group_rolls_back_every_group_in_reverse() -> None:
    seen, progress = walk(GROUPS, failing("ArtifactInstall", "c"))
    after_failure = seen[seen.index(("ArtifactInstall", 20, ("b", "c"))) + 1:]
    assert after_failure == [
        ("ArtifactRollback", 20, ("b", "c")),
        # never asked in group 20 because its install failed: asked before rebooting back
        ("NeedsArtifactReboot", 20, ("b", "c")),
        ("ArtifactRollbackReboot", 20, ("b", "c")),
        ("ArtifactVerifyRollbackReboot", 20, ("b", "c")),
        ("ArtifactFailure", 20, ("b", "c")),
        ("ArtifactRollback", 10, ("a",)),
        ("ArtifactRollbackReboot", 10, ("a",)),
        ("ArtifactVerifyRollbackReboot", 10, ("a",)),
        ("ArtifactFailure", 10, ("a",)),
        ("Cleanup", 10, ("a",)),
        ("Cleanup", 20, ("b", "c")),
    ]
    assert progress.inconsistent == {}


def test_commit_failure_rolls_back_committed_groups_too() -> None:
    seen, progress = walk(GROUPS, reboot({}, failing("ArtifactCommit", "d")))
    tail = seen[seen.index(("ArtifactCommit", 30, ("d",))) + 1:]
    assert tail == [
        ("ArtifactRollback", 30, ("d",)),
        ("ArtifactFailure", 30, ("d",)),
        ("ArtifactRollback", 20, ("b", "c")),
        ("ArtifactFailure", 20, ("b", "c")),
        ("ArtifactRollback", 10, ("a",)),
        ("ArtifactFailure", 10, ("a",)),
        ("Cleanup", 10, ("a",)),
        ("Cleanup", 20, ("b", "c")),
        ("Cleanup", 30, ("d",)),
    ]


def test_no_rollback_support_skips_rollback_states_and_reports_inconsistent() -> None:
    def answer(step: Step, key: str) -> Result:
        if step.name == "SupportsRollback":
            return Result(True, "No")
        return failing("ArtifactVerifyReboot", "a", reboot({"a": "Yes"}))(step, key)

    seen, progress = walk([(10, ("a",))], answer)
    assert seen[-2:] == [("ArtifactFailure", 10, ("a",)), ("Cleanup", 10, ("a",))]
    assert "ArtifactRollback" not in [name for name, _, _ in seen]
    assert set(progress.inconsistent) == {"a"}


def test_verify_rollback_reboot_retried_then_inconsistent() -> None:
    base = failing("ArtifactInstall", "a", reboot({"a": "Yes"}))
    seen, progress = walk([(10, ("a",))], failing("ArtifactVerifyRollbackReboot", "a", base),
                          retries=2)
    names = [name for name, _, _ in seen]
    assert names == [
        "Download", "SupportsRollback", "ArtifactInstall", "ArtifactRollback",
        "NeedsArtifactReboot",
        "ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot",
        "ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot",
        "ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot",
        "ArtifactFailure", "Cleanup",
    ]
    assert "a" in progress.inconsistent
    assert "after 3 tries" in progress.inconsistent["a"]


def test_verify_rollback_reboot_recovering_on_retry_is_consistent() -> None:
    tries = {"n": 0}

    def answer(step: Step, key: str) -> Result:
        if step.name == "ArtifactVerifyRollbackReboot":
            tries["n"] += 1
            return Result(tries["n"] >= 2, None, "not yet")
        return failing("ArtifactCommit", "a")(step, key)

    _, progress = walk([(10, ("a",))], answer)
    assert progress.inconsistent == {}
    assert tries["n"] == 2


def test_only_groups_that_started_are_rolled_back_and_cleaned() -> None:
    seen, _ = walk(GROUPS, failing("Download", "b"))
    groups_touched_after = {g for _, g, _ in seen[seen.index(("Download", 20, ("b", "c"))):]}
    assert 30 not in groups_touched_after
    assert seen[-2:] == [("Cleanup", 10, ("a",)), ("Cleanup", 20, ("b", "c"))]
    # group 20 only downloaded: no error states for it, just Cleanup
    assert ("ArtifactFailure", 20, ("b", "c")) not in seen


def test_stop_names_open_the_passes() -> None:
    """--stop-before ArtifactRollback must stop at the rollback path whatever its first state."""

    def answer(step: Step, key: str) -> Result:
        if step.name == "SupportsRollback":
            return Result(True, "No")
        return failing("ArtifactCommit", "b", reboot({}))(step, key)

    progress = Progress()
    steps = deployment_steps([(1, ("a",)), (2, ("b",))], 3, progress)
    opened: dict[str, str] = {}
    try:
        step = next(steps)
        while True:
            for name in step.stop_names - {step.name}:
                opened[name] = f"{step.name}@{step.group}"
            step = steps.send({k: answer(step, k) for k in step.members})
    except StopIteration:
        pass
    # the rollback path of a System without rollback support starts with ArtifactFailure
    assert opened == {"ArtifactRollback": "ArtifactFailure@2"}


def test_rollback_reboots_the_system_where_the_install_path_did() -> None:
    """Group 20 rebooted the system in the install path, so its rollback reboots it again."""
    answer = reboot({"a": "Automatic", "b": "Automatic", "d": "Yes"},
                    failing("ArtifactVerifyReboot", "d"))
    seen, progress = walk([(10, ("a",)), (20, ("b",)), (30, ("d",))], answer)
    tail = seen[seen.index(("ArtifactVerifyReboot", 30, ("d",))) + 1:]
    assert tail == [
        ("ArtifactRollback", 30, ("d",)),
        ("ArtifactRollbackReboot", 30, ("d",)),
        ("ArtifactVerifyRollbackReboot", 30, ("d",)),
        ("ArtifactFailure", 30, ("d",)),
        ("ArtifactRollback", 20, ("b",)),
        ("SystemReboot", 20, ("b",)),
        ("ArtifactVerifyRollbackReboot", 20, ("b",)),
        ("ArtifactFailure", 20, ("b",)),
        ("ArtifactRollback", 10, ("a",)),
        ("SystemReboot", 10, ("a",)),
        ("ArtifactVerifyRollbackReboot", 10, ("a",)),
        ("ArtifactFailure", 10, ("a",)),
        ("Cleanup", 10, ("a",)),
        ("Cleanup", 20, ("b",)),
        ("Cleanup", 30, ("d",)),
    ]
    assert progress.inconsistent == {}


def test_no_system_reboot_in_rollback_where_the_install_path_never_reached_it() -> None:
    """b's ArtifactReboot failed before the group's system reboot for c: neither b's group
    nor d's (whose install failed before NeedsArtifactReboot) reboots the system."""
    answer = reboot({"a": "Automatic", "b": "Yes", "c": "Automatic", "d": "Automatic"},
                    failing("ArtifactReboot", "b"))
    seen, progress = walk(GROUPS, answer)
    tail = seen[seen.index(("ArtifactReboot", 20, ("b",))) + 1:]
    assert tail == [
        ("ArtifactRollback", 20, ("b", "c")),
        ("ArtifactRollbackReboot", 20, ("b",)),
        ("ArtifactVerifyRollbackReboot", 20, ("b",)),
        ("ArtifactFailure", 20, ("b", "c")),
        ("ArtifactRollback", 10, ("a",)),
        ("SystemReboot", 10, ("a",)),
        ("ArtifactVerifyRollbackReboot", 10, ("a",)),
        ("ArtifactFailure", 10, ("a",)),
        ("Cleanup", 10, ("a",)),
        ("Cleanup", 20, ("b", "c")),
    ]
    assert progress.inconsistent == {}

    # an install that failed: the answer Automatic, asked in the rollback path, reboots nothing
    seen, _ = walk([(10, ("a",))], reboot({"a": "Automatic"}, failing("ArtifactInstall", "a")))
    assert [name for name, _, _ in seen] == [
        "Download", "SupportsRollback", "ArtifactInstall", "ArtifactRollback",
        "NeedsArtifactReboot", "ArtifactFailure", "Cleanup",
    ]


def test_a_system_reboot_that_failed_is_not_repeated_in_the_rollback_path() -> None:
    answer = reboot({"a": "Automatic"}, failing("SystemReboot", "a"))
    seen, _ = walk([(10, ("a",))], answer)
    assert [name for name, _, _ in seen] == [
        "Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
        "SystemReboot", "ArtifactRollback", "ArtifactFailure", "Cleanup",
    ]


def test_recovery_rolls_back_what_the_matching_steps_installed_and_what_records_name() -> None:
    """After the journal stopped matching: ``a`` had installed (known from the steps that
    matched), ``b`` is only named by records past the mismatch, so its SupportsRollback and
    NeedsArtifactReboot answers are asked again."""
    groups = [(10, ("a",)), (20, ("b",)), (30, ("c",))]
    progress = Progress(entered={10: ("a",), 20: ("b",)}, installing=["a"],
                        can_roll_back={"a": True}, reboot_need={"a": "Yes"})
    steps = recovery_steps(groups, {"b"}, 3, progress, "position 7 does not match")
    seen = []
    try:
        step = next(steps)
        while True:
            seen.append((step.name, step.group, step.members, sorted(step.stop_names)))
            step = steps.send({key: ok(step, key) for key in step.members})
    except StopIteration:
        pass
    assert seen == [
        ("SupportsRollback", 20, ("b",), ["ArtifactRollback", "SupportsRollback"]),
        ("ArtifactRollback", 20, ("b",), ["ArtifactRollback"]),
        ("NeedsArtifactReboot", 20, ("b",), ["NeedsArtifactReboot"]),
        ("ArtifactRollbackReboot", 20, ("b",), ["ArtifactRollbackReboot"]),
        ("ArtifactVerifyRollbackReboot", 20, ("b",), ["ArtifactVerifyRollbackReboot"]),
        ("ArtifactFailure", 20, ("b",), ["ArtifactFailure"]),
        ("ArtifactRollback", 10, ("a",), ["ArtifactRollback"]),
        ("ArtifactRollbackReboot", 10, ("a",), ["ArtifactRollbackReboot"]),
        ("ArtifactVerifyRollbackReboot", 10, ("a",), ["ArtifactVerifyRollbackReboot"]),
        ("ArtifactFailure", 10, ("a",), ["ArtifactFailure"]),
        ("Cleanup", 10, ("a",), ["Cleanup"]),
        ("Cleanup", 20, ("b",), ["Cleanup"]),
    ]
    assert progress.failure == "position 7 does not match"
    assert progress.inconsistent == {}
