"""``status`` and ``history``: the journal told for people.

Gathering (``deployment_view``) is kept apart from rendering (``status_lines``, the HTML page
in ``report_html``), so every view, and a machine-readable one, reads the same data.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from dataclasses import dataclass
from datetime import datetime

from orchestrator_core.journal import DeploymentRow, EventRow, Journal
from orchestrator_core.replay import RECOVERY

WIDTH = 120  # every line a person reads fits in this many columns

# the journal's statuses as people say them
STATE_NAMES = {
    "in_progress": "in progress",
    "succeeded": "succeeded",
    "failed": "failed, rolled back",
    "inconsistent": "inconsistent",
}
PROGRESS_EVENT = "progress"  # value "DONE/TOTAL WHAT" (see progress_value), from ctx.progress
MIB = 1048576


@dataclass(frozen=True)
class StateRun:
    """One Component in one step (a state, a query or a system reboot)."""

    seq: int
    kind: str
    name: str
    group: int
    phase: str
    component: str
    started: float
    finished: float | None  # None: running now, or cut short by a crash
    ok: bool | None
    value: str | None
    message: str | None


@dataclass(frozen=True)
class Note:
    """A deployment-wide event: a stop, a rollback request, a reboot."""

    at: float
    text: str


@dataclass(frozen=True)
class DeploymentView:
    row: DeploymentRow
    state: str  # as people say it
    runs: list[StateRun]  # in the order they finished (running ones last)
    notes: list[Note]
    progress: dict[str, str]  # Component -> its latest progress ("12/40 MiB written")
    now: float
    active: bool  # a mender-orchestrator runs it right now (holds the lock)

    @property
    def running(self) -> list[StateRun]:
        """Steps entered and not finished, while a process runs the deployment."""
        if self.row.status != "in_progress" or not self.active:
            return []
        return [run for run in self.runs if run.finished is None]


def state_name(row: DeploymentRow, events: list[EventRow]) -> str:
    if row.status == "failed":
        for event in events:  # which came first: a request to roll back, or a failure
            if event.kind == "rollback-requested":
                return "rolled back"  # someone asked for it before anything failed
            if event.kind == "finish" and event.ok is False:
                break
        return "failed, rolled back"
    return STATE_NAMES.get(row.status, row.status.replace("_", " "))


def _note(event: EventRow) -> str | None:
    if event.kind == "stopped":
        return f"stopped before {event.value} ({event.message})"
    if event.kind == "rollback-requested":
        return "rollback requested"
    if event.kind == "spontaneous-reboot":
        return "the system rebooted without being asked to"
    if event.kind == RECOVERY:
        return (
            f"the journal stopped matching the steps ({event.message}): "
            "rolling back every Component it may have touched"
        )
    return None


def deployment_view(
    journal: Journal, row: DeploymentRow, *, active: bool, now: float | None = None
) -> DeploymentView:
    steps = {seq: (kind, name, grp, phase) for seq, kind, name, grp, phase in journal.steps(row.id)}
    events = journal.events(row.id)
    entered: dict[tuple[int, str], float] = {}
    finished: list[StateRun] = []
    notes: list[Note] = []
    progress: dict[str, str] = {}
    for event in events:
        if event.kind == PROGRESS_EVENT:
            progress[event.component] = event.value or ""
            continue
        if event.seq is None:
            text = _note(event)
            if text is not None:
                notes.append(Note(event.at, text))
            continue
        where = (event.seq, event.component)
        if event.kind == "enter":
            entered[where] = event.at
        elif event.kind == "finish":
            finished.append(_run(steps, event, entered.pop(where, event.at), event.at))
    unfinished = [
        _run(steps, EventRow(seq, component, "enter", None, None, None, at), at, None)
        for (seq, component), at in entered.items()
    ]
    return DeploymentView(
        row, state_name(row, events), finished + unfinished, notes, progress,
        time.time() if now is None else now, active,
    )


def _run(
    steps: dict[int, tuple[str, str, int, str]], event: EventRow, began: float, end: float | None
) -> StateRun:
    assert event.seq is not None  # only step events come here
    kind, name, group, phase = steps.get(event.seq, ("?", "?", 0, "?"))
    return StateRun(
        event.seq, kind, name, group, phase, event.component, began, end, event.ok,
        event.value, event.message,
    )


def find_deployment(journal: Journal, deployment: int | None) -> DeploymentRow | None:
    """Deployment ``deployment``, or else the one in progress, or else the last one."""
    if deployment is None:
        return journal.in_progress() or journal.latest()
    return next((row for row in journal.deployments() if row.id == deployment), None)


# --------------------------------------------------------------------------- text


def _time(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _fit(text: str, indent: str) -> list[str]:
    """``text`` wrapped to ``WIDTH`` (or ``COLUMNS``, when narrower), its continuation lines
    under ``indent``."""
    width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    return textwrap.wrap(
        text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True
    ) or [text]


def status_lines(
    journal: Journal, deployment: int | None = None, active: bool = False
) -> list[str]:
    """Deployment ``deployment``, or the one in progress, or else the last one; ``active``:
    a mender-orchestrator runs the one in progress right now."""
    row = find_deployment(journal, deployment)
    if row is None:
        if deployment is not None:
            return [f"no deployment {deployment} in the journal (`history` lists them)"]
        return ["no deployment has run on this System"]
    return render_status(deployment_view(journal, row, active=active))


def render_status(view: DeploymentView) -> list[str]:
    row = view.row
    lines = [
        f"deployment {row.id}: {row.manifest_name}  status {view.state}",
        f"  started {_time(row.started)}  finished {_time(row.finished)}",
    ]
    if row.summary:
        lines.extend(_fit(f"  {row.summary}", "    "))
    for component in row.plan["components"]:
        if component["skip_reason"]:
            lines.extend(
                _fit(f"  {component['key']}: left untouched, {component['skip_reason']}", "    ")
            )
    for run in view.running:
        lines.append(running_line(run, view.now, view.progress.get(run.component)))
    # columns as wide as this deployment needs, so that a line fits in WIDTH
    widths = (
        max((len(run.name) for run in view.runs), default=0),
        max((len(run.component) for run in view.runs), default=0),
    )
    timeline = [(note.at, [f"  {note.text}"]) for note in view.notes]
    for run in view.runs:
        if run.finished is not None:
            timeline.append((run.finished, _finished_lines(run, widths)))
        elif not view.running:
            timeline.append((run.started, [_unfinished_line(run, widths)]))
    for _, texts in sorted(timeline, key=lambda item: item[0]):
        lines.extend(texts)
    return lines


def progress_value(done: int, total: int | None, what: str) -> str:
    """A driver's progress report as the journal keeps it: ``DONE/TOTAL WHAT`` (``?``: no
    total known)."""
    return f"{done}/{'?' if total is None else total} {what}"


def progress_shown(value: str) -> str:
    """A journaled progress value as people read it: bytes in KiB or MiB, with the share done
    ("48.0/64.0 KiB flashed (75%)")."""
    try:
        counts, what = value.split(" ", 1)
        done_text, total_text = counts.split("/")
        done, total = int(done_text), None if total_text == "?" else int(total_text)
    except ValueError:
        return value  # not in the journal's shape: shown as it is
    share = f" ({100 * done // total}%)" if total else ""
    if what == "bytes" or what.startswith("bytes "):
        rest = what[len("bytes"):]
        unit, scale = next(
            (unit, scale) for unit, scale in (("MiB", MIB), ("KiB", 1024), ("B", 1))
            if max(done, total or 0) >= scale or scale == 1
        )
        amount = f"{done / scale:.1f}" if scale > 1 else str(done)
        if total is not None:
            amount += f"/{total / scale:.1f}" if scale > 1 else f"/{total}"
        return f"{amount} {unit}{rest}{share}"
    return f"{done}/{'?' if total is None else total} {what}{share}"


def running_line(run: StateRun, now: float, progress: str | None) -> str:
    """The step running now, with how long it has run (and its progress, when reported)."""
    line = (
        f"  running now: group {run.group} {run.phase} {run.name} {run.component} "
        f"for {max(0.0, now - run.started):.1f}s"
    )
    return f"{line}, {progress_shown(progress)}" if progress else line


def _head(run: StateRun, widths: tuple[int, int]) -> str:
    name, component = widths
    return (
        f"  group {run.group:>3} {run.phase:<8} {run.name:<{name}} {run.component:<{component}}"
    )


def _finished_lines(run: StateRun, widths: tuple[int, int]) -> list[str]:
    assert run.finished is not None
    head = f"{_head(run, widths)} {run.finished - run.started:6.2f}s  "
    if run.ok:
        answer = f" = {run.value}" if run.value and run.kind == "query" else ""
        return [f"{head}ok{answer}"]
    return _fit(f"{head}FAILED: {run.message}", " " * 8)


def _unfinished_line(run: StateRun, widths: tuple[int, int]) -> str:
    if run.kind == "reboot":
        return f"{_head(run, widths)}  waiting for the system to reboot"
    return f"{_head(run, widths)}  did not finish (interrupted)"


def history_lines(journal: Journal) -> list[str]:
    lines = []
    for row in journal.deployments():
        state = state_name(row, journal.events(row.id))
        lines.append(
            f"{row.id:>4}  {_time(row.started)}  {_time(row.finished)}  {state:<20} "
            f"{row.manifest_name}"
        )
    return lines or ["no deployment has run on this System"]
