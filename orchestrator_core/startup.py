"""The cyclic garbage collector, paused while the program starts.

Start-up makes a few hundred thousand objects that live until the process exits (modules,
classes, functions, compiled patterns), and the collector would scan them again and again
while they are made: about 5 ms of an install's fixed cost, and of every ``show-inventory``
poll. The console script pauses it before importing the command line; a command that goes
on to work for long (a deployment, an Artifact command, the conformance checker) resumes it
when its work starts. What start-up made is then frozen (``gc.freeze``): moved where the
collector never looks again, so later collections do not pay for it either. The price is that
a reference cycle become garbage during start-up is kept until exit (a few small objects, at
most). The short commands (queries, ``plan``, ``status``) finish with the collector paused:
their memory goes back with the process.
"""

from __future__ import annotations

import gc

_paused = False


def pause_collection() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Start-up is over: freeze what it made and collect again (a no-op unless paused here,
    so a program embedding the command line keeps its own setting)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
