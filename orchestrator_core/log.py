"""Log records in the Mender client's shape, on stderr.

``record_id=N severity=info time="2025-Oct-15 11:08:51.593812" name="Global" msg="..."``
"""

from __future__ import annotations

import itertools
import logging
import sys
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
        name = getattr(record, "mender_name", "Global")
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        return (
            f"record_id={next(self._ids)} severity={SEVERITY.get(record.levelno, 'info')} "
            f'time="{stamp}" name="{_quote(name)}" msg="{_quote(message)}"'
        )


def setup(level: str) -> logging.Logger:
    """Send every record of the ``mender_orchestrator`` logger tree to stderr."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(MenderFormatter())
        logger.addHandler(handler)
    return logger


def component_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``name=`` (the Interface and Component) in the output."""
    return logging.LoggerAdapter(logging.getLogger(f"{ROOT}.component"), {"mender_name": name})
