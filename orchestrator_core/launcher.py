"""The ``mender-orchestrator`` console script.

``--version`` alone is answered here, without loading the command line (click and the
commands): it is how scripts and packages probe an installation, so it should cost little
more than starting Python. Every other command line goes to ``orchestrator_core.cli``, with
the garbage collector paused while it starts (``startup.py``).
"""

from __future__ import annotations

import sys

from orchestrator_core import __version__

PROG = "mender-orchestrator"


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        try:
            sys.stdout.write(f"{PROG}, version {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:  # as cli.main: the reader went away, no traceback
            sys.stderr.close()
            raise SystemExit(1) from None
        return
    from orchestrator_core.startup import pause_collection

    pause_collection()
    from orchestrator_core.cli import main as run_command_line

    run_command_line()
