"""The ``mender-orchestrator`` command line.

The Mender client's Update Module drives ``install``, ``resume`` and ``rollback`` with exact
arguments and reads their exit codes (SPEC 7.4); the inventory script runs
``show-inventory`` on every poll, so start-up is kept cheap: heavy modules are imported inside
the commands that need them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestrator_core import DISTRIBUTION
from orchestrator_core.errors import OrchestratorError, ValidationErrors
from orchestrator_core.lock import refuse_while_deploying
from orchestrator_core.sequence import STATES

log = logging.getLogger("mender_orchestrator.cli")


@dataclass
class Options:
    log_level: str | None
    topology_components: Path | None


def _fail(exc: OrchestratorError) -> NoReturn:
    problems = exc.problems if isinstance(exc, ValidationErrors) else [exc.message]
    for problem in problems:
        log.error("%s", problem)
    raise SystemExit(exc.exit_code)


class Session:
    """Config and Topology, loaded on first use by the commands that need them."""

    def __init__(self, options: Options) -> None:
        from orchestrator_core import config as config_module
        from orchestrator_core import log as log_module

        log_module.setup(options.log_level or "info")
        self.config = config_module.load_config()
        if options.log_level is None:
            log_module.setup(self.config.log_level)
        for warning in self.config.warnings:
            log.warning("%s", warning)
        self.options = options

    @property
    def components_file(self) -> Path | None:
        # priority: the command-line option, then the env variable, then the config option;
        # the last two are already merged by load_config
        return self.options.topology_components or self.config.topology_components

    def topology(self) -> Any:
        from orchestrator_core.topology import load_topology

        return load_topology(self.config.topology_file, self.components_file)


def session(ctx: click.Context) -> Session:
    options = ctx.find_object(Options)
    assert options is not None  # set by the group callback before any command runs
    try:
        return Session(options)
    except OrchestratorError as exc:
        _fail(exc)


class _LazyGroup(click.Group):
    """Commands from heavier modules are imported only when they are the one being run, so
    ``--version`` and the inventory poll never pay for the Artifact package."""

    lazy = {
        "artifact": "orchestrator_core.artifact.commands:artifact",
        "check-interface": "orchestrator_core.conformance.command:check_interface",
        "completion": "orchestrator_core.completion:completion",
        "install-support": "orchestrator_core.support_install:install_support",
        "manifest-gen": "orchestrator_core.manifest_gen:manifest_gen",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attribute = self.lazy[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="mender-orchestrator")
@click.option(
    "--log-level",
    type=click.Choice(
        ["trace", "debug", "info", "warning", "error", "fatal"], case_sensitive=False
    ),
    help="Log verbosity on stderr (overrides the LogLevel option).",
)
@click.option(
    "-t",
    "--topology-components",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the Topology's components list (split Topology).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, topology_components: Path | None) -> None:
    """Update every Component of a System to a Manifest, or roll all of them back."""
    ctx.obj = Options(log_level.lower() if log_level else None, topology_components)


def _print_discovery(results: list[Any], lines: list[str]) -> None:
    from orchestrator_core.discovery import Failed

    for line in lines:
        click.echo(line)
    failures = [r for r in results if isinstance(r, Failed)]
    for failure in failures:
        log.error("%s", failure.message)
    if failures:
        raise SystemExit(1)


@cli.command("show-provides")
@click.pass_context
def show_provides(ctx: click.Context) -> None:
    """Print every Component's Provides as <component_type>.<id>.<key>=<value>."""
    from orchestrator_core.discovery import discover
    from orchestrator_core.provides import provides_lines

    s = session(ctx)
    try:
        refuse_while_deploying(s.config, "show-provides")
        topology = s.topology()
    except OrchestratorError as exc:
        _fail(exc)
    results = discover(topology.components, s.config.data_dir, s.config.interface_timeout_seconds)
    _print_discovery(results, provides_lines(results))


@cli.command("show-inventory")
@click.pass_context
def show_inventory(ctx: click.Context) -> None:
    """Print inventory key=value lines for the Mender inventory script."""
    from orchestrator_core import manifest_store
    from orchestrator_core.discovery import discover
    from orchestrator_core.provides import inventory_lines

    s = session(ctx)
    try:
        refuse_while_deploying(s.config, "show-inventory")
        topology = s.topology()
    except OrchestratorError as exc:
        _fail(exc)
    results = discover(
        topology.components,
        s.config.data_dir,
        s.config.interface_timeout_seconds,
        with_inventory=True,
    )
    name = manifest_store.current_name(s.config.manifest_store)
    _print_discovery(results, inventory_lines(topology.system_type, name, results))


@cli.command("validate")
@click.argument("manifest", required=False, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, manifest: Path | None) -> None:
    """Check the config, the Topology and (if given) MANIFEST together; list every problem."""
    from orchestrator_core.validation import validate_all

    options = ctx.find_object(Options)
    assert options is not None  # set by the group callback before any command runs
    from orchestrator_core import log as log_module

    log_module.setup(options.log_level or "info")
    report = validate_all(options.topology_components, manifest)
    for warning in report.warnings:
        log.warning("%s", warning)
    for line in report.lines:
        click.echo(line)
    for problem in report.problems:
        log.error("%s", problem)
    if report.problems:
        raise SystemExit(2)


