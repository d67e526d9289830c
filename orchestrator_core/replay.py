"""Replay that cannot be fooled: before the engine takes a recorded outcome for the step the
sequence gives at a journal position, that position's recorded step must be the same step
(kind, name, order group, phase and members). Outcomes replayed by position alone let a
changed configuration or an updated program read one step's outcome as another's.

Where a ``rollback`` meets a position that does not match, the run switches to
``sequence.recovery_steps``, numbered from past the last recorded position, and notes the
switch in the journal (a deployment-wide ``recovery`` event), so that every later run
switches at the same place and replays the recovery itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

from orchestrator_core.errors import JournalMismatch
from orchestrator_core.journal import EventRow, StepIdentity
from orchestrator_core.sequence import Step

RECOVERY = "recovery"  # event value "<position> <first recovery position>", message: why


class Switch(NamedTuple):
    at: int  # the first position that did not match
    base: int  # where the recovery steps are numbered from
    why: str


def identity(step: Step) -> StepIdentity:
    return StepIdentity(step.kind, step.name, step.group, step.phase, step.members)


def _told(found: StepIdentity) -> str:
    members = "unrecorded members" if found.members is None else ", ".join(found.members)
    return f"{found.kind} {found.name} of order group {found.group} ({found.phase}; {members})"


def mismatch(
    seq: int,
    step: Step | None,
    identities: Mapping[int, StepIdentity],
    recorded: Mapping[int, Mapping[str, list[EventRow]]],
) -> str | None:
    """Why position ``seq`` of the journal does not hold ``step`` (None: the sequence ended
    there), or None when it does or holds nothing yet."""
    found = identities.get(seq)
    components = recorded.get(seq, {})
    if step is None or (found is None and not components):
        # where replay ends, so must the journal: steps are recorded in order, without gaps
        beyond = min((s for s in {*identities, *recorded} if s >= seq), default=None)
        if beyond is None:
            return None
        if step is None:
            return f"the journal records steps from position {beyond} on, past the plan's last step"
        return (
            f"the journal records steps from position {beyond} on but none at position {seq}, "
            f"where the plan gives {_told(identity(step))}"
        )
    expected = identity(step)
    if found is None:
        return (
            f"position {seq} holds events of {', '.join(sorted(components))} but no record "
            f"of its step; the plan gives {_told(expected)}"
        )
    same_members = found.members is None or found.members == expected.members
    if tuple(found[:4]) != tuple(expected[:4]) or not same_members:
        return (
            f"position {seq} was recorded as {_told(found)}, but the plan gives "
            f"{_told(expected)}"
        )
    strangers = sorted(set(components) - set(step.members))
    if strangers:
        return (
            f"position {seq} holds events of {', '.join(strangers)}, not members of "
            f"{_told(expected)}"
        )
    return None


def switches(events: Iterable[EventRow]) -> list[Switch]:
    """The recovery switches earlier runs made, in order."""
    found = []
    for event in events:
        if event.kind == RECOVERY:
            try:
                at, base = (int(part) for part in str(event.value).split())
            except ValueError:
                raise JournalMismatch(
                    f"the journal's recovery record {event.value!r} is not two positions"
                ) from None
            found.append(Switch(at, base, event.message or ""))
    return found


def after(
    identities: Mapping[int, StepIdentity], recorded: Mapping[int, object], seq: int
) -> int:
    """The first position past everything the journal records, and not before ``seq``."""
    return max([seq - 1, *identities, *recorded]) + 1


def touched(
    recorded: Mapping[int, Mapping[str, list[EventRow]]], switch: Switch, keys: Collection[str]
) -> set[str]:
    """The Components of ``keys`` that records from the unmatched position on name: what
    happened to them is no longer known, so they may have been touched."""
    return {
        key
        for seq, components in recorded.items()
        if switch.at <= seq < switch.base
        for key in components
        if key in keys
    }
