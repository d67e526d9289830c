"""``report``: one deployment as a self-contained HTML page, for a field engineer's ticket.

Everything is inline (CSS, an SVG timeline, no script, no external resource), so the file
opens anywhere and keeps. It renders the same ``DeploymentView`` as ``status``.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from orchestrator_core.report import DeploymentView, StateRun

TAIL_BYTES = 4096  # at most this much of a failed call's message (its stderr tail) is shown
ROW_HEIGHT, LABEL_WIDTH, CHART_WIDTH = 30, 320, 860
REBOOTS = ("ArtifactReboot", "ArtifactRollbackReboot")  # a Component's own reboot
PHASE_COLOURS = {
    "install": "#3b82f6",
    "commit": "#16a34a",
    "rollback": "#f59e0b",
    "cleanup": "#94a3b8",
}

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { border: 1px solid #d1d5db; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; }
.succeeded { background: #16a34a; } .failed { background: #dc2626; }
.inconsistent { background: #7c3aed; } .progress { background: #2563eb; }
.bad { color: #dc2626; font-weight: 600; } .muted { color: #6b7280; }
pre { background: #f9fafb; border: 1px solid #e5e7eb; padding: 8px; white-space: pre-wrap;
      max-width: 1100px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
            vertical-align: -1px; }
"""


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def version_before(component: dict[str, Any]) -> str:
    provides = component["provides"]
    for key in (f"rootfs-image.{component['interface']}.version", "rootfs-image.version"):
        if key in provides:
            return str(provides[key])
    return "?"


def version_after(view: DeploymentView, component: dict[str, Any]) -> str:
    """What the Component runs after the deployment, as far as the journal tells."""
    before = version_before(component)
    if component["skip_reason"] or view.row.status in ("failed",):
        return before
    if view.row.status == "succeeded":
        return str(component["artifact"]["name"])
    if view.row.status == "inconsistent":
        failed_back = any(
            run.component == component["key"] and run.phase == "rollback" and run.ok is False
            for run in view.runs
        )
        return "unknown (its rollback failed)" if failed_back else before
    return "(deployment in progress)"


def _state_class(view: DeploymentView) -> str:
    return {"succeeded": "succeeded", "in_progress": "progress"}.get(
        view.row.status, "inconsistent" if view.row.status == "inconsistent" else "failed"
    )


def render(view: DeploymentView) -> str:
    row = view.row
    title = f"Deployment {row.id}: {row.manifest_name} ({view.state})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>Deployment {row.id}: {escape(row.manifest_name)} "
        f'<span class="state {_state_class(view)}">{escape(view.state)}</span></h1>',
        f'<div class="muted">system_type {escape(str(row.plan.get("system_type", "?")))}; '
        f"started {_when(row.started)}, finished {_when(row.finished)}</div>",
    ]
    if row.summary:
        parts.append(f"<p>{escape(row.summary)}</p>")
    parts += _timeline(view)
    parts += _versions(view)
    parts += _plan(view)
    parts += _failures(view)
    parts += _states(view)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _in_order(view: DeploymentView) -> list[dict[str, Any]]:
    """The plan's Components by order group; those left untouched last."""
    return sorted(
        view.row.plan["components"], key=lambda c: (c["skip_reason"] is not None, c["order"])
    )


