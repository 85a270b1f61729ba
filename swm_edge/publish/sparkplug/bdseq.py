"""The Sparkplug birth/death sequence number (``bdSeq``), kept across restarts.

Sparkplug 3.0 puts a ``bdSeq`` metric in the NDEATH that an edge node registers as its MQTT
will, and the same value in the NBIRTH it publishes on that connection; a host pairs an
NDEATH with the NBIRTH it ends by that number. The value starts at 0 and goes up by one with
every MQTT CONNECT, 255 wrapping to 0 (tck-id-topics-nbirth-bdseq-increment,
tck-id-payloads-ndeath-bdseq). A gateway that restarted (or was killed) and began again at 0
could hand a host an NDEATH that matches an older NBIRTH, so the last value used is kept in a
small JSON file, ``{"bdSeq": 17}``, written before the CONNECT that carries it: atomically
(a temporary file, fsync, rename, fsync of the folder), so a power cut leaves the old value
or the new one. After any restart the next value is one more than the last one any broker
may have been given. When the file cannot be written (read-only or full disk) the counter
goes on in memory and a rate-limited warning says so; when it cannot be read it starts at 0
again, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from swm_edge.lograte import FailureLog

log = logging.getLogger(__name__)

#: bdSeq is 0-255 (Sparkplug 3.0, tck-id-payloads-ndeath-bdseq: "if the previous value was
#: 255, the next must be zero").
MODULO = 256


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BdSeqStore:
    """The ``bdSeq`` of the current MQTT connection attempt, persisted in ``path``.

    :meth:`next` is called by the network thread before each CONNECT, :attr:`current` by the
    event loop thread; a lock keeps the two consistent.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._failures = FailureLog(log, f"sparkplug bdSeq file {self.path}")
        last = self._load()
        #: The value of the last will handed out (None: none yet in this process).
        self._current: int | None = None
        #: The value the next :meth:`next` hands out.
        self._next = 0 if last is None else (last + 1) % MODULO

    def _load(self) -> int | None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("sparkplug: cannot read %s (%s); bdSeq starts at 0", self.path, exc)
            return None
        value = doc.get("bdSeq") if isinstance(doc, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MODULO:
            return value
        log.warning("sparkplug: %s holds no valid bdSeq (%r); bdSeq starts at 0", self.path, doc)
        return None

    @property
    def current(self) -> int:
        """The bdSeq of the latest will (of the connection a birth is published on). Before
        the first will of this process: the value the first will will carry."""
        with self._lock:
            return self._next if self._current is None else self._current

    def next(self) -> int:
        """The bdSeq for a new CONNECT: one more than the last (mod 256), persisted first."""
        with self._lock:
            value = self._next
            self._save(value)
            self._current = value
            self._next = (value + 1) % MODULO
            return value

    def _save(self, value: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, json.dumps({"bdSeq": value}).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._failures.failure(
                f"cannot write ({exc.strerror or exc})",
                "bdSeq goes on in memory; after a restart it may repeat a recent value",
            )
            return
        _fsync_folder(self.path.parent)
        self._failures.success()
