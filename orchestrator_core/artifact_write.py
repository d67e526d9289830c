"""``mender-orchestrator artifact write``: a Component's module-image Artifact, in pure Python.

The options are those of ``mender-artifact write module-image`` (same names, same short
forms, same defaults for the software-version provide), so a build script can switch tools
without rewriting its arguments. The shared options are also what
``mender-orchestrator-manifest-gen`` accepts after ``--``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from orchestrator_core.artifact.header import MAX_JSON, parse_json_object
from orchestrator_core.artifact.writer import (
    COMPRESSION_NAMES,
    ArtifactSpec,
    Signer,
    software_version,
    write_artifact,
)
from orchestrator_core.errors import ConfigError, OrchestratorError

F = TypeVar("F", bound=Callable[..., Any])


class CommandFailed(click.ClickException):
    """An ``OrchestratorError`` shown as click shows errors ("Error: ..."), with the error's
    exit status: how the ``artifact`` commands and ``manifest-gen`` report a problem."""

    def __init__(self, error: OrchestratorError) -> None:
        super().__init__(error.message)
        # click declares exit_code on the class; each error kind has its own status
        self.exit_code = error.exit_code  # type: ignore[misc]


def _key_values(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, colon, value = item.partition(":")
        if not colon or not key:
            raise click.BadParameter(f"{item!r}: expected KEY:VALUE", ctx, param)
        if key in pairs and pairs[key] != value:
            raise click.BadParameter(f"{key!r} is given twice, with different values", ctx, param)
        pairs[key] = value
    return pairs


def _meta_data(path: Path | None) -> dict[str, Any] | None:
    """The meta-data file, held to the rules our reader applies to the header's JSON."""
    if path is None:
        return None
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_JSON + 1)
    except OSError as exc:
        raise ConfigError(f"meta-data file {path}: cannot read it ({exc.strerror or exc})"
                          ) from exc
    if len(data) > MAX_JSON:
        raise ConfigError(f"meta-data file {path}: more than {MAX_JSON} bytes; readers accept "
                          f"at most that much meta-data")

    def fail(problem: str) -> NoReturn:
        raise ConfigError(problem)

    return parse_json_object(data, f"meta-data file {path}", fail)


