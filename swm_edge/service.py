"""Process concerns: logging set-up and signal handling for ``swm-edge run``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

# syslog priorities by logging level, for journald's "<N>" line prefixes (sd-daemon(3)).
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """``<4>swm_edge.bus: bus rs485-1: ...``: journald reads the priority from the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd connected (sd_journal_stream_fd(3)):
    ``$JOURNAL_STREAM`` holds its ``device:inode``; a child that inherited the variable
    but writes elsewhere (a pipe, a terminal) must not get ``<N>`` prefixes."""
    try:
        dev, ino = (int(x) for x in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (KeyError, ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level: str = "info", fmt: str = "auto") -> None:
    """Log to stderr: journald prefixes under systemd, JSON on request, else plain text."""
    if fmt == "auto":
        fmt = "journal" if stderr_is_journal() else "text"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "journal":
        handler.setFormatter(JournalFormatter("%(message)s"))
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pymodbus logs every failed transaction at ERROR; our own messages say it better.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def install_signal_handlers(stop: Callable[[], None], reload: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop()``; SIGHUP (``systemctl reload``) calls ``reload()``."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
