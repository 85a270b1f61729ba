"""Clock sanity: is the wall clock trustworthy enough to timestamp readings with?

A gateway without a battery-backed clock (a Raspberry Pi) boots in 1970, or at the time of
its last shutdown, and runs on that until NTP answers, which may be hours away on a site
without network. Readings taken meanwhile are still worth having, but their ``ts`` is not a
time. This module tells such readings apart instead of silently stamping them in 1970:

* :func:`kernel_clock_synchronized` asks the kernel (``adjtimex(2)``, read-only) whether an
  NTP client (systemd-timesyncd, chrony, ntpd) disciplines the clock; where that call is
  not possible it looks for systemd-timesyncd's flag file.
* :class:`ClockMonitor` stamps each reading with the wall-clock time and a clock flag
  (``None`` when trusted, :data:`UNSYNCHRONIZED` when not), and notices steps of the wall
  clock against the monotonic clock (an NTP sync stepping the clock from 1970 to now, or a
  technician's ``date -s``), which it logs and counts for the status command.

A step does not touch what is buffered: readings keep their ``seq``, which is the order in
which they were taken, whatever their ``ts`` says (docs/wire-contract.md).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TypedDict

__all__ = [
    "DEFAULT_RECHECK",
    "DEFAULT_STEP_THRESHOLD",
    "NOT_BEFORE",
    "STA_UNSYNC",
    "TIMESYNCD_FLAG",
    "TIME_ERROR",
    "UNSYNCHRONIZED",
    "ClockMonitor",
    "ClockSnapshot",
    "ClockStep",
    "ClockStepSnapshot",
    "Timex",
    "kernel_clock_synchronized",
    "read_adjtimex",
]

log = logging.getLogger(__name__)

#: The clock flag of a reading taken while the clock was not trustworthy (``Reading.clock``
#: and the ``clock`` field of the wire contract).
UNSYNCHRONIZED = "unsynchronized"

#: 2026-01-01T00:00:00Z. This software did not exist before then, so a wall clock showing an
#: earlier time is certainly wrong (a gateway that booted in 1970, or at its last shutdown
#: time of a previous version's era), whatever the kernel says. Kept close to the release
#: date so that it catches as much as possible; it never needs to move forward.
NOT_BEFORE = 1_767_225_600.0

#: A change of the wall-minus-monotonic offset larger than this (seconds) between two stamps
#: is a step. NTP slews at most 500 ppm (0.5 s in 1000 s), so between two polls a slew stays
#: far below it, while a sync after a boot in 1970 or a ``date -s`` is far above.
DEFAULT_STEP_THRESHOLD = 2.0

#: Seconds between two questions to the kernel at most. adjtimex costs about a microsecond,
#: but a busy gateway stamps thousands of readings per second; the flag of a reading may lag
#: the kernel's state by this much.
DEFAULT_RECHECK = 1.0

#: systemd-timesyncd creates this file once it has synchronised the clock (and removes it at
#: boot). Used only when adjtimex cannot be called.
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")

#: ``adjtimex`` return value: the clock is not synchronised (``TIME_ERROR``, alias
#: ``TIME_BAD``, in <sys/timex.h>).
TIME_ERROR = 5
#: ``timex.status`` bit: the clock is not synchronised (``STA_UNSYNC`` in <sys/timex.h>).
STA_UNSYNC = 0x0040


# -- the kernel's view ------------------------------------------------------------------------


class _Timeval(ctypes.Structure):
    # ``struct timeval`` as the plain ``adjtimex`` symbol takes it: two longs (on 32-bit ARM
    # that is the 32-bit time_t ABI; glibc's 64-bit time variant is ``__adjtimex64``).
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class Timex(ctypes.Structure):
    """Linux ``struct timex`` for the libc symbol ``adjtimex``.

    Laid out like glibc's <bits/timex.h> without 64-bit time on 32-bit systems (the layout
    the symbol ``adjtimex`` takes there; ``__adjtimex64`` takes the other one): every
    ``__syscall_slong_t`` is a C ``long`` (true on every Linux ABI but x32, which
    :func:`read_adjtimex` refuses), so ctypes' native alignment gives the kernel's padding.
    208 bytes on 64-bit systems, 128 on 32-bit ARM.
    """

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # The header's eleven unnamed ``int :32`` bit-fields: room the kernel may fill.
        ("_reserved", ctypes.c_int * 11),
    )


@cache
def _adjtimex_function() -> Callable[..., int]:
    """libc's ``adjtimex``, looked up once; raises OSError(ENOSYS) where there is none."""
    if sys.platform != "linux":
        raise OSError(errno.ENOSYS, f"adjtimex is Linux-only (this is {sys.platform})")
    if platform.machine() == "x86_64" and ctypes.sizeof(ctypes.c_void_p) == 4:
        # x32: __syscall_slong_t is 64-bit there, so Timex would be wrong; unknown beats a
        # kernel writing past the buffer.
        raise OSError(errno.ENOSYS, "adjtimex: the x32 ABI is not supported")
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols include libc's
        func = libc.adjtimex
    except (OSError, AttributeError) as exc:
        raise OSError(errno.ENOSYS, f"no adjtimex in the C library ({exc})") from None
    func.argtypes = (ctypes.POINTER(Timex),)
    func.restype = ctypes.c_int
    return func


