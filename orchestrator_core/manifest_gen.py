"""``mender-orchestrator-manifest-gen``: a Manifest wrapped in a Mender Artifact (SPEC 12).

Same command line as the original tool: ``[options] MANIFEST [-- extra options]``. The
Artifact has payload type ``mender-orchestrator-manifest``, the Manifest as its one file,
the System types as its compatible device types, provides
``data-partition.mender-orchestrator-manifest.version=<name>`` and clears
``data-partition.mender-orchestrator-manifest.*``. The Artifact name is ``-n`` (default: the
Manifest's ``name``); it may differ from the Manifest's ``name``, which is left as it is
(SPEC 12; the upstream docs' own example does so). The original hands what follows ``--`` to
``mender-artifact write module-image``; here the options of that command our own writer
understands go to it, options that would change what makes it a Manifest Artifact are
refused, and any other is refused naming the ones it takes.

Unlike the original, the whole Manifest is validated (not only its ``order`` values), so a
Manifest the orchestrator would reject never reaches a device. Exit status: 0 written, 2 bad
input (nothing written); the original exits 1 on every error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from orchestrator_core.artifact_write import (
    CommandFailed,
    build_spec,
    payload_options,
    write_and_describe,
)
from orchestrator_core.errors import ConfigError, OrchestratorError

PAYLOAD_TYPE = "mender-orchestrator-manifest"
SOFTWARE_FILESYSTEM = "data-partition"
DEFAULT_OUTPUT = Path("orchestrator-manifest.mender")


@click.command("extra options", add_help_option=False)
@click.option("-n", "--artifact-name")
@click.option("-t", "--device-type", "system_types", multiple=True)
@click.option("--software-version", "software_version_value")
@payload_options
def _extra_options(**options: Any) -> dict[str, Any]:
    return options


# options of 'mender-artifact write module-image' that would make the Artifact something
# the Update Module does not install, or hide the Manifest version from the client's Provides
CONFLICTING = ("-T", "--type", "-f", "--file", "--software-filesystem", "--software-name",
               "--no-default-software-version", "--no-default-clears-provides")


def _parse_extra(arguments: tuple[str, ...]) -> dict[str, Any]:
    """The options after ``--``, parsed as ``mender-artifact`` would take them."""
    for refused in CONFLICTING:
        if refused in arguments or any(a.startswith(refused + "=") for a in arguments):
            raise click.UsageError(
                f"option {refused} after '--' conflicts with what manifest-gen sets itself "
                f"(the payload type, the Manifest file and the provide "
                f"{SOFTWARE_FILESYSTEM}.{PAYLOAD_TYPE}.version)"
            )
    try:
        parsed: dict[str, Any] = _extra_options.main(
            list(arguments), prog_name="manifest-gen --", standalone_mode=False
        )
    except click.NoSuchOption as exc:
        understood = ", ".join("/".join(param.opts) for param in _extra_options.params)
        raise click.UsageError(
            f"after '--': {exc.format_message()} manifest-gen passes on only the options of "
            f"'mender-artifact write module-image' its Artifact writer understands: {understood}"
        ) from None
    except click.ClickException as exc:
        raise click.UsageError(f"after '--': {exc.format_message()}") from None
    return parsed


def _check_manifest(path: Path, artifact_name: str | None, system_types: tuple[str, ...]
                    ) -> str:
    """Validate the Manifest; the Artifact name (the Manifest's ``name`` unless given)."""
    from orchestrator_core.manifest import load_manifest

    manifest = load_manifest(path)
    missing = [t for t in system_types if t not in manifest.system_types_compatible]
    if missing:
        raise ConfigError(
            f"{path}: system type(s) {', '.join(missing)} given with --system-type are not in "
            f"the Manifest's system_types_compatible {list(manifest.system_types_compatible)}"
        )
    return artifact_name or manifest.name


def generate(
    manifest: Path,
    system_types: tuple[str, ...],
    output: Path,
    *,
    artifact_name: str | None = None,
    compression: str = "gzip",
    key: Path | None = None,
    **extra: Any,
) -> list[str]:
    """Write the Manifest Artifact; the lines describing it. ``extra``: the other options of
    ``payload_options`` (provides, depends, ...), empty by default."""
    name = _check_manifest(manifest, artifact_name, system_types)
    options: dict[str, Any] = {
        "provides": {}, "depends": {}, "clears_provides": (), "provides_group": None,
        "depends_groups": (), "artifact_name_depends": (), "meta_data": None,
    }
    options.update(extra)
    spec = build_spec(
        payload_type=PAYLOAD_TYPE,
        artifact_name=name,
        device_types=system_types,
        files=[manifest],
        software_filesystem=SOFTWARE_FILESYSTEM,
        **options,
    )
    return write_and_describe(spec, output, compression, key)


@click.command("manifest-gen", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "--artifact-name",
              help="Artifact name (default: the Manifest's name, which it need not equal).")
@click.option("-t", "--system-type", "system_types", multiple=True, required=True,
              help="System type the Artifact is compatible with (repeatable).")
@click.option("-o", "--output-path", type=click.Path(path_type=Path, dir_okay=False),
              help=f"Output file (default: {DEFAULT_OUTPUT}).")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA OPTIONS...]")
def manifest_gen(
    artifact_name: str | None,
    system_types: tuple[str, ...],
    output_path: Path | None,
    manifest: Path,
    extra: tuple[str, ...],
) -> None:
    """Write MANIFEST as a Manifest Artifact for the mender-orchestrator-manifest Update Module.

    After '--' come options of 'mender-artifact write module-image': -k/--key (sign),
    --compression, -p/--provides, -d/--depends, --clears-provides, -g/--provides-group,
    -G/--depends-groups, -N/--artifact-name-depends, -m/--meta-data, --software-version,
    -t/--device-type (more System types), and -o/-n (which override the options above, as in
    the original tool). Exit status 0 when written, 2 on bad input (nothing is written).
    """
    options = _parse_extra(extra)
    output = options.pop("output_path") or output_path or DEFAULT_OUTPUT
    name = options.pop("artifact_name") or artifact_name
    all_types = tuple(dict.fromkeys(system_types + options.pop("system_types")))
    try:
        lines = generate(manifest, all_types, output, artifact_name=name, **options)
    except OrchestratorError as exc:
        raise CommandFailed(exc) from None
    click.echo(f"Artifact {output} generated successfully:")
    for line in lines[1:]:
        click.echo(line)


def main() -> None:
    manifest_gen.main(prog_name="mender-orchestrator-manifest-gen")