def payload_options(function: F) -> F:
    """The options shared with manifest-gen's pass-through (``--``) arguments."""
    options = [
        click.option("-o", "--output-path", type=click.Path(path_type=Path, dir_okay=False),
                     help="Where to write the Artifact."),
        click.option("-k", "--key", type=click.Path(path_type=Path, dir_okay=False),
                     help="PEM private key (RSA, ECDSA P-256 or Ed25519) to sign with."),
        click.option("--compression", type=click.Choice(COMPRESSION_NAMES), default="gzip",
                     show_default=True, help="Compression of the header and data sections."),
        click.option("-p", "--provides", multiple=True, callback=_key_values,
                     metavar="KEY:VALUE", help="Extra type-info artifact_provides (repeatable)."),
        click.option("-d", "--depends", multiple=True, callback=_key_values,
                     metavar="KEY:VALUE", help="type-info artifact_depends (repeatable)."),
        click.option("--clears-provides", multiple=True, metavar="PATTERN",
                     help="Provides (glob) this Artifact clears on install (repeatable)."),
        click.option("-g", "--provides-group", help="The artifact_group this Artifact provides."),
        click.option("-G", "--depends-groups", multiple=True,
                     help="Groups the device must be in (repeatable)."),
        click.option("-N", "--artifact-name-depends", multiple=True,
                     help="Artifact names the device must run (repeatable)."),
        click.option("-m", "--meta-data", type=click.Path(path_type=Path, dir_okay=False),
                     help="JSON object file stored as headers/0000/meta-data."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build_spec(
    *,
    payload_type: str,
    artifact_name: str,
    device_types: Sequence[str],
    files: Sequence[Path],
    provides: dict[str, str],
    depends: dict[str, str],
    clears_provides: Sequence[str],
    provides_group: str | None,
    depends_groups: Sequence[str],
    artifact_name_depends: Sequence[str],
    meta_data: Path | None,
    software_filesystem: str | None = None,
    software_name: str | None = None,
    software_version_value: str | None = None,
    default_software_version: bool = True,
    default_clears_provides: bool = True,
) -> ArtifactSpec:
    """The Artifact as ``mender-artifact write module-image`` would describe it."""
    key, value, clears = software_version(
        payload_type,
        artifact_name,
        filesystem=software_filesystem,
        name=software_name,
        version=software_version_value,
    )
    all_provides = {key: value} if default_software_version else {}
    for extra_key, extra_value in provides.items():
        if extra_key == key and default_software_version and extra_value != value:
            raise ConfigError(
                f"provides {extra_key}:{extra_value} conflicts with the default software "
                f"version {key}:{value}; use --software-version, or "
                f"--no-default-software-version"
            )
        all_provides[extra_key] = extra_value
    all_clears = [clears] if default_clears_provides else []
    all_clears += [pattern for pattern in clears_provides if pattern not in all_clears]
    return ArtifactSpec(
        artifact_name=artifact_name,
        payload_type=payload_type,
        device_types=tuple(dict.fromkeys(device_types)),
        files=tuple(files),
        provides=all_provides,
        depends=depends,
        clears_provides=tuple(all_clears),
        artifact_group=provides_group,
        depends_artifact_names=tuple(artifact_name_depends),
        depends_groups=tuple(depends_groups),
        meta_data=_meta_data(meta_data),
    )


def write_and_describe(
    spec: ArtifactSpec, output: Path, compression: str, key: Path | None
) -> list[str]:
    """Write the Artifact; the lines that tell the user what was written."""
    signer = Signer.load(key) if key is not None else None
    write_artifact(spec, output, compression=compression, signer=signer)
    lines = [
        f"Wrote Artifact {output}",
        f"  name: {spec.artifact_name}",
        f"  payload type: {spec.payload_type}",
        f"  compatible types: {', '.join(spec.device_types)}",
    ]
    lines += [f"  provides: {k}={v}" for k, v in sorted(spec.provides.items())]
    lines += [f"  depends: {k}={v}" for k, v in sorted(spec.depends.items())]
    lines += [f"  clears provides: {pattern}" for pattern in spec.clears_provides]
    lines += [f"  file: {path.name} ({path.stat().st_size} bytes)" for path in spec.files]
    lines.append(f"  compression: {compression}")
    lines.append(f"  signed with: {key}" if key is not None else "  signature: none")
    return lines


@click.command("write")
@click.option("-T", "--type", "payload_type", required=True,
              help="Payload type: the Interface (or Update Module) name that installs it.")
@click.option("-n", "--artifact-name", required=True, help="Name of the Artifact.")
@click.option("-t", "--device-type", "device_types", multiple=True, required=True,
              help="Compatible device type: the component_type (repeatable).")
@click.option("-f", "--file", "files", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Payload file (repeatable).")
@click.option("--software-filesystem", help="First part of the software-version key "
                                            "(default rootfs-image).")
@click.option("--software-name", help="Second part of the software-version key "
                                      "(default: the payload type).")
@click.option("--software-version", "software_version_value",
              help="Version value (default: the Artifact name).")
@click.option("--no-default-software-version", is_flag=True,
              help="Do not add <filesystem>.<name>.version to the provides.")
@click.option("--no-default-clears-provides", is_flag=True,
              help="Do not add <filesystem>.<name>.* to the cleared provides.")
@payload_options
def write(
    payload_type: str,
    artifact_name: str,
    device_types: tuple[str, ...],
    files: tuple[Path, ...],
    software_filesystem: str | None,
    software_name: str | None,
    software_version_value: str | None,
    no_default_software_version: bool,
    no_default_clears_provides: bool,
    output_path: Path | None,
    key: Path | None,
    compression: str,
    provides: dict[str, str],
    depends: dict[str, str],
    clears_provides: tuple[str, ...],
    provides_group: str | None,
    depends_groups: tuple[str, ...],
    artifact_name_depends: tuple[str, ...],
    meta_data: Path | None,
) -> None:
    """Write a module-image Artifact for a Component (like 'mender-artifact write module-image').

    By default it provides rootfs-image.<type>.version=<artifact name> and clears
    rootfs-image.<type>.*, the key an Interface of that name reports.
    """
    try:
        spec = build_spec(
            payload_type=payload_type,
            artifact_name=artifact_name,
            device_types=device_types,
            files=files,
            provides=provides,
            depends=depends,
            clears_provides=clears_provides,
            provides_group=provides_group,
            depends_groups=depends_groups,
            artifact_name_depends=artifact_name_depends,
            meta_data=meta_data,
            software_filesystem=software_filesystem,
            software_name=software_name,
            software_version_value=software_version_value,
            default_software_version=not no_default_software_version,
            default_clears_provides=not no_default_clears_provides,
        )
        output = output_path or Path(f"{artifact_name}.mender")
        for line in write_and_describe(spec, output, compression, key):
            click.echo(line)
    except OrchestratorError as exc:
        raise CommandFailed(exc) from None
