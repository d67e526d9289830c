"""``status`` and ``history``: the journal told for people."""

from __future__ import annotations

from datetime import datetime

from orchestrator_core.journal import DeploymentRow, Journal
from orchestrator_core.replay import RECOVERY


def _time(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def status_lines(journal: Journal) -> list[str]:
    """The deployment in progress, or else the last one."""
    row = journal.in_progress() or journal.latest()
    if row is None:
        return ["no deployment has run on this System"]
    return _deployment_lines(journal, row)


def _deployment_lines(journal: Journal, row: DeploymentRow) -> list[str]:
    lines = [
        f"deployment {row.id}: {row.manifest_name}  status {row.status}",
        f"  started {_time(row.started)}  finished {_time(row.finished)}",
    ]
    if row.summary:
        lines.append(f"  {row.summary}")
    skipped = [c for c in row.plan["components"] if c["skip_reason"]]
    for component in skipped:
        lines.append(f"  {component['key']}: left untouched, {component['skip_reason']}")
    steps = {
        seq: (kind, name, group, phase) for seq, kind, name, group, phase in journal.steps(row.id)
    }
    entered: dict[tuple[int, str], float] = {}
    events = journal.events(row.id)
    width = max((len(e.component) for e in events), default=0)
    for event in events:
        if event.seq is None:
            if event.kind == "stopped":
                lines.append(f"  {_time(event.at)}  stopped before {event.value} ({event.message})")
            elif event.kind == "rollback-requested":
                lines.append(f"  {_time(event.at)}  rollback requested")
            elif event.kind == RECOVERY:
                lines.append(
                    f"  {_time(event.at)}  the journal stopped matching the steps "
                    f"({event.message}): rolling back every Component it may have touched"
                )
            continue
        kind, name, group, phase = steps.get(event.seq, ("?", "?", 0, "?"))
        if event.kind == "enter":
            entered[(event.seq, event.component)] = event.at
            continue
        began = entered.get((event.seq, event.component), event.at)
        result = "ok" if event.ok else f"FAILED: {event.message}"
        answer = f" = {event.value}" if event.value and kind == "query" else ""
        lines.append(
            f"  {_time(event.at)}  group {group:>3}  {phase:<8} {name:<28} "
            f"{event.component:<{width}} {event.at - began:7.2f}s  {result}{answer}"
        )
    return lines


def history_lines(journal: Journal) -> list[str]:
    lines = []
    for row in journal.deployments():
        lines.append(
            f"{row.id:>4}  {_time(row.started)}  {_time(row.finished)}  {row.status:<12} "
            f"{row.manifest_name}"
        )
    return lines or ["no deployment has run on this System"]
