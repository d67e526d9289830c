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
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import click

from orchestrator_core import __version__
from orchestrator_core.errors import OrchestratorError, ValidationErrors
from orchestrator_core.global_options import Locations, location_options
from orchestrator_core.json_output import option as json_option
from orchestrator_core.lazy_group import LazyGroup
from orchestrator_core.states import STATES

log = logging.getLogger("mender_orchestrator.cli")


class Options(NamedTuple):
    log_level: str | None
    topology_components: Path | None
    locations: Locations = Locations()


def _fail(exc: OrchestratorError) -> NoReturn:
    problems = exc.problems if isinstance(exc, ValidationErrors) else [exc.message]
    for problem in problems:
        log.error("%s", problem)
    raise SystemExit(exc.exit_code)


class Session:
    """Config and Topology, loaded on first use by the commands that need them."""

    def __init__(self, options: Options) -> None:
        from orchestrator_core import log as log_module
        from orchestrator_core import parse_cache

        log_module.setup(options.log_level or "info")
        self.config = options.locations.load_config()
        parse_cache.use(
            self.config.datastore_dir, may_create=self.config.journal_path.exists()
        )
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


class _LazyGroup(LazyGroup):
    lazy = {
        "artifact": "orchestrator_core.artifact.commands:artifact",
        "check-interface": "orchestrator_core.conformance.command:check_interface",
        "completion": "orchestrator_core.completion:completion",
        "install-support": "orchestrator_core.support_install:install_support",
        "manifest-gen": "orchestrator_core.manifest_gen:manifest_gen",
    }


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mender-orchestrator")
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
@location_options
@click.pass_context
def cli(
    ctx: click.Context,
    /,
    log_level: str | None,
    topology_components: Path | None,
    **locations: Path | None,
) -> None:
    """Update every Component of a System to a Manifest, or roll all of them back."""
    ctx.obj = Options(
        log_level.lower() if log_level else None, topology_components, Locations(**locations)
    )


def _print_discovery(results: list[Any], lines: list[str] | dict[str, Any]) -> None:
    from orchestrator_core import json_output
    from orchestrator_core.discovery import Failed

    if isinstance(lines, dict):
        json_output.emit(lines)
    for line in lines if isinstance(lines, list) else ():
        click.echo(line)
    failures = [r for r in results if isinstance(r, Failed)]
    for failure in failures:
        log.error("%s", failure.message)
    if failures:
        raise SystemExit(1)


@cli.command("show-provides")
@json_option
@click.pass_context
def show_provides(ctx: click.Context, as_json: bool) -> None:
    """Print every Component's Provides as <component_type>.<id>.<key>=<value>."""
    from orchestrator_core.discovery import discover
    from orchestrator_core.lock import shared
    from orchestrator_core.provides import provides_lines

    s = session(ctx)
    try:
        topology = s.topology()
        with shared(s.config, "show-provides"):
            results = discover(
                topology.components, s.config.data_dir, s.config.interface_timeout_seconds
            )
    except OrchestratorError as exc:
        _fail(exc)
    if as_json:
        from orchestrator_core import json_output

        _print_discovery(results, json_output.provides(results))
    else:
        _print_discovery(results, provides_lines(results))


@cli.command("show-inventory")
@json_option
@click.pass_context
def show_inventory(ctx: click.Context, as_json: bool) -> None:
    """Print inventory key=value lines for the Mender inventory script."""
    from orchestrator_core import manifest_store
    from orchestrator_core.discovery import discover
    from orchestrator_core.lock import shared
    from orchestrator_core.provides import inventory_lines

    s = session(ctx)
    try:
        topology = s.topology()
        with shared(s.config, "show-inventory"):
            results = discover(
                topology.components,
                s.config.data_dir,
                s.config.interface_timeout_seconds,
                with_inventory=True,
            )
    except OrchestratorError as exc:
        _fail(exc)
    name = manifest_store.current_name(s.config.manifest_store)
    if as_json:
        from orchestrator_core import json_output

        _print_discovery(results, json_output.inventory(topology.system_type, name, results))
    else:
        _print_discovery(results, inventory_lines(topology.system_type, name, results))


@cli.command("validate")
@click.argument("manifest", required=False, type=click.Path(path_type=Path))
@json_option
@click.pass_context
def validate(ctx: click.Context, manifest: Path | None, as_json: bool) -> None:
    """Check the config, the Topology and (if given) MANIFEST together; list every problem."""
    from orchestrator_core.validation import validate_all

    options = ctx.find_object(Options)
    assert options is not None  # set by the group callback before any command runs
    from orchestrator_core import log as log_module

    log_module.setup(options.log_level or "info")
    report = validate_all(options.topology_components, manifest, options.locations)
    for warning in report.warnings:
        log.warning("%s", warning)
    if as_json:
        from orchestrator_core import json_output

        json_output.emit(json_output.validation(report))
    for line in report.lines if not as_json else ():
        click.echo(line)
    for problem in report.problems:
        log.error("%s", problem)
    if report.problems:
        raise SystemExit(2)


