"""``status`` and ``history``: the journal told for people."""

from __future__ import annotations

from datetime import datetime

from orchestrator_core.journal import DeploymentRow, EventRow, Journal
from orchestrator_core.progress import describe, parse_journal_value


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
    reported: dict[tuple[int, str], EventRow] = {}  # the last ctx.progress of a running state
    finished: set[tuple[int, str]] = set()
    events = journal.events(row.id)
    width = max((len(e.component) for e in events), default=0)
    for event in events:
        if event.seq is None:
            if event.kind == "stopped":
                lines.append(f"  {_time(event.at)}  stopped before {event.value} ({event.message})")
            elif event.kind == "rollback-requested":
                lines.append(f"  {_time(event.at)}  rollback requested")
            continue
        kind, name, group, phase = steps.get(event.seq, ("?", "?", 0, "?"))
        if event.kind == "enter":
            entered[(event.seq, event.component)] = event.at
            continue
        if event.kind == "progress":
            reported[(event.seq, event.component)] = event
            continue
        began = entered.get((event.seq, event.component), event.at)
        finished.add((event.seq, event.component))
        result = "ok" if event.ok else f"FAILED: {event.message}"
        answer = f" = {event.value}" if event.value and kind == "query" else ""
        lines.append(
            f"  {_time(event.at)}  group {group:>3}  {phase:<8} {name:<28} "
            f"{event.component:<{width}} {event.at - began:7.2f}s  {result}{answer}"
        )
    if row.finished is None:
        running = {k: at for k, at in entered.items() if k not in finished}
        lines.extend(_running_lines(steps, running, reported, width))
    return lines


def _running_lines(
    steps: dict[int, tuple[str, str, int, str]],
    running: dict[tuple[int, str], float],
    reported: dict[tuple[int, str], EventRow],
    width: int,
) -> list[str]:
    """A line per state entered and not finished, with the driver's last ``ctx.progress``."""
    lines = []
    for (seq, component), began in running.items():
        _kind, name, group, phase = steps.get(seq, ("?", "?", 0, "?"))
        report = reported.get((seq, component))
        doing = "not finished"
        if report is not None and report.value:
            done, total = parse_journal_value(report.value)
            doing += f", {describe(done, total, report.message or '')} at {_time(report.at)}"
        lines.append(
            f"  {_time(began)}  group {group:>3}  {phase:<8} {name:<28} "
            f"{component:<{width}} {'':>8}  {doing}"
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
