"""SPEC 7.3: everything checked before any Component is touched, and the resulting plan.

The plan is plain JSON-able data: it is stored in the journal when the deployment begins and
is all ``resume`` needs to rebuild the engine, including the Topology snapshot and the
settings that shape the sequence of steps, so that neither a changed configuration nor an
updated program replays a deployment with other steps than it began with.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core.config import Config
from orchestrator_core.context import ArtifactInfo, Component
from orchestrator_core.discovery import Discovered, Failed, discover
from orchestrator_core.drivers import ComponentDriver
from orchestrator_core.errors import JournalMismatch, OrchestratorError, ValidationErrors
from orchestrator_core.manifest import Manifest, check_against_topology
from orchestrator_core.topology import Topology


class PlannedComponent(NamedTuple):
    key: str  # "<component_type>/<component id>": unique in the System
    component: Component
    component_id: str
    provides: dict[str, str]
    order: int
    artifact: dict[str, Any]  # see _artifact_record
    skip_reason: str | None  # set when the Component takes no part

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "component_type": self.component.component_type,
            "interface": self.component.interface,
            "interface_args": list(self.component.interface_args),
            "position": self.component.position,
            "id": self.component_id,
            "provides": self.provides,
            "order": self.order,
            "artifact": self.artifact,
            "skip_reason": self.skip_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedComponent:
        component = Component(
            data["component_type"],
            data["interface"],
            tuple(data["interface_args"]),
            data["position"],
        )
        return cls(
            data["key"],
            component,
            data["id"],
            data["provides"],
            data["order"],
            data["artifact"],
            data["skip_reason"],
        )

    @property
    def artifact_info(self) -> ArtifactInfo:
        info = self.artifact["info"]
        return ArtifactInfo(
            name=info["name"],
            group=info["group"],
            payload_type=info["payload_type"],
            provides={
                k: tuple(v) if isinstance(v, list) else v for k, v in info["provides"].items()
            },
            header_info=info["header_info"],
            type_info=info["type_info"],
            meta_data=info["meta_data"],
            files=tuple((name, size) for name, size in info["files"]),
        )

    def verbatim(self, name: str) -> bytes:
        return base64.b64decode(self.artifact["verbatim"][name])


# 1: before plans carried a format (no frozen settings); 2: "format" and "sequence"
PLAN_FORMAT = 2


class Plan:
    """What a deployment does, as journaled (``to_json``). A plain class, read-only by
    convention: a frozen dataclass cost ~0.5 ms of every install's start-up to build."""

    def __init__(
        self,
        manifest_name: str,
        manifest_path: str,
        system_type: str,
        components: tuple[PlannedComponent, ...],
        rollback_reboot_retries: int | None = None,
        drivers: Mapping[str, ComponentDriver] | None = None,
    ) -> None:
        self.manifest_name = manifest_name
        self.manifest_path = manifest_path
        self.system_type = system_type
        self.components = components
        # frozen at install time; None in a plan of format 1, which did not record it
        self.rollback_reboot_retries = rollback_reboot_retries
        # the drivers planning already loaded, reused by the engine in the same process
        self.drivers: Mapping[str, ComponentDriver] = {} if drivers is None else drivers

    @property
    def active(self) -> tuple[PlannedComponent, ...]:
        return tuple(c for c in self.components if c.skip_reason is None)

    @property
    def groups(self) -> list[tuple[int, tuple[str, ...]]]:
        orders = sorted({c.order for c in self.active})
        return [(o, tuple(c.key for c in self.active if c.order == o)) for o in orders]

    @cached_property
    def _by_key(self) -> dict[str, PlannedComponent]:
        # the engine looks a Component up for every call: a scan of the plan each time made
        # a deployment quadratic in its Components
        return {planned.key: planned for planned in self.components}

    def component(self, key: str) -> PlannedComponent:
        return self._by_key[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "manifest_name": self.manifest_name,
            "manifest_path": self.manifest_path,
            "system_type": self.system_type,
            "components": [c.to_json() for c in self.components],
            "sequence": {"RollbackRebootRetries": self.rollback_reboot_retries},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """A plan of this format or of format 1 (its sequence settings unknown: None)."""
        version = data.get("format", 1)
        if version not in (1, PLAN_FORMAT):
            raise JournalMismatch(
                f"its plan has format {version!r}; this mender-orchestrator reads formats 1 to "
                f"{PLAN_FORMAT}: it was written by another version; finish the deployment with "
                f"that version"
            )
        retries = None
        if version == PLAN_FORMAT:
            sequence = data.get("sequence")
            retries = sequence.get("RollbackRebootRetries") if isinstance(sequence, dict) else None
            if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
                raise JournalMismatch(
                    f"its plan's sequence.RollbackRebootRetries is {retries!r}, not a "
                    f"non-negative integer"
                )
        return cls(
            data["manifest_name"],
            data["manifest_path"],
            data["system_type"],
            tuple(PlannedComponent.from_json(c) for c in data["components"]),
            retries,
        )


def _artifact_record(
    header: Any, artifact_name: str, artifact_path: str | None, source: str
) -> dict[str, Any]:
    info = header.to_info()
    # A local file found by a source is opened directly at Download time instead of being
    # searched for again; the manifest digest check still proves it is the same Artifact.
    local = source if Path(source).is_file() else artifact_path
    return {
        "name": artifact_name,
        "path": local,
        "source": source,
        "digest": header.manifest_digest,
        "info": {
            "name": info.name,
            "group": info.group,
            "payload_type": info.payload_type,
            "provides": {
                k: list(v) if isinstance(v, tuple) else v for k, v in info.provides.items()
            },
            "header_info": dict(info.header_info),
            "type_info": dict(info.type_info),
            "meta_data": dict(info.meta_data),
            "files": [list(f) for f in info.files],
        },
        "verbatim": {
            name: base64.b64encode(data).decode("ascii")
            for name, data in (
                ("header-info", header.header_info_bytes),
                ("type-info", header.type_info_bytes),
                ("meta-data", header.meta_data_bytes),
            )
        },
    }


def _read_artifact(
    config: Config, name: str | None, path: str | None
) -> tuple[Any, dict[str, Any]]:
    from orchestrator_core.artifact import open_artifact, read_header

    stream, source = open_artifact(name, path, config)
    with stream:
        header = read_header(stream, source_name=source, verify_keys=config.artifact_verify_keys)
    return header, _artifact_record(header, header.name, path, source)


def make_plan(config: Config, topology: Topology, manifest: Manifest) -> Plan:
    """Validate, ask every Component, read every Artifact header; raise listing all problems."""
    from orchestrator_core import preflight
    from orchestrator_core.artifact import check_compatible, is_installed
    from orchestrator_core.artifact.sources import names_remembered

    problems = preflight.problems(config) + check_against_topology(manifest, topology)
    if problems:
        raise ValidationErrors(problems)
    results = discover(topology.components, config.data_dir, config.interface_timeout_seconds)
    problems = [r.message for r in results if isinstance(r, Failed)]

    headers: dict[str, tuple[Any, dict[str, Any]]] = {}
    # component types that name the same Artifact share one read of its header
    outcomes: dict[tuple[str | None, str | None], Any] = {}
    with names_remembered():
        for component_type in topology.component_types:
            entry = manifest.component_types[component_type]
            wanted = (entry.artifact_name, entry.artifact_path)
            if wanted not in outcomes:
                try:
                    outcomes[wanted] = _read_artifact(config, *wanted)
                except OrchestratorError as exc:
                    outcomes[wanted] = exc
            outcome = outcomes[wanted]
            if isinstance(outcome, OrchestratorError):
                problems.append(f"component_type {component_type}: {outcome.message}")
            else:
                headers[component_type] = outcome

    planned: list[PlannedComponent] = []
    loaded: dict[str, ComponentDriver] = {}
    for result in results:
        if not isinstance(result, Discovered) or result.component.component_type not in headers:
            continue
        header, record = headers[result.component.component_type]
        key = f"{result.component.component_type}/{result.component_id}"
        try:
            check_compatible(header, result.component.component_type, result.provides)
        except OrchestratorError as exc:
            problems.append(f"{key} (interface {result.component.interface}): {exc.message}")
            continue
        skip = f"already runs {header.name}" if is_installed(header, result.provides) else None
        order = manifest.component_types[result.component.component_type].order
        loaded[key] = result.driver
        planned.append(
            PlannedComponent(
                key, result.component, result.component_id, result.provides, order, record, skip
            )
        )
    if problems:
        raise ValidationErrors(problems)
    return Plan(
        manifest.name,
        str(manifest.path),
        topology.system_type,
        tuple(planned),
        config.rollback_reboot_retries,
        loaded,
    )


def describe(plan: Plan) -> Sequence[str]:
    """The plan as the ``plan`` command prints it."""
    lines = [f"Manifest {plan.manifest_name} for system_type {plan.system_type}"]
    for order, keys in plan.groups:
        lines.append(f"order group {order}:")
        for key in keys:
            planned = plan.component(key)
            current = current_version(planned)
            lines.append(
                f"  {key} (interface {planned.component.interface}): {current} -> "
                f"{planned.artifact['name']}  [{planned.artifact['source']}]"
            )
    skipped = [c for c in plan.components if c.skip_reason is not None]
    if skipped:
        lines.append("left untouched:")
        lines.extend(f"  {c.key}: {c.skip_reason}" for c in skipped)
    if not plan.groups:
        lines.append("nothing to do: every Component already runs its Artifact")
    return lines


def current_version(planned: PlannedComponent) -> str:
    provides = planned.provides
    for key in (f"rootfs-image.{planned.component.interface}.version", "rootfs-image.version"):
        if key in provides:
            return provides[key]
    return "?"


def deployment_dir(work_root: Path, deployment: int) -> Path:
    """SPEC 5 (our decision): the File API directories of a deployment are under
    <datastore>/work/<deployment id>/."""
    return work_root / str(deployment)


def work_dir(deployment: Path, planned: PlannedComponent) -> Path:
    """A Component's File API directory: <deployment dir>/<component_type>/<component id>/."""
    return deployment / planned.component.component_type / planned.component_id
