"""The ``mender-orchestrator`` console script.

``--version`` alone is answered here, without loading the command line (click and the
commands): it is how scripts and packages probe an installation, so it should cost little
more than starting Python. Every other command line goes to ``orchestrator_core.cli``, with
the garbage collector paused while it starts (``startup.py``).

Once the command has ended, the process leaves without the interpreter's teardown, which
frees every module and object one by one: about 5 ms of every install and every
``show-inventory`` poll, for memory the kernel takes back anyway. Everything a normal exit
does that has an effect outside the process still happens first: the ``atexit`` functions
(logging's flush, the removal of private directories, ``weakref.finalize`` callbacks) and the
flush of stdout and stderr. When a thread the interpreter would wait for still runs (one not
a daemon), or the exit status is not a number, the interpreter exits the usual way instead.
"""

from __future__ import annotations

import sys

from orchestrator_core import __version__

TYPE_CHECKING = False  # typing costs --version 9 ms of imports; type checkers take this name
if TYPE_CHECKING:
    from typing import NoReturn

PROG = "mender-orchestrator"


def run() -> None:
    """The command line, for a program that goes on afterwards (exits by ``SystemExit``)."""
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


def main() -> NoReturn:
    try:
        run()
    except SystemExit as leaving:
        _exit(leaving.code)
    _exit(0)


def _exit(status: object) -> NoReturn:
    import atexit
    import os

    if status is None:
        status = 0
    threading = sys.modules.get("threading")  # never imported (--version): no thread started
    waited_for = threading is not None and any(
        not thread.daemon and thread is not threading.main_thread()
        for thread in threading.enumerate())
    if not isinstance(status, int) or waited_for:
        raise SystemExit(status)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: let the interpreter report it
        raise SystemExit(status) from None
    os._exit(status)
