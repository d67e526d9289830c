"""Ask every Component who it is and what it runs (Identity, Provides, Inventory).

Used by ``show-provides``, ``show-inventory`` and the deployment plan. Components are asked in
parallel, so a System's query time is that of its slowest Interface, not their sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from orchestrator_core import drivers
from orchestrator_core.context import Component
from orchestrator_core.drivers import ComponentDriver
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.log import component_logger


class Discovered(NamedTuple):
    component: Component
    driver: ComponentDriver
    component_id: str
    provides: dict[str, str]
    inventory: tuple[tuple[str, str], ...] = ()

    @property
    def prefix(self) -> str:
        return f"{self.component.component_type}.{self.component_id}"


class Failed(NamedTuple):
    component: Component
    message: str


def _ask(
    component: Component,
    data_dir: Path,
    timeout: float,
    with_inventory: bool,
    shared: drivers.ExecutableManagers,
) -> Discovered | Failed:
    try:
        driver = drivers.load(component, data_dir, shared)
        log = component_logger(component.label)
        component_id = driver.identity(driver.context(log=log, timeout_seconds=timeout))
        named = f"{component.component_type}/{component_id} (interface {component.interface})"
        log = component_logger(named)
        ctx = driver.context(log=log, timeout_seconds=timeout, component_id=component_id)
        provides = driver.provides(ctx)
        inventory = tuple(driver.inventory(ctx)) if with_inventory else ()
    except OrchestratorError as exc:
        return Failed(component, _naming(component, exc.message))
    return Discovered(component, driver, component_id, provides, inventory)


def _naming(component: Component, message: str) -> str:
    """``message``, led by the Component's name unless the driver already put it there."""
    if component.label in message or f"{component.component_type}/" in message:
        return message
    return f"{component.label}: {message}"


def discover(
    components: Sequence[Component],
    data_dir: Path,
    timeout_seconds: float,
    with_inventory: bool = False,
) -> list[Discovered | Failed]:
    """Results in Topology order; Components sharing a type and an ID are both failed."""
    shared = drivers.ExecutableManagers()
    results = drivers.in_parallel(
        lambda c: _ask(c, data_dir, timeout_seconds, with_inventory, shared), components
    )
    seen: dict[tuple[str, str], Component] = {}
    for index, result in enumerate(results):
        if not isinstance(result, Discovered):
            continue
        key = (result.component.component_type, result.component_id)
        if key in seen:
            first = seen[key]
            results[index] = Failed(
                result.component,
                f"{result.component.label}: Identity id={result.component_id} is also the id of "
                f"{first.label}; Component IDs must be unique within a component_type",
            )
        else:
            seen[key] = result.component
    return results