def _timeline(view: DeploymentView) -> list[str]:
    components = [c["key"] for c in _in_order(view)]
    start = view.row.started
    end = view.row.finished or view.now
    for run in view.runs:
        end = max(end, run.finished or view.now)
    span = max(end - start, 0.001)

    def x(at: float) -> float:
        return LABEL_WIDTH + (at - start) / span * CHART_WIDTH

    height = ROW_HEIGHT * (len(components) + 1) + 20
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_WIDTH + CHART_WIDTH + 20}" '
        f'height="{height}" role="img" aria-label="timeline" font-size="12" '
        f'font-family="system-ui, sans-serif">'
    ]
    rolled = [run.started for run in view.runs if run.phase == "rollback"]
    if rolled:
        begin = x(min(rolled))
        svg.append(
            f'<rect x="{begin:.1f}" y="0" width="{LABEL_WIDTH + CHART_WIDTH - begin:.1f}" '
            f'height="{height - 10}" fill="#fef3c7"><title>the rollback path</title></rect>'
            f'<text x="{begin + 4:.1f}" y="{height - 14}" fill="#92400e">rollback</text>'
        )
    for index, key in enumerate(components):
        top = ROW_HEIGHT * index + 12
        svg.append(
            f'<text x="4" y="{top + 20}">{escape(key)}</text>'
            f'<line x1="{LABEL_WIDTH}" x2="{LABEL_WIDTH + CHART_WIDTH}" y1="{top + 28}" '
            f'y2="{top + 28}" stroke="#e5e7eb"/>'
        )
        for run in (r for r in view.runs if r.component == key):
            svg.append(_bar(run, x, top, view.now))
            if run.name in REBOOTS:
                at = x(run.started)
                svg.append(
                    f'<path d="M{at - 5:.1f} {top + 16} l5 -6 l5 6 l-5 6 z" fill="#111827">'
                    f"<title>{escape(run.name)}</title></path>"
                )
    for index, key in enumerate(components):
        top = ROW_HEIGHT * index + 12
        for run in (r for r in view.runs if r.component == key and r.ok is False):
            svg.append(_failure_mark(run, x, top))
    for run in view.runs:
        if run.kind == "reboot":
            at = x(run.started)
            svg.append(
                f'<line x1="{at:.1f}" x2="{at:.1f}" y1="0" y2="{height - 10}" stroke="#111827" '
                f'stroke-dasharray="4 3"><title>{escape(run.name)} ({escape(run.component)})'
                f"</title></line>"
            )
    reboots = sorted({round(x(run.started), 1) for run in view.runs if run.kind == "reboot"})
    for at in reboots:
        svg.append(f'<text x="{at + 3:.1f}" y="{height - 2}">reboot</text>')
    axis = ROW_HEIGHT * len(components) + 26
    svg.append(
        f'<text x="{LABEL_WIDTH}" y="{axis}" class="muted">{_when(start)}</text>'
        f'<text x="{LABEL_WIDTH + CHART_WIDTH}" y="{axis}" text-anchor="end">'
        f"+{span:.1f}s</text></svg>"
    )
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{phase}</span>'
        for phase, colour in PHASE_COLOURS.items()
    )
    return [
        "<h2>Timeline</h2>",
        f'<div class="legend">{legend}<span><i style="background:#dc2626"></i>failed</span>'
        "<span>◆ the Component reboots</span><span>dashed line: system reboot</span>"
        "<span>shaded: the rollback path</span></div>",
        *svg,
    ]


def _bar(run: StateRun, x: Any, top: int, now: float) -> str:
    left = x(run.started)
    width = max(x(run.finished or now) - left, 2.0)
    colour = "#dc2626" if run.ok is False else PHASE_COLOURS.get(run.phase, "#6b7280")
    result = "failed" if run.ok is False else "ok" if run.ok else "did not finish"
    took = f"{(run.finished or now) - run.started:.2f}s"
    title = f"{run.name} ({run.phase}, group {run.group}): {result} in {took}"
    return (
        f'<rect x="{left:.1f}" y="{top + 8}" width="{width:.1f}" height="16" rx="2" '
        f'fill="{colour}" stroke="#fff" stroke-width="0.5"><title>{escape(title)}</title></rect>'
    )


def _failure_mark(run: StateRun, x: Any, top: int) -> str:
    """A failed state, named above its bar (drawn last, so no bar hides it)."""
    at = x(run.started)
    anchor = "end" if at > LABEL_WIDTH + CHART_WIDTH / 2 else "start"
    return (
        f'<text x="{at:.1f}" y="{top + 6}" fill="#dc2626" font-weight="bold" '
        f'text-anchor="{anchor}" paint-order="stroke" stroke="#fff" stroke-width="3">'
        f"✗ {escape(run.name)} failed</text>"
    )


