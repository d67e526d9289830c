"""``show-provides`` and ``show-inventory`` output (SPEC 10)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator_core.discovery import Discovered, Failed


def provides_lines(results: Sequence[Discovered | Failed]) -> list[str]:
    lines: list[str] = []
    for result in results:
        if isinstance(result, Discovered):
            values = dict(result.provides, device_type=result.component.component_type)
            lines.extend(f"{result.prefix}.{key}={value}" for key, value in values.items())
    return sorted(lines)


def inventory_lines(
    system_type: str, manifest_name: str | None, results: Sequence[Discovered | Failed]
) -> list[str]:
    """Our decision for the inventory layout: System attributes first, then per Component."""
    lines = [f"system_type={system_type}"]
    if manifest_name is not None:
        lines.append(f"manifest_name={manifest_name}")
    found = [r for r in results if isinstance(r, Discovered)]
    lines.extend(sorted(f"components={r.prefix}" for r in found))
    per_component: list[str] = []
    for result in found:
        per_component.extend(f"{result.prefix}.{key}={value}" for key, value in result.inventory)
    lines.extend(sorted(per_component))
    lines.extend(provides_lines(results))
    return lines