@cli.command("drivers")
@click.argument("name", required=False)
@json_option
@click.pass_context
def drivers_command(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List each Topology interface, what it resolves to, and every installed driver; with
    NAME, what NAME resolves to and the interface_args it takes."""
    from orchestrator_core import drivers

    s = session(ctx)
    if name is not None:
        from orchestrator_core.driver_help import describe

        for line in describe(name, s.config.data_dir):
            click.echo(line)
        return
    problems = 0
    try:
        topology = s.topology()
    except OrchestratorError as exc:
        log.error("%s", exc.message)
        topology = None
        problems += 1
    if as_json:
        from orchestrator_core import json_output

        refused: list[str] = []
        json_output.emit(json_output.drivers(s.config, topology, refused))
        for problem in refused:
            log.error("%s", problem)
        raise SystemExit(2 if problems or refused else 0)
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
    for executable in drivers.installed_executables(s.config.data_dir) or ["(none)"]:
        click.echo(f"  {executable}")
    click.echo(f"In-process drivers (entry-point group {drivers.DRIVER_GROUP}):")
    for driver, target in sorted(drivers.installed_drivers().items()):
        click.echo(f"  {driver} = {target}")
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


def _planner(s: Session, manifest_path: Path) -> Callable[[], Any]:
    """Planning, with the files read and checked now; the Interfaces are asked (and the
    Artifacts fetched) only when the result is called, by a caller that holds the lock."""
    from orchestrator_core.manifest import load_manifest
    from orchestrator_core.planner import make_plan

    topology = s.topology()
    manifest = load_manifest(manifest_path)
    return lambda: make_plan(s.config, topology, manifest)


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
        planned = _planner(s, manifest)
        manifest_bytes = manifest.read_bytes()
        result = engine.install(
            s.config,
            planned,
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
@json_option
@click.pass_context
def plan_command(ctx: click.Context, manifest: Path, as_json: bool) -> None:
    """Print what installing MANIFEST would do, changing nothing."""
    from orchestrator_core.lock import shared
    from orchestrator_core.planner import describe

    s = session(ctx)
    try:
        planned = _planner(s, manifest)
        with shared(s.config, "planning a deployment"):
            plan = planned()
    except OrchestratorError as exc:
        _fail(exc)
    if as_json:
        from orchestrator_core import json_output

        json_output.emit(json_output.plan(plan))
        return
    for line in describe(plan):
        click.echo(line)


def _from_journal(ctx: click.Context, lines: Callable[[Any], list[str]]) -> None:
    """Print what ``lines`` reads from the journal; say so when no deployment ever ran."""
    from orchestrator_core.journal import Journal

    s = session(ctx)
    if not s.config.journal_path.exists():
        click.echo("no deployment has run on this System")
        return
    journal = Journal(s.config.journal_path, read_only=True)
    try:
        for line in lines(journal):
            click.echo(line)
    finally:
        journal.close()


@cli.command("status")
@click.argument("deployment", required=False, type=click.IntRange(min=1))
@json_option
@click.pass_context
def status_command(ctx: click.Context, deployment: int | None, as_json: bool) -> None:
    """Show DEPLOYMENT (a number from `history`), else the one in progress, else the last
    one: the step running now, and every state of every Component."""
    from orchestrator_core import json_output
    from orchestrator_core.lock import held
    from orchestrator_core.report import find_deployment, status_lines

    def known(journal: Any) -> None:
        if deployment is not None and find_deployment(journal, deployment) is None:
            log.error("no deployment %d in the journal (`history` lists them)", deployment)
            raise SystemExit(2)

    def document(journal: Any) -> dict[str, Any]:
        known(journal)
        return json_output.status(journal, deployment)

    def lines(journal: Any) -> list[str]:
        known(journal)
        return status_lines(journal, deployment, held(session(ctx).config))

    if as_json:
        empty = json_output.document("status", deployment=None)
        _json_from_journal(ctx, document, empty)
        return
    _from_journal(ctx, lines)


@cli.command("history")
@json_option
@click.pass_context
def history_command(ctx: click.Context, as_json: bool) -> None:
    """List past deployments from the journal."""
    from orchestrator_core import json_output
    from orchestrator_core.report import history_lines

    if as_json:
        empty = json_output.document("history", deployments=[])
        _json_from_journal(ctx, json_output.history, empty)
        return
    _from_journal(ctx, history_lines)


def _json_from_journal(
    ctx: click.Context, make: Callable[[Any], dict[str, Any]], empty: dict[str, Any]
) -> None:
    """Emit what ``make`` reads from the journal, or ``empty`` when no deployment ever ran."""
    from orchestrator_core import json_output
    from orchestrator_core.journal import Journal

    s = session(ctx)
    if not s.config.journal_path.exists():
        json_output.emit(empty)
        return
    journal = Journal(s.config.journal_path)
    try:
        json_output.emit(make(journal))
    finally:
        journal.close()


@cli.command("report")
@click.argument("deployment", required=False, type=click.IntRange(min=1))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the page to this file (default: stdout).",
)
@click.pass_context
def report_command(ctx: click.Context, deployment: int | None, output: Path | None) -> None:
    """One HTML page for DEPLOYMENT (default: the one in progress, else the last): timeline,
    plan, versions before and after, what failed and what the Interfaces said."""
    from orchestrator_core import atomic
    from orchestrator_core.journal import Journal
    from orchestrator_core.lock import held
    from orchestrator_core.report import deployment_view, find_deployment
    from orchestrator_core.report_html import render

    s = session(ctx)
    if not s.config.journal_path.exists():
        log.error("no deployment has run on this System")
        raise SystemExit(2)
    journal = Journal(s.config.journal_path)
    try:
        row = find_deployment(journal, deployment)
        if row is None:
            log.error("no deployment %d in the journal (`history` lists them)", deployment)
            raise SystemExit(2)
        page = render(deployment_view(journal, row, active=held(s.config)))
    finally:
        journal.close()
    if output is None:
        click.echo(page, nl=False)
        return
    try:
        atomic.write_bytes(output, page.encode(), mode=0o644, durable=False)
    except OSError as exc:
        log.error("report: cannot write %s: %s", output, exc.strerror or exc)
        raise SystemExit(2) from None
    log.info("deployment %d: report written to %s", row.id, output)
