"""Man pages (roff, section 1) generated from the click commands, so they never drift from
``--help``: ``python -m orchestrator_core.manpages OUTDIR`` writes ``mender-orchestrator.1``
and one ``mender-orchestrator-COMMAND.1`` per command (``-GROUP-COMMAND`` for groups).
The Debian package and the Yocto recipe run it at build time."""

from __future__ import annotations

import datetime
import inspect
import os
import sys
from pathlib import Path

import click

from orchestrator_core import DISTRIBUTION

PROG = "mender-orchestrator"


def _escape(text: str) -> str:
    """Roff-safe text: a backslash is doubled, a line may not start with a control character."""
    lines = text.replace("\\", "\\e").splitlines()
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


def _date() -> str:
    # reproducible builds: the date of the sources when the build says it
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch
            else datetime.datetime.now(datetime.UTC))
    return when.strftime("%Y-%m-%d")


def _paragraphs(text: str) -> list[str]:
    """click's help text as roff paragraphs; a ``\\b`` paragraph keeps its line breaks."""
    result = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            result.append(".nf\n" + _escape(block[2:]) + "\n.fi")
        else:
            result.append(_escape(" ".join(block.split())))
    return result


def page(command: click.Command, path: list[str], version: str) -> str:
    name = " ".join(path)
    ctx = click.Context(command, info_name=name)
    out = [f'.TH "{"-".join(path).upper()}" "1" "{_date()}" "{DISTRIBUTION} {version}" '
           '"User Commands"',
           ".SH NAME", f"{'-'.join(path)} \\- {_escape(command.get_short_help_str(200))}",
           ".SH SYNOPSIS", f".B {name}", _escape(" ".join(command.collect_usage_pieces(ctx)))]
    if command.help:
        out += [".SH DESCRIPTION", "\n.PP\n".join(_paragraphs(command.help))]
    options = [record for param in command.get_params(ctx) if isinstance(param, click.Option)
               if (record := param.get_help_record(ctx)) is not None]
    if options:
        out.append(".SH OPTIONS")
        for names, help_text in options:
            out += [".TP", f"\\fB{_escape(names)}\\fR", _escape(help_text)]
    if isinstance(command, click.Group):
        out.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            subcommand = command.get_command(ctx, sub)
            if subcommand is not None and not subcommand.hidden:
                out += [".TP", f"\\fB{sub}\\fR", _escape(subcommand.get_short_help_str(200)),
                        f"See \\fB{'-'.join([*path, sub])}\\fR(1)."]
    return "\n".join(out) + "\n"


def pages(command: click.Command, path: list[str], version: str) -> dict[str, str]:
    """Every page under ``command``, by file name."""
    result = {f"{'-'.join(path)}.1": page(command, path, version)}
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=" ".join(path))
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                result.update(pages(sub, [*path, name], version))
    return result


def write_pages(directory: Path) -> list[Path]:
    from orchestrator_core import __version__
    from orchestrator_core.atomic import write_bytes
    from orchestrator_core.cli import cli

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(pages(cli, [PROG], __version__).items()):
        write_bytes(directory / name, text.encode(), 0o644, durable=False)
        written.append(directory / name)
    return written


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {__spec__.name} OUTDIR")
    for path in write_pages(Path(sys.argv[1])):
        print(path)


if __name__ == "__main__":
    main()
