"""``mender-orchestrator completion bash|zsh|fish``: click's own completion script.

The script calls ``mender-orchestrator`` back with ``_MENDER_ORCHESTRATOR_COMPLETE`` set, so
completions always match the installed commands and options.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
PROG = "mender-orchestrator"
COMPLETE_VAR = "_MENDER_ORCHESTRATOR_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  mender-orchestrator completion bash >/etc/bash_completion.d/mender-orchestrator
    zsh:   mender-orchestrator completion zsh >"${fpath[1]}/_mender-orchestrator"
    fish:  mender-orchestrator completion fish >~/.config/fish/completions/mender-orchestrator.fish
    """
    root = ctx.find_root().command
    completer = get_completion_class(shell)
    assert completer is not None  # every name in SHELLS is one click ships
    click.echo(completer(root, {}, PROG, COMPLETE_VAR).source(), nl=False)