@cli.command("drivers")
@click.pass_context
def drivers_command(ctx: click.Context) -> None:
    """List each Topology interface, what it resolves to, and every installed driver."""
    from orchestrator_core import drivers

    s = session(ctx)
    problems = 0
    try:
        topology = s.topology()
    except OrchestratorError as exc:
        log.error("%s", exc.message)
        topology = None
        problems += 1
    if topology is not None:
        click.echo(f"Topology {topology.path} (system_type {topology.system_type}):")
        for component in topology.components:
            where = f"  {component.component_type}: interface {component.interface} ->"
            try:
                found = drivers.resolve(component.interface, s.config.data_dir)
            except OrchestratorError as exc:
                click.echo(f"{where} NOT FOUND")
                log.error("%s", exc.message)
                problems += 1
                continue
            click.echo(f"{where} {found.kind} {found.target}")
            try:  # a driver checks its interface_args when it is loaded
                drivers.load(component, s.config.data_dir)
            except OrchestratorError as exc:
                click.echo(f"    its interface_args {list(component.interface_args)} are REFUSED")
                log.error("%s", exc.message)
                problems += 1
    click.echo(f"Executable Interfaces in {drivers.interfaces_dir(s.config.data_dir)}:")
    for name in drivers.installed_executables(s.config.data_dir) or ["(none)"]:
        click.echo(f"  {name}")
    click.echo(f"In-process drivers (entry-point group {drivers.DRIVER_GROUP}):")
    for name, target in sorted(drivers.installed_drivers().items()):
        click.echo(f"  {name} = {target}")
    if problems:
        raise SystemExit(2)


def main() -> None:
    try:
        cli.main(prog_name="mender-orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except OrchestratorError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(1) from None


# --------------------------------------------------------------------------- deployments

stop_before_option = click.option(
    "--stop-before",
    "stop_before",
    multiple=True,
    type=click.Choice(STATES),
    help="Save progress and exit just before the System would enter this state (repeatable).",
)
exit_on_reboot_option = click.option(
    "--exit-on-reboot",
    is_flag=True,
    help="Exit with status 4 instead of rebooting when a system reboot is needed.",
)


def _report(result: Any) -> NoReturn:
    if result.exit_code in (0, 4):
        log.info("%s", result.message)
    else:
        log.error("%s", result.message)
    raise SystemExit(result.exit_code)


def _plan_for(s: Session, manifest_path: Path) -> Any:
    from orchestrator_core.manifest import load_manifest
    from orchestrator_core.planner import make_plan

    refuse_while_deploying(s.config, "planning a deployment")
    topology = s.topology()
    return make_plan(s.config, topology, load_manifest(manifest_path))


@cli.command("install")
@stop_before_option
@exit_on_reboot_option
@click.argument("manifest", type=click.Path(path_type=Path))
@click.pass_context
def install_command(
    ctx: click.Context, stop_before: tuple[str, ...], exit_on_reboot: bool, manifest: Path
) -> None:
    """Move the System to MANIFEST, group by group; roll everything back on failure."""
    from orchestrator_core import engine

    s = session(ctx)
    try:
        plan = _plan_for(s, manifest)
        manifest_bytes = manifest.read_bytes()
        result = engine.install(
            s.config,
            plan,
            manifest_bytes,
            engine.RunOptions(frozenset(stop_before), exit_on_reboot, "install"),
        )
    except OrchestratorError as exc:
        _fail(exc)
    _report(result)


def _continue(
    ctx: click.Context, stop_before: tuple[str, ...], exit_on_reboot: bool, command: str
) -> NoReturn:
    from orchestrator_core import engine

    s = session(ctx)
    try:
        result = engine.resume(
            s.config, engine.RunOptions(frozenset(stop_before), exit_on_reboot, command)
        )
    except OrchestratorError as exc:
        _fail(exc)
    _report(result)


@cli.command("resume")
@stop_before_option
@exit_on_reboot_option
@click.pass_context
def resume_command(ctx: click.Context, stop_before: tuple[str, ...], exit_on_reboot: bool) -> None:
    """Continue the deployment in progress (after a stop or a reboot)."""
    _continue(ctx, stop_before, exit_on_reboot, "resume")


@cli.command("rollback")
@stop_before_option
@exit_on_reboot_option
@click.pass_context
def rollback_command(
    ctx: click.Context, stop_before: tuple[str, ...], exit_on_reboot: bool
) -> None:
    """Roll the whole System back from the deployment in progress."""
    _continue(ctx, stop_before, exit_on_reboot, "rollback")


@cli.command("plan")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.pass_context
def plan_command(ctx: click.Context, manifest: Path) -> None:
    """Print what installing MANIFEST would do, changing nothing."""
    from orchestrator_core.planner import describe

    s = session(ctx)
    try:
        plan = _plan_for(s, manifest)
    except OrchestratorError as exc:
        _fail(exc)
    for line in describe(plan):
        click.echo(line)


def _from_journal(ctx: click.Context, lines: Callable[[Any], list[str]]) -> None:
    """Print what ``lines`` reads from the journal; say so when no deployment ever ran."""
    from orchestrator_core.journal import Journal

    s = session(ctx)
    if not s.config.journal_path.exists():
        click.echo("no deployment has run on this System")
        return
    journal = Journal(s.config.journal_path)
    try:
        for line in lines(journal):
            click.echo(line)
    finally:
        journal.close()


@cli.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Show the deployment in progress, or the last one, per Component and state."""
    from orchestrator_core.report import status_lines

    _from_journal(ctx, status_lines)


@cli.command("history")
@click.pass_context
def history_command(ctx: click.Context) -> None:
    """List past deployments from the journal."""
    from orchestrator_core.report import history_lines

    _from_journal(ctx, history_lines)
