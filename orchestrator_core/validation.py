"""``validate``: the config, the Topology and a Manifest checked together, every problem listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_core import drivers, preflight
from orchestrator_core.config import Config
from orchestrator_core.errors import OrchestratorError, ValidationErrors
from orchestrator_core.global_options import Locations
from orchestrator_core.manifest import Manifest, check_against_topology, load_manifest
from orchestrator_core.topology import Topology, load_topology


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def absorb(self, exc: OrchestratorError) -> None:
        self.problems.extend(exc.problems if isinstance(exc, ValidationErrors) else [exc.message])


def validate_all(
    components_option: Path | None, manifest_path: Path | None, locations: Locations | None = None
) -> Report:
    report = Report()
    config: Config | None = None
    try:
        config = (locations or Locations()).load_config()
        files = ", ".join(map(str, config.config_files)) or "none found, defaults used"
        report.warnings.extend(config.warnings)
        count = len(config.warnings)
        warned = f" with {count} warning{'s' if count > 1 else ''}" if count else ""
        report.lines.append(f"config: OK{warned} ({files})")
    except OrchestratorError as exc:
        report.absorb(exc)

    if config is not None:
        report.problems.extend(preflight.environment_problems(config))

    if config is not None and config.artifact_verify_keys:
        from orchestrator_core.artifact.signature import load_keys

        try:
            load_keys(config.artifact_verify_keys)
            report.lines.append(f"verification keys: OK ({len(config.artifact_verify_keys)})")
        except OrchestratorError as exc:
            report.absorb(exc)

    topology: Topology | None = None
    if config is not None:
        try:
            topology = load_topology(
                config.topology_file, components_option or config.topology_components
            )
            report.lines.append(
                f"topology: OK ({topology.path}, system_type {topology.system_type}, "
                f"{len(topology.components)} components)"
            )
        except OrchestratorError as exc:
            report.absorb(exc)

    if topology is not None and config is not None:
        for component in topology.components:
            try:
                # loading, not only resolving: a driver checks its interface_args when loaded
                drivers.load(component, config.data_dir)
            except OrchestratorError as exc:
                report.problems.append(f"{topology.path}: components[{component.position}]: {exc}")

    manifest: Manifest | None = None
    if manifest_path is not None:
        try:
            manifest = load_manifest(manifest_path)
            report.lines.append(f"manifest: OK ({manifest_path}, name {manifest.name})")
        except OrchestratorError as exc:
            report.absorb(exc)
    if manifest is not None and topology is not None:
        report.problems.extend(check_against_topology(manifest, topology))
    return report