def _versions(view: DeploymentView) -> list[str]:
    rows = [
        "<h2>Versions</h2><table><tr><th>Component</th><th>interface</th><th>before</th>"
        "<th>target</th><th>after</th></tr>"
    ]
    for component in _in_order(view):
        before = version_before(component)
        after = version_after(view, component)
        changed = "bad" if after.startswith("unknown") else ""
        rows.append(
            f"<tr><td>{escape(component['key'])}</td><td>{escape(component['interface'])}</td>"
            f"<td>{escape(before)}</td><td>{escape(str(component['artifact']['name']))}</td>"
            f'<td class="{changed}">{escape(after)}</td></tr>'
        )
    return [*rows, "</table>"]


def _plan(view: DeploymentView) -> list[str]:
    lines = [f"<h2>Plan</h2><p>Manifest {escape(view.row.manifest_name)}, order groups in turn:"]
    lines.append("</p><table><tr><th>order group</th><th>Component</th><th>Artifact</th></tr>")
    for component in _in_order(view):
        group = "left untouched" if component["skip_reason"] else str(component["order"])
        what = escape(str(component["artifact"]["name"]))
        if component["skip_reason"]:
            what += f' <span class="muted">({escape(component["skip_reason"])})</span>'
        lines.append(
            f"<tr><td>{group}</td><td>{escape(component['key'])}</td><td>{what}</td></tr>"
        )
    path = _rollback_path(view)
    if path:
        lines.append(f"</table><p>Rollback path: {escape(' → '.join(path))}</p>")
    else:
        lines.append("</table>")
    return lines


def _rollback_path(view: DeploymentView) -> list[str]:
    path: list[str] = []
    for run in sorted(view.runs, key=lambda r: r.seq):
        if run.phase == "rollback":
            step = f"{run.name} (group {run.group})"
            if step not in path:
                path.append(step)
    return path


def _failures(view: DeploymentView) -> list[str]:
    failed = [run for run in view.runs if run.ok is False]
    if not failed:
        return []
    parts = ["<h2>What failed, and what the Interfaces said</h2>"]
    for run in failed:
        message = run.message or ""
        if len(message) > TAIL_BYTES:
            message = "…" + message[-TAIL_BYTES:]
        parts.append(
            f'<p class="bad">{escape(run.component)}: {escape(run.name)} ({escape(run.phase)}, '
            f"group {run.group}) failed</p><pre>{escape(message)}</pre>"
        )
    return parts


def _states(view: DeploymentView) -> list[str]:
    parts = ["<h2>Every state of every Component</h2>"]
    for component in _in_order(view):
        runs = sorted((run for run in view.runs if run.component == component["key"]),
                      key=lambda run: run.started)
        parts.append(f"<h3>{escape(component['key'])}</h3>")
        if not runs:
            parts.append('<p class="muted">no state ran</p>')
            continue
        parts.append(
            "<table><tr><th>at</th><th>group</th><th>phase</th><th>state</th><th>took</th>"
            "<th>result</th></tr>"
        )
        for run in runs:
            took = f"{(run.finished or view.now) - run.started:.2f}s"
            result = "ok" if run.ok else "FAILED" if run.ok is False else "did not finish"
            if run.ok and run.kind == "query" and run.value:
                result += f" = {run.value}"
            css = ' class="bad"' if run.ok is False else ""
            parts.append(
                f"<tr><td>{_when(run.started)}</td><td>{run.group}</td><td>{run.phase}</td>"
                f"<td>{escape(run.name)}</td><td>{took}</td><td{css}>{escape(result)}</td></tr>"
            )
        parts.append("</table>")
    return parts
