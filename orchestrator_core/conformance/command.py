"""``mender-orchestrator check-interface``: the command line, the test Artifacts, the output."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import click

from orchestrator_core.config import Config
from orchestrator_core.conformance.checks import FAIL, SKIP, ArtifactMaker, Report, run
from orchestrator_core.conformance.probe import Probe
from orchestrator_core.conformance.walk import TestArtifact
from orchestrator_core.errors import ArtifactError, ConfigError, OrchestratorError

log = logging.getLogger("mender_orchestrator.check")
EXIT_FAILED = 1  # at least one check failed
EXIT_BUSY = 5  # a deployment is running: its Components are not ours to call
PAYLOAD = b"check-interface test payload: no real device can run this\n"


def _fail(exc: OrchestratorError, exit_code: int | None = None) -> NoReturn:
    log.error("%s", exc.message)
    raise SystemExit(exc.exit_code if exit_code is None else exit_code)


def _read(path: Path, config: Config, version_key: str, component_type: str) -> TestArtifact:
    from orchestrator_core.artifact import check_compatible, read_header

    try:
        with path.open("rb") as stream:
            header = read_header(stream, source_name=str(path),
                                 verify_keys=config.artifact_verify_keys)
        check_compatible(header, component_type, {})
    except OSError as exc:
        raise ConfigError(f"--artifact {path}: cannot read it ({exc.strerror or exc})") from exc
    except ArtifactError as exc:
        raise ConfigError(f"--artifact {path}: {exc.message}") from exc
    value = header.provides.get(version_key)
    version = ",".join(value) if isinstance(value, tuple) else value or header.name
    return TestArtifact(path, header, version, config)


def _write(directory: Path, name: str, payload_type: str, component_type: str,
           version_key: str, config: Config) -> TestArtifact:
    from orchestrator_core.artifact.writer import ArtifactSpec, write_artifact

    payload = directory / "check-interface.bin"
    if not payload.exists():
        payload.write_bytes(PAYLOAD)
    family = version_key.rsplit(".", 1)[0]
    spec = ArtifactSpec(
        artifact_name=name,
        payload_type=payload_type,
        device_types=(component_type,),
        files=(payload,),
        provides={version_key: name},
        clears_provides=(f"{family}.*",),
    )
    path = directory / f"{len(list(directory.glob('*.mender')))}.mender"
    try:
        write_artifact(spec, path)
    except ConfigError as exc:
        raise ConfigError(
            f"cannot build a test Artifact of version {name!r} ({exc.message}); give the "
            f"Artifacts with --artifact"
        ) from exc
    return _read(path, config, version_key, component_type)


def artifact_maker(given: tuple[Path, ...], config: Config, payload_type: str,
                   component_type: str, directory: Path) -> ArtifactMaker:
    """``--artifact`` files (the new version, then optionally the running one), or Artifacts
    written here: a new version, and the running one to put the Component back with."""

    def make(version_key: str, provides: Mapping[str, str]
             ) -> tuple[TestArtifact, TestArtifact | None]:
        if given:
            artifacts = [_read(p, config, version_key, component_type) for p in given]
            return artifacts[0], artifacts[1] if len(artifacts) > 1 else None
        # our own Artifacts are not signed: read them without the System's verification keys
        unsigned = config._replace(artifact_verify_keys=())
        directory.mkdir(mode=0o700, exist_ok=True)
        name = f"check-interface-{time.strftime('%Y%m%dT%H%M%S')}"
        new = _write(directory, name, payload_type, component_type, version_key, unsigned)
        running = _write(directory, provides[version_key], payload_type, component_type,
                         version_key, unsigned)
        return new, running

    return make


def _table(report: Report) -> list[str]:
    who = f"{report.component_type}/{report.component_id}" if report.component_id else \
        report.component_type
    lines = [f"check-interface {report.interface} ({report.kind} {report.target}) on {who}"]
    width = max(len(c.name) for c in report.checks) if report.checks else 5
    lines.append(f"  {'CHECK':<{width}}  RESULT  DETAIL")
    for check in report.checks:
        result = check.status.upper() if check.status == FAIL else check.status
        lines.append(f"  {check.name:<{width}}  {result:<6}  {check.detail}")
    failed = sum(c.status == FAIL for c in report.checks)
    skipped = sum(c.status == SKIP for c in report.checks)
    total = len(report.checks)
    if failed:
        lines.append(f"{failed} of {total} checks FAILED ({skipped} skipped)")
    else:
        lines.append(f"all {total - skipped} checks that ran passed ({skipped} skipped)")
    return lines


def _check(config: Config, interface: str, component_type: str, args: tuple[str, ...],
           artifacts: tuple[Path, ...], dry: bool, leave_installed: bool) -> Report:
    from orchestrator_core import drivers
    from orchestrator_core.context import Component

    driver = drivers.load(Component(component_type, interface, tuple(args)), config.data_dir)
    report = Report(interface, driver.resolution.kind, driver.resolution.target, component_type)
    payload_type = getattr(driver.pm.get_plugin("driver"), "interface_name", interface)
    # the File API directories and the test Artifacts: private, and gone afterwards
    with tempfile.TemporaryDirectory(prefix="mender-orchestrator-check-") as scratch:
        root = Path(scratch)
        maker = artifact_maker(artifacts, config, payload_type, component_type,
                               root / "artifacts")
        return run(Probe(driver, config.interface_timeout_seconds), report, maker, root,
                   dry=dry, leave_installed=leave_installed)


@contextlib.contextmanager
def _no_deployment(config: Config, dry: bool) -> Iterator[None]:
    """Hold the lock while Interfaces are called: shared for the queries alone (as
    show-provides), exclusive while Artifacts are installed so that no deployment starts in
    the middle (not where no datastore exists: a workstation has none)."""
    from orchestrator_core.engine import refuse_in_progress
    from orchestrator_core.lock import exclusive, shared

    with contextlib.ExitStack() as stack:
        try:
            if not dry and config.datastore_dir.is_dir():
                stack.enter_context(exclusive(config))
                # nor between the Update Module's states of a deployment still in progress
                refuse_in_progress(config)
            else:
                stack.enter_context(shared(config, "check-interface"))
        except OrchestratorError as exc:
            _fail(exc, EXIT_BUSY)
        yield


@click.command("check-interface")
@click.argument("interface")
@click.option("--component-type", required=True,
              help="The component_type (device type) of the Component to check.")
@click.option("--arg", "args", multiple=True, metavar="ARG",
              help="One of the interface_args, in order (repeatable).")
@click.option("--artifact", "artifacts", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Artifact to install instead of a built one; a second one, of the version "
                   "the Component runs now, puts it back (repeatable, at most twice).")
@click.option("--dry", is_flag=True, help="Only ask the queries; install nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for CI).")
@click.option("--leave-installed", is_flag=True,
              help="Leave the Component on the new version instead of putting it back.")
@click.pass_context
def check_interface(ctx: click.Context, interface: str, component_type: str,
                    args: tuple[str, ...], artifacts: tuple[Path, ...], dry: bool,
                    as_json: bool, leave_installed: bool) -> None:
    """Check, on a real Component, that INTERFACE behaves as the protocol and the engine
    require: queries, a full install, rollback from each point, Cleanup, deadlines, output
    and the File API. Exit 0 only when every check passes."""
    from orchestrator_core.cli import session

    if len(artifacts) > 2:
        raise click.UsageError("--artifact is given at most twice: the version to install, "
                               "then the version the Component runs now")
    config = session(ctx).config
    with _no_deployment(config, dry):
        try:
            report = _check(config, interface, component_type, args, artifacts, dry,
                            leave_installed)
        except OrchestratorError as exc:
            _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in _table(report):
            click.echo(line)
    if not report.passed:
        raise SystemExit(EXIT_FAILED)
