"""``--json``: each command's result as one JSON document on stdout.

Every document starts with ``format`` (``mender-orchestrator/<command>``) and
``schema_version``; its shape is the JSON Schema ``schemas/<command>.schema.json`` shipped in
this package. A change that could break a reader (a field removed, renamed or retyped) raises
``schema_version``; new fields may appear without it.
Times are ISO 8601 in UTC; durations are seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from orchestrator_core.artifact.header import ArtifactHeader
    from orchestrator_core.config import Config
    from orchestrator_core.discovery import Discovered, Failed
    from orchestrator_core.journal import DeploymentRow, Journal
    from orchestrator_core.planner import Plan
    from orchestrator_core.topology import Topology
    from orchestrator_core.validation import Report

SCHEMA_VERSION = 1
SCHEMAS = Path(__file__).parent / "schemas"

option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout (shape: the package's schemas/ directory).",
)


def document(command: str, **fields: Any) -> dict[str, Any]:
    return {"format": f"mender-orchestrator/{command}", "schema_version": SCHEMA_VERSION, **fields}


def emit(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def _time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, tz=UTC).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------- status / history


def _deployment(row: DeploymentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "manifest_name": row.manifest_name,
        "status": row.status,
        "started": _time(row.started),
        "finished": _time(row.finished),
        "summary": row.summary,
    }


def _components(row: DeploymentRow) -> list[dict[str, Any]]:
    return [
        {
            "key": c["key"],
            "component_type": c["component_type"],
            "id": c["id"],
            "interface": c["interface"],
            "order": c["order"],
            "artifact_name": c["artifact"]["name"],
            "left_untouched": c["skip_reason"],
        }
        for c in row.plan["components"]
    ]


def status(journal: Journal, deployment: int | None = None) -> dict[str, Any]:
    """Deployment ``deployment``, or the one in progress, or else the last one;
    ``deployment`` null if none ran."""
    from orchestrator_core.report import find_deployment

    row = find_deployment(journal, deployment)
    if row is None:
        return document("status", deployment=None)
    steps = {
        seq: (kind, name, group, phase) for seq, kind, name, group, phase in journal.steps(row.id)
    }
    entered: dict[tuple[int, str], float] = {}
    done: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for event in journal.events(row.id):
        if event.seq is None:
            markers.append(
                {
                    "time": _time(event.at),
                    "kind": event.kind,
                    "value": event.value,
                    "message": event.message,
                }
            )
            continue
        kind, name, group, phase = steps.get(event.seq, ("?", "?", 0, "?"))
        if event.kind == "enter":
            entered[(event.seq, event.component)] = event.at
            continue
        began = entered.pop((event.seq, event.component), event.at)
        done.append(
            {
                "component": event.component,
                "order_group": group,
                "phase": phase,
                "step": name,
                "step_kind": kind,
                "started": _time(began),
                "finished": _time(event.at),
                "seconds": round(event.at - began, 3),
                "ok": bool(event.ok),
                "value": event.value,
                "message": event.message,
            }
        )
    running = []
    for (seq, component), at in entered.items():  # entered, no result yet: running now
        _, name, group, phase = steps.get(seq, ("?", "?", 0, "?"))
        running.append(
            {
                "component": component,
                "order_group": group,
                "phase": phase,
                "step": name,
                "started": _time(at),
            }
        )
    shown = dict(
        _deployment(row), components=_components(row), steps=done, running=running, events=markers
    )
    return document("status", deployment=shown)


def history(journal: Journal) -> dict[str, Any]:
    return document("history", deployments=[_deployment(row) for row in journal.deployments()])


# --------------------------------------------------------------------------------- plan


def plan(made: Plan) -> dict[str, Any]:
    from orchestrator_core.planner import current_version

    groups = []
    for order, keys in made.groups:
        members = []
        for key in keys:
            planned = made.component(key)
            members.append(
                {
                    "key": key,
                    "component_type": planned.component.component_type,
                    "id": planned.component_id,
                    "interface": planned.component.interface,
                    "current_version": current_version(planned),
                    "artifact_name": planned.artifact["name"],
                    "artifact_source": planned.artifact["source"],
                }
            )
        groups.append({"order": order, "components": members})
    untouched = [{"key": c.key, "reason": c.skip_reason} for c in made.components if c.skip_reason]
    return document(
        "plan",
        manifest_name=made.manifest_name,
        manifest_path=made.manifest_path,
        system_type=made.system_type,
        order_groups=groups,
        left_untouched=untouched,
    )


# ------------------------------------------------------------- show-provides, show-inventory


def _failures(results: Sequence[Discovered | Failed]) -> list[dict[str, Any]]:
    from orchestrator_core.discovery import Failed

    return [
        {
            "component_type": r.component.component_type,
            "position": r.component.position,
            "interface": r.component.interface,
            "message": r.message,
        }
        for r in results
        if isinstance(r, Failed)
    ]


def _found(results: Sequence[Discovered | Failed], with_inventory: bool) -> list[dict[str, Any]]:
    from orchestrator_core.discovery import Discovered

    found = []
    for r in results:
        if not isinstance(r, Discovered):
            continue
        entry: dict[str, Any] = {
            "component_type": r.component.component_type,
            "id": r.component_id,
            "interface": r.component.interface,
            "provides": dict(sorted(r.provides.items())),
        }
        if with_inventory:
            entry["inventory"] = [{"key": k, "value": v} for k, v in r.inventory]
        found.append(entry)
    return found


def provides(results: Sequence[Discovered | Failed]) -> dict[str, Any]:
    return document("show-provides", components=_found(results, False), failures=_failures(results))


def inventory(
    system_type: str, manifest_name: str | None, results: Sequence[Discovered | Failed]
) -> dict[str, Any]:
    return document(
        "show-inventory",
        system_type=system_type,
        manifest_name=manifest_name,
        components=_found(results, True),
        failures=_failures(results),
    )


# ------------------------------------------------------------------------- drivers, validate


def drivers(config: Config, topology: Topology | None, problems: list[str]) -> dict[str, Any]:
    """What ``drivers`` shows; appends each problem's message to ``problems``."""
    from orchestrator_core import drivers as found
    from orchestrator_core.errors import OrchestratorError

    listed: list[dict[str, Any]] = []
    for component in topology.components if topology is not None else ():
        entry: dict[str, Any] = {
            "component_type": component.component_type,
            "position": component.position,
            "interface": component.interface,
            "interface_args": list(component.interface_args),
            "kind": None,
            "target": None,
            "problem": None,
        }
        listed.append(entry)
        try:
            resolution = found.resolve(component.interface, config.data_dir)
            entry.update(kind=resolution.kind, target=resolution.target)
            found.load(component, config.data_dir)  # a driver checks its interface_args here
        except OrchestratorError as exc:
            entry["problem"] = exc.message
            problems.append(exc.message)
    return document(
        "drivers",
        topology=None
        if topology is None
        else {"path": str(topology.path), "system_type": topology.system_type},
        components=listed,
        executables_dir=str(found.interfaces_dir(config.data_dir)),
        executables=found.installed_executables(config.data_dir),
        drivers=[
            {"name": name, "target": target}
            for name, target in sorted(found.installed_drivers().items())
        ],
        problems=problems,
    )


def validation(report: Report) -> dict[str, Any]:
    return document(
        "validate",
        ok=not report.problems,
        checked=report.lines,
        problems=report.problems,
        warnings=report.warnings,
    )


# ---------------------------------------------------------------------------- artifact inspect


def artifact(header: ArtifactHeader, files: list[tuple[str, int, str]]) -> dict[str, Any]:
    def plain(values: Any) -> Any:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(values.items())}

    depends = header.header_info["artifact_depends"]
    return document(
        "artifact-inspect",
        name=header.name,
        format_version=3,
        signature=header.signature.describe(),
        compatible_devices=list(header.device_types),
        provides_group=header.group,
        depends_artifact_name=list(depends.get("artifact_name") or []),
        depends_group=list(depends.get("artifact_group") or []),
        state_scripts=list(header.scripts),
        payload={
            "type": header.payload_type,
            "augmented": bool(header.augmented),
            "provides": plain(header.type_provides),
            "depends": plain(header.type_info.get("artifact_depends") or {}),
            "clears_provides": list(header.clears_provides),
            "meta_data": dict(header.meta_data),
            "files": [{"name": n, "size": s, "checksum": c} for n, s, c in files],
        },
    )