def read_adjtimex() -> tuple[int, int]:
    """Ask the kernel for its clock state without changing anything (``modes = 0``).

    Returns ``(state, status)``: adjtimex's return value (``TIME_OK`` 0 … ``TIME_ERROR`` 5)
    and the ``status`` bits (``STA_UNSYNC`` …). A read-only call needs no privilege.

    Raises:
        OSError: the call is not possible: not Linux (ENOSYS), forbidden by a seccomp filter
            (EPERM, e.g. some container runtimes), not implemented (ENOSYS, e.g. gVisor).
    """
    func = _adjtimex_function()
    tx = Timex()  # zeroed: modes 0 = read only
    state = func(ctypes.byref(tx))
    if state == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex: {os.strerror(err)}")
    return state, tx.status


def kernel_clock_synchronized(
    *,
    read: Callable[[], tuple[int, int]] = read_adjtimex,
    flag_file: Path = TIMESYNCD_FLAG,
) -> bool | None:
    """Whether the kernel considers the wall clock synchronised, or ``None`` if unknown.

    ``False`` when adjtimex returns ``TIME_ERROR`` or ``STA_UNSYNC`` is set in its status
    (no NTP client has disciplined the clock, or it lost sync long ago); ``True`` otherwise.
    When adjtimex cannot be called (see :func:`read_adjtimex`), ``True`` if
    systemd-timesyncd's ``flag_file`` exists, else ``None``: without the kernel's word the
    file's absence proves nothing (another NTP client may be in charge).

    ``read`` and ``flag_file`` are there for tests.
    """
    try:
        state, status = read()
    except OSError:
        # os.path.exists, not Path.exists: a folder we may not enter means "unknown" too,
        # never an exception in the poll path.
        return True if os.path.exists(flag_file) else None
    return not (state == TIME_ERROR or status & STA_UNSYNC)


# -- the monitor ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockStep:
    """A step of the wall clock: ``size`` seconds (positive = forward), seen at wall time
    ``at`` (the new time, just after the step)."""

    at: float
    size: float


class ClockStepSnapshot(TypedDict):
    """The last step in :class:`ClockSnapshot`: size in seconds (+ forward), ISO 8601 UTC
    time after the step (``None`` if that time is not representable)."""

    size_s: float
    at: str | None


class ClockSnapshot(TypedDict):
    """What :meth:`ClockMonitor.snapshot` returns (JSON-ready).

    ``synchronized``: the kernel's (or timesyncd's) word, ``None`` when unknown;
    ``trusted``: readings stamped now get no flag; ``steps``: steps seen since start;
    ``last_step``: the latest, or ``None``; ``flagged_readings``: readings stamped with a
    flag since start.
    """

    synchronized: bool | None
    trusted: bool
    steps: int
    last_step: ClockStepSnapshot | None
    flagged_readings: int


