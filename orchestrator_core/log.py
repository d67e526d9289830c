"""Log records on stderr: in the Mender client's shape for the Update Module and journald,

``record_id=N severity=info time="2025-Oct-15 11:08:51.593812" name="Global" msg="..."``

and, when stderr is a terminal, as lines a person reads (``error: ...`` with the fix where
one is known, in colour unless ``NO_COLOR`` is set or ``TERM=dumb``), with a live view of the
running step below them.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from datetime import datetime

from orchestrator_core.hints import hint_for

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
SEVERITY = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
ROOT = "mender_orchestrator"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MenderFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%b-%d %H:%M:%S.%f")
        # the libraries drivers use (python-can, udsoncan, ...) log under their own names
        default = "Global" if record.name.startswith(ROOT) else record.name
        name = getattr(record, "mender_name", default)
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        return (
            f"record_id={next(self._ids)} severity={SEVERITY.get(record.levelno, 'info')} "
            f'time="{stamp}" name="{_quote(name)}" msg="{_quote(message)}"'
        )


WIDTH = 120  # the widest line the live view draws
RED, YELLOW, BOLD, DIM, RESET = "\033[31m", "\033[33m", "\033[1m", "\033[2m", "\033[0m"


def colour_wanted() -> bool:
    """Colour on a terminal that shows it, unless the user said no (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") not in ("", "dumb")


class HumanFormatter(logging.Formatter):
    """One record as a person reads it on a terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.colour else text

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        name = getattr(record, "mender_name", None)
        if name is None and not record.name.startswith(ROOT):
            name = record.name  # a driver's library
        if name:
            message = f"{self._paint(DIM, name + ':')} {message}"
        if record.levelno >= logging.ERROR:
            text = f"{self._paint(BOLD + RED, 'error:')} {message}"
            hint = hint_for(record.getMessage())
            return text + (f"\n  {self._paint(BOLD, 'fix:')} {hint}" if hint else "")
        if record.levelno >= logging.WARNING:
            return f"{self._paint(BOLD + YELLOW, 'warning:')} {message}"
        if record.levelno <= logging.DEBUG:
            return self._paint(DIM, message)
        return message


class _StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to stderr; on a terminal, keeps a live view (some lines) below them."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.status: list[str] = []
        self.terminal = stderr_is_terminal()

    def _erase(self) -> None:
        """Wipe the live view; the cursor ends at the start of its first line."""
        self.stream.write("\r\033[K" + "\033[A\r\033[K" * max(0, len(self.status) - 1))

    def _draw(self) -> None:
        self.stream.write("\n".join(self.status))

    def emit(self, record: logging.LogRecord) -> None:
        if self.terminal and self.status:
            with _status_lock:
                self._erase()
                super().emit(record)
                self._draw()
                self.stream.flush()
        else:
            super().emit(record)

    def show(self, lines: list[str]) -> None:
        with _status_lock:
            if self.terminal:
                self._erase()
                self.status = [line[: columns() - 1] for line in lines]
                self._draw()
                self.stream.flush()


_status_lock = threading.Lock()
_handler: _StatusAwareHandler | None = None


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def columns() -> int:
    """How wide a line may be: the terminal's width, at most ``WIDTH``."""
    try:
        # a terminal that never had its size set says 0 columns
        return min(WIDTH, os.get_terminal_size(sys.stderr.fileno()).columns or WIDTH)
    except (OSError, ValueError):
        return WIDTH


def set_status_line(text: str | None) -> None:
    """Show ``text`` as the live line under the log (terminals only); None removes it."""
    set_status_lines([] if text is None else [text])


def set_status_lines(lines: list[str]) -> None:
    """Show ``lines`` as the live view under the log (terminals only); [] removes it."""
    if _handler is not None and _handler.terminal:
        _handler.show(lines)


def setup(level: str) -> logging.Logger:
    """Send every record of the ``mender_orchestrator`` logger tree to stderr."""
    global _handler
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    if _handler is None:
        _handler = _StatusAwareHandler()
        human = HumanFormatter(colour_wanted()) if _handler.terminal else None
        _handler.setFormatter(human or MenderFormatter())
        logger.addHandler(_handler)
        # other libraries' warnings, in the same shape instead of Python's bare default
        libraries = logging.getLogger()
        libraries.addHandler(_handler)
        libraries.setLevel(max(LEVELS[level], logging.WARNING))
    return logger


def component_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``name=`` (the Interface and Component) in the output."""
    return logging.LoggerAdapter(logging.getLogger(f"{ROOT}.component"), {"mender_name": name})
