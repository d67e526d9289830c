"""``mender-orchestrator artifact ...``: look at Artifacts without deploying them.

``inspect`` reads the whole Artifact, verifying everything (signature when a key is given,
header and every payload file against the manifest), and prints what it holds in the shape
of ``mender-artifact read``. Any verification failure exits non-zero with a message.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import click

from orchestrator_core.artifact.header import ArtifactHeader
from orchestrator_core.artifact.reader import ArtifactReader
from orchestrator_core.errors import ArtifactError, OrchestratorError
from orchestrator_core.json_output import option as json_option
from orchestrator_core.lazy_group import LazyGroup


class _ArtifactGroup(LazyGroup):
    lazy = {"write": "orchestrator_core.artifact_write:write"}  # loads the writer, cryptography


@click.group("artifact", cls=_ArtifactGroup)
def artifact() -> None:
    """Inspect Mender Artifacts."""


def _listed(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _value(value: str | tuple[str, ...] | list[str]) -> str:
    return value if isinstance(value, str) else _listed(value)


def _key_values(title: str, values: Mapping[str, Any], indent: str) -> list[str]:
    if not values:
        return [f"{indent}{title}: Nothing"]
    return [f"{indent}{title}:"] + [
        f"{indent}  {key}: {_value(value)}" for key, value in sorted(values.items())
    ]


def describe(header: ArtifactHeader, files: list[tuple[str, int, str]]) -> list[str]:
    """The report ``inspect`` prints, as lines."""
    depends = header.header_info["artifact_depends"]
    lines = [
        "Mender Artifact:",
        f"  Name: {header.name}",
        "  Format: mender",
        "  Version: 3",
        f"  Signature: {header.signature.describe()}",
        f"  Compatible devices: {_listed(header.device_types)}",
        f"  Provides group: {header.group or ''}",
        f"  Depends on one of artifact(s): {_listed(depends.get('artifact_name') or [])}",
        f"  Depends on one of group(s): {_listed(depends.get('artifact_group') or [])}",
        "  State scripts:",
        *(f"    {script}" for script in header.scripts),
        "",
        "Updates:",
        "  0:",
        f"    Type: {header.payload_type if header.payload_type is not None else 'empty payload'}",
    ]
    if header.augmented:
        lines.append("    Augmented: yes (header-augment and manifest-augment are unsigned)")
    lines += _key_values("Provides", header.type_provides, "    ")
    lines += _key_values("Depends", header.type_info.get("artifact_depends") or {}, "    ")
    lines.append(f"    Clears Provides: {json.dumps(list(header.clears_provides))}")
    if header.meta_data:
        pretty = json.dumps(dict(header.meta_data), indent=2, sort_keys=True).splitlines()
        lines += ["    Metadata:", *(f"      {line}" for line in pretty)]
    else:
        lines.append("    Metadata: Nothing")
    lines.append("    Files:" if files else "    Files: none")
    for name, size, checksum in files:
        lines += [
            f"      name:     {name}",
            f"      size:     {size}",
            f"      checksum: {checksum}",
        ]
    return lines


def inspect_stream(
    stream: BinaryIO, source_name: str, verify_keys: tuple[Path, ...], as_json: bool = False
) -> str:
    """Read and verify a whole Artifact; the report, as text or JSON. Raises on any failure."""
    reader = ArtifactReader(stream, source_name=source_name, verify_keys=verify_keys)
    header = reader.read_header()
    checksums = dict(header.payload_checksums)
    files = []
    for payload in reader.payload_files():
        payload.finish()
        files.append((payload.name, payload.size, checksums[payload.name]))
    if as_json:
        from orchestrator_core import json_output

        return json.dumps(json_output.artifact(header, files), indent=2, ensure_ascii=False)
    return "\n".join(describe(header, files))


@artifact.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option(
    "--verify-key",
    "verify_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM public key the signature must verify with (repeatable: any one will do).",
)
@json_option
def inspect(file: str, verify_keys: tuple[Path, ...], as_json: bool) -> None:
    """Verify an Artifact (FILE, or - for standard input) and print what it holds."""
    try:
        if file == "-":
            if sys.stdin is None:  # started with file descriptor 0 closed
                raise ArtifactError("Artifact <standard input>: standard input is closed")
            report = inspect_stream(sys.stdin.buffer, "<standard input>", verify_keys, as_json)
        else:
            try:
                stream = open(file, "rb")
            except OSError as exc:
                raise ArtifactError(
                    f"Artifact {file}: cannot open it ({exc.strerror or exc})"
                ) from exc
            with stream:
                report = inspect_stream(stream, file, verify_keys, as_json)
    except OrchestratorError as exc:
        # its module loads the writer (cryptography): imported on failure only
        from orchestrator_core.artifact_write import CommandFailed

        raise CommandFailed(exc) from None
    click.echo(report)