def _iso(ts: float) -> str | None:
    if not math.isfinite(ts):
        return None
    try:
        dt = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None  # a clock set to year 10000 is wrong, but must not break the status
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ClockMonitor:
    """Timestamps for readings, with a flag when the wall clock cannot be trusted.

    Args:
        wall: the wall clock (epoch seconds).
        mono: a monotonic clock (seconds); steps are measured against it.
            ``time.monotonic`` stands still while the system is suspended, so a resume looks
            like a forward step: logged and counted, nothing worse (gateways do not suspend).
        synchronized: the kernel's view, see :func:`kernel_clock_synchronized`; asked at most
            once per ``recheck`` seconds (of ``mono``), and again right after a step.
        step_threshold: seconds the wall clock must move against ``mono`` between two stamps
            to count as a step.
        not_before: a wall-clock time earlier than this (epoch seconds) is certainly wrong;
            readings get the flag whatever the kernel says.
        recheck: seconds between two calls of ``synchronized`` at most.

    Thread-safe: pollers on several threads may share one monitor.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        synchronized: Callable[[], bool | None] = kernel_clock_synchronized,
        step_threshold: float = DEFAULT_STEP_THRESHOLD,
        not_before: float = NOT_BEFORE,
        recheck: float = DEFAULT_RECHECK,
    ) -> None:
        if not step_threshold > 0:
            raise ValueError(f"step_threshold must be positive, got {step_threshold!r}")
        if recheck < 0:
            raise ValueError(f"recheck must not be negative, got {recheck!r}")
        self._wall = wall
        self._mono = mono
        self._ask = synchronized
        self.step_threshold = step_threshold
        self.not_before = not_before
        self.recheck = recheck
        self._lock = threading.Lock()
        self._synchronized: bool | None = None
        self._asked_at: float | None = None  # mono time of the last question; None: never
        self._offset: float | None = None  # wall - mono at the previous stamp
        self._trusted_logged: bool | None = None  # trust state last logged; None: nothing yet
        self.steps = 0
        self.last_step: ClockStep | None = None
        self.flagged_readings = 0

    def _kernel_state(self, mono_now: float) -> bool | None:
        """The cached answer of ``synchronized``, asked again when older than ``recheck``."""
        asked = self._asked_at
        if asked is None or not 0 <= mono_now - asked < self.recheck:
            self._synchronized = self._ask()
            self._asked_at = mono_now
        return self._synchronized

    def _untrusted_reason(self, wall_now: float, synchronized: bool | None) -> str | None:
        """Why readings stamped now get the flag, or ``None`` when the clock is trusted.

        Unknown status (``None``) with a plausible time is trusted: most gateways without
        the kernel's word (containers) run on a host whose clock is fine, and flagging all
        their readings would make the flag meaningless.
        """
        if synchronized is False:
            return "per the kernel: no NTP sync"
        if not wall_now >= self.not_before:  # also NaN
            return (
                f"it shows {_iso(wall_now) or wall_now}, which is before "
                f"{_iso(self.not_before)} and cannot be right"
            )
        return None

    def stamp(self) -> tuple[float, str | None]:
        """The wall-clock time for a reading taken now, and its clock flag.

        The flag is ``None`` when the clock is trusted and :data:`UNSYNCHRONIZED` when the
        kernel says the clock is not synchronised or it shows a time before ``not_before``.
        Also detects steps of the wall clock since the previous call (logged once each, with
        size and direction, and counted).
        """
        with self._lock:
            wall_now = self._wall()
            mono_now = self._mono()
            offset = wall_now - mono_now
            previous, self._offset = self._offset, offset
            if previous is not None and abs(offset - previous) > self.step_threshold:
                self._step(wall_now, offset - previous)
                # A step is usually an NTP client's first sync: ask again now, so the very
                # next reading is not flagged for another recheck period.
                self._asked_at = None
            synchronized = self._kernel_state(mono_now)
            reason = self._untrusted_reason(wall_now, synchronized)
            self._log_trust(reason, synchronized)
            if reason is None:
                return wall_now, None
            self.flagged_readings += 1
            return wall_now, UNSYNCHRONIZED

    def _step(self, wall_now: float, size: float) -> None:
        self.steps += 1
        self.last_step = ClockStep(wall_now, size)
        log.warning(
            "wall clock stepped %s by %.1f s (now %s); buffered readings keep their order "
            "(seq), timestamps taken before the step are off by up to that much",
            "forward" if size > 0 else "back",
            abs(size),
            _iso(wall_now) or wall_now,
        )

    def _log_trust(self, reason: str | None, synchronized: bool | None) -> None:
        """Log the trust state when it changes (and the first one), never per reading."""
        trusted = reason is None
        if trusted == self._trusted_logged:
            return
        first = self._trusted_logged is None
        self._trusted_logged = trusted
        if not trusted:
            log.warning(
                'clock not synchronised (%s): readings are flagged "%s" until it is',
                reason,
                UNSYNCHRONIZED,
            )
        elif synchronized:
            if first:
                log.info("clock synchronised")
            else:
                log.info(
                    "clock synchronised; %d readings were flagged %r before",
                    self.flagged_readings,
                    UNSYNCHRONIZED,
                )
        else:
            log.info(
                "clock trusted: the kernel's synchronisation status is unknown (no adjtimex, "
                "no systemd-timesyncd flag) and the time is after %s%s",
                _iso(self.not_before),
                "" if first else f"; {self.flagged_readings} readings were flagged before",
            )

    def snapshot(self) -> ClockSnapshot:
        """The clock's state for the status command: synchronised, trusted, steps, flags.

        Asks the kernel again only when the cached answer is older than ``recheck``.
        """
        with self._lock:
            wall_now = self._wall()
            synchronized = self._kernel_state(self._mono())
            step = self.last_step
            return {
                "synchronized": synchronized,
                "trusted": self._untrusted_reason(wall_now, synchronized) is None,
                "steps": self.steps,
                "last_step": (
                    None if step is None else {"size_s": round(step.size, 3), "at": _iso(step.at)}
                ),
                "flagged_readings": self.flagged_readings,
            }
