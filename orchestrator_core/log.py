"""Log records in the Mender client's shape, on stderr.

``record_id=N severity=info time="2025-Oct-15 11:08:51.593812" name="Global" msg="..."``
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from datetime import datetime

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


class _StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to stderr; on a terminal, keeps a live status line below them."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.status: str | None = None
        self.terminal = stderr_is_terminal()

    def emit(self, record: logging.LogRecord) -> None:
        if self.terminal and self.status is not None:
            with _status_lock:
                self.stream.write("\r\033[K")
                super().emit(record)
                self.stream.write(self.status)
                self.stream.flush()
        else:
            super().emit(record)

    def show(self, status: str | None) -> None:
        with _status_lock:
            self.status = status
            if self.terminal:
                self.stream.write("\r\033[K" + (status or ""))
                self.stream.flush()


_status_lock = threading.Lock()
_handler: _StatusAwareHandler | None = None


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def set_status_line(text: str | None) -> None:
    """Show ``text`` as the live line under the log (terminals only); None removes it."""
    if _handler is not None and _handler.terminal:
        _handler.show(text)


def setup(level: str) -> logging.Logger:
    """Send every record of the ``mender_orchestrator`` logger tree to stderr."""
    global _handler
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    if _handler is None:
        _handler = _StatusAwareHandler()
        _handler.setFormatter(MenderFormatter())
        logger.addHandler(_handler)
        # other libraries' warnings, in the same shape instead of Python's bare default
        libraries = logging.getLogger()
        libraries.addHandler(_handler)
        libraries.setLevel(max(LEVELS[level], logging.WARNING))
    return logger


def component_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``name=`` (the Interface and Component) in the output."""
    return logging.LoggerAdapter(logging.getLogger(f"{ROOT}.component"), {"mender_name": name})
