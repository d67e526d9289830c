"""The Topology: which Components exist and which Interface updates each (SPEC 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_core import parse_cache
from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError, ValidationErrors
from orchestrator_core.yamlfile import excerpt, load_mapping, type_name

API_VERSION = "mender/v1"
TOP_LEVEL_FIELDS = ("api_version", "kind", "system_type", "components")
COMPONENT_FIELDS = ("component_type", "interface", "interface_args")


class Topology(NamedTuple):
    path: Path
    system_type: str
    components: tuple[Component, ...]
    components_path: Path | None = None  # the split components file, when used

    @property
    def component_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.component_type for c in self.components))


def _check_header(data: dict[str, Any], path: Path, kind: str, problems: list[str]) -> None:
    if data.get("api_version") != API_VERSION:
        problems.append(
            f"{path}: field api_version must be {API_VERSION!r}, "
            f"got {excerpt(data.get('api_version'))}"
        )
    if data.get("kind") != kind:
        problems.append(f"{path}: field kind must be {kind!r}, got {excerpt(data.get('kind'))}")


def _parse_components(value: Any, source: Path, problems: list[str]) -> tuple[Component, ...]:
    if not isinstance(value, list) or not value:
        problems.append(
            f"{source}: field components must be a non-empty list of components, "
            f"got {type_name(value)}"
        )
        return ()
    components = []
    for index, entry in enumerate(value):
        where = f"{source}: components[{index}]"
        if not isinstance(entry, dict):
            problems.append(
                f"{where}: expected a mapping with component_type, got {type_name(entry)}"
            )
            continue
        for unknown in sorted(set(entry) - set(COMPONENT_FIELDS), key=str):
            problems.append(
                f"{where}: unknown field {excerpt(unknown)}; expected {', '.join(COMPONENT_FIELDS)}"
            )
        component_type = entry.get("component_type")
        if not isinstance(component_type, str) or not component_type.strip():
            problems.append(
                f"{where}.component_type: expected a non-empty string, "
                f"got {type_name(component_type)}"
            )
            continue
        if component_type in (".", "..") or any(c in component_type for c in "/\0\n\r="):
            # it names a directory of the File API tree and leads show-provides keys
            problems.append(
                f"{where}.component_type: {excerpt(component_type)} must not be '.' or '..' nor "
                f"contain '/', '=', NUL or line breaks"
            )
            continue
        interface = entry.get("interface", component_type)
        if not isinstance(interface, str) or not interface or "/" in interface:
            problems.append(
                f"{where}.interface: expected an Interface name (no '/'), got {excerpt(interface)}"
            )
            continue
        args = entry.get("interface_args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            problems.append(
                f"{where}.interface_args: expected a list of strings (quote numbers), "
                f"got {excerpt(args)}"
            )
            continue
        components.append(Component(component_type, interface, tuple(args), index))
    return tuple(components)


def load_topology(topology_file: Path, components_file: Path | None) -> Topology:
    """Read the Topology, and the split components file when one is named.

    The components list must be in exactly one place (SPEC 2).
    """
    data = load_mapping(topology_file, "Topology")
    problems: list[str] = []
    _check_header(data, topology_file, "topology", problems)
    for unknown in sorted(set(data) - set(TOP_LEVEL_FIELDS), key=str):
        problems.append(
            f"{topology_file}: unknown field {excerpt(unknown)}; "
            f"expected {', '.join(TOP_LEVEL_FIELDS)}"
        )
    system_type = data.get("system_type")
    if not isinstance(system_type, str) or not system_type.strip():
        problems.append(
            f"{topology_file}: field system_type: expected a non-empty string, "
            f"got {type_name(system_type)}"
        )

    components: tuple[Component, ...] = ()
    split: dict[str, Any] = {}
    if components_file is not None:
        if "components" in data:
            problems.append(
                f"{topology_file}: has a components list, and a split components file "
                f"{components_file} is also named; the list must be in exactly one place"
            )
        else:
            split = load_mapping(components_file, "Topology components file")
            for unknown in sorted(set(split) - {"components"}, key=str):
                problems.append(
                    f"{components_file}: unknown field {excerpt(unknown)}; a split components file "
                    f"holds only 'components'"
                )
            components = _parse_components(split.get("components"), components_file, problems)
    elif "components" not in data:
        problems.append(
            f"{topology_file}: no components list, and no split components file is named "
            f"(--topology-components, MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE or the "
            f"TopologyComponents option)"
        )
    else:
        components = _parse_components(data["components"], topology_file, problems)

    if problems:
        raise ValidationErrors(problems)
    if not isinstance(system_type, str):  # for the type checker: problems caught it above
        raise ConfigError(f"{topology_file}: invalid system_type")
    parse_cache.keep(data, split)
    return Topology(topology_file, system_type, components, components_file)
