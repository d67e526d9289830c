"""A click group whose commands from heavier modules are imported only when one is run.

This is the start-up rule of the command line: a module imports at its top what every
caller needs; a command imports what only it needs inside its function, and a command that
lives in a heavier module is listed here by name, so ``--help``, ``--version`` and the
inventory poll never pay for modules they do not use (tests/test_startup.py checks it).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click

from orchestrator_core.startup import resume_collection


class LazyGroup(click.Group):
    """``lazy`` maps a command name to ``"module:attribute"``, the command's click object."""

    lazy: Mapping[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            # these commands may work for long (an Artifact of gigabytes, the checker's
            # hundreds of calls): start-up is over once their module is loaded
            resume_collection()
            return command
        return super().get_command(ctx, name)
