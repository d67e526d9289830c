"""The Manifest: the desired System state (SPEC 3)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core import parse_cache
from orchestrator_core.errors import ValidationErrors
from orchestrator_core.topology import Topology
from orchestrator_core.yamlfile import excerpt, excerpt_text, load_mapping, type_name

API_VERSION = "mender/v1"
TOP_LEVEL_FIELDS = ("api_version", "kind", "name", "system_types_compatible", "component_types")
ENTRY_FIELDS = ("artifact_name", "artifact_path", "update_strategy")
MIN_ORDER, MAX_ORDER = 1, 100


class ComponentTypeEntry(NamedTuple):
    component_type: str
    artifact_name: str | None
    artifact_path: str | None
    order: int


class Manifest(NamedTuple):
    path: Path
    name: str
    system_types_compatible: tuple[str, ...]
    component_types: Mapping[str, ComponentTypeEntry]


def _parse_entry(
    component_type: str, entry: Any, where: str, problems: list[str]
) -> ComponentTypeEntry | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping with artifact_name, got {type_name(entry)}")
        return None
    for unknown in sorted(set(entry) - set(ENTRY_FIELDS), key=str):
        problems.append(
            f"{where}: unknown field {excerpt(unknown)}; expected {', '.join(ENTRY_FIELDS)}"
        )
    values: dict[str, str | None] = {}
    for key in ("artifact_name", "artifact_path"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}.{key}: expected a non-empty string, got {type_name(value)}")
            value = None
        values[key] = value
    if "artifact_name" not in entry and "artifact_path" not in entry:
        problems.append(f"{where}: needs artifact_name or artifact_path (or both)")
    strategy = entry.get("update_strategy")
    order = strategy.get("order") if isinstance(strategy, dict) else None
    if not isinstance(strategy, dict):
        problems.append(
            f"{where}.update_strategy: expected a mapping with order, got {type_name(strategy)}"
        )
        return None
    for unknown in sorted(set(strategy) - {"order"}, key=str):
        problems.append(
            f"{where}.update_strategy: unknown field {excerpt(unknown)}; expected order"
        )
    if isinstance(order, bool) or not isinstance(order, int) or not MIN_ORDER <= order <= MAX_ORDER:
        problems.append(
            f"{where}.update_strategy.order: expected a whole number from {MIN_ORDER} to "
            f"{MAX_ORDER}, got {excerpt(order)}"
        )
        return None
    return ComponentTypeEntry(
        component_type, values["artifact_name"], values["artifact_path"], order
    )


def load_manifest(path: Path) -> Manifest:
    data = load_mapping(path, "Manifest")
    problems: list[str] = []
    if data.get("api_version") != API_VERSION:
        problems.append(
            f"{path}: field api_version must be {API_VERSION!r}, "
            f"got {excerpt(data.get('api_version'))}"
        )
    if data.get("kind") != "manifest":
        problems.append(f"{path}: field kind must be 'manifest', got {excerpt(data.get('kind'))}")
    for unknown in sorted(set(data) - set(TOP_LEVEL_FIELDS), key=str):
        problems.append(
            f"{path}: unknown field {excerpt(unknown)}; expected {', '.join(TOP_LEVEL_FIELDS)}"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{path}: field name: expected a non-empty string, got {type_name(name)}")
    compatible = data.get("system_types_compatible")
    if (
        not isinstance(compatible, list)
        or not compatible
        or not all(isinstance(item, str) and item for item in compatible)
    ):
        problems.append(
            f"{path}: field system_types_compatible: expected a non-empty list of strings, "
            f"got {excerpt(compatible)}"
        )
        compatible = []
    raw_types = data.get("component_types")
    entries: dict[str, ComponentTypeEntry] = {}
    if not isinstance(raw_types, dict) or not raw_types:
        problems.append(
            f"{path}: field component_types: expected a mapping of component_type to its "
            f"Artifact, got {type_name(raw_types)}"
        )
    else:
        for component_type, entry in raw_types.items():
            parsed = _parse_entry(
                str(component_type),
                entry,
                f"{path}: component_types.{excerpt_text(str(component_type))}",
                problems,
            )
            if parsed is not None:
                entries[str(component_type)] = parsed
    if problems:
        raise ValidationErrors(problems)
    parse_cache.keep(data)
    return Manifest(path, str(name), tuple(compatible), entries)


def check_against_topology(manifest: Manifest, topology: Topology) -> list[str]:
    """The problems that make ``manifest`` undeployable on ``topology`` (SPEC 7.3)."""
    problems = []
    if topology.system_type not in manifest.system_types_compatible:
        problems.append(
            f"{manifest.path}: system_types_compatible {list(manifest.system_types_compatible)} "
            f"does not contain the Topology's system_type {topology.system_type!r} "
            f"({topology.path})"
        )
    for component_type in topology.component_types:
        if component_type not in manifest.component_types:
            problems.append(
                f"{manifest.path}: component_types has no entry for {excerpt(component_type)}, "
                f"which the Topology {topology.path} lists; every Topology Component needs one"
            )
    return problems
