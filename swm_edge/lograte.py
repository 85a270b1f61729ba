"""Logging for things that can fail for a month: state changes, then a falling rate.

A dead meter polled every 10 s fails 260,000 times a month. Logging each failure fills the
SD card and hides everything else; logging only the first hides that it is still dead.
:class:`FailureLog` logs the first failure and the recovery, and in between a reminder
with counts whose interval doubles up to a day: a month of one dead meter is about forty
lines. A flapping device (fail, recover, fail, ...) goes through the same gate, so it cannot
write a line per poll either.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

FIRST_REMINDER = 60.0
MAX_REMINDER = 86_400.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class FailureLog:
    """Rate-limited log lines about one subject ("device wm-1", "bus rs485-1", ...).

    Call :meth:`failure` on every failed attempt and :meth:`success` on every good one.
    Lines are WARNING for failures and INFO for the recovery; each carries counts, so a
    reader of a rate-limited log still knows how often it failed.
    """

    def __init__(
        self,
        logger: logging.Logger,
        subject: str,
        *,
        first_reminder: float = FIRST_REMINDER,
        max_reminder: float = MAX_REMINDER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.subject = subject
        self.first_reminder = first_reminder
        self.max_reminder = max_reminder
        self.clock = clock
        self.failing = False
        self.lines = 0  # log lines written, for tests and the status command
        self._since = 0.0  # when the current episode started
        self._episode_logged = False  # did this episode get a line (so its end gets one)
        self._failures = 0  # in the current episode
        self._unlogged: Counter[str] = Counter()  # failures by reason since the last line
        self._episodes_unlogged = 0  # whole episodes that started and ended unlogged
        self._interval = first_reminder
        self._next_line = 0.0
        self._healthy_since = 0.0

    def failure(self, reason: str, note: str = "") -> None:
        """One failed attempt, with its reason (e.g. ``timeout``, ``crc-error``); ``note``
        is added to the first line of an episode (what the failure means, what happens now)."""
        now = self.clock()
        if not self.failing:
            self.failing = True
            self._since = now
            self._failures = 0
            self._episode_logged = False
            if now - self._healthy_since >= self._interval and self._episodes_unlogged == 0:
                # Healthy for a while: this is news again, start the falling rate afresh.
                self._interval = self.first_reminder
                self._next_line = 0.0
        self._failures += 1
        self._unlogged[reason] += 1
        if now < self._next_line:
            return
        if not self._episode_logged and self._failures == 1:
            text = f"{self.subject}: {reason}{'; ' + note if note else ''}"
            if self._episodes_unlogged:
                text += (
                    f" (also failed {self._episodes_unlogged} times briefly since the last line)"
                )
        else:
            text = (
                f"{self.subject}: still failing ({self._reasons()}); "
                f"{self._failures} failures in {_duration(now - self._since)}"
            )
        self._line(logging.WARNING, text, now)
        self._episode_logged = True

    def success(self) -> None:
        """One good attempt: ends a failure episode (logged if its start was)."""
        if not self.failing:
            return
        now = self.clock()
        self.failing = False
        self._healthy_since = now
        if self._episode_logged:
            self._line(
                logging.INFO,
                f"{self.subject}: recovered after {self._failures} failures in "
                f"{_duration(now - self._since)}",
                now,
                schedule=False,
            )
        else:
            self._episodes_unlogged += 1

    def _reasons(self) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in self._unlogged.most_common())

    def _line(self, level: int, text: str, now: float, *, schedule: bool = True) -> None:
        self.logger.log(level, "%s", text)
        self.lines += 1
        self._unlogged.clear()
        self._episodes_unlogged = 0
        if schedule:
            self._next_line = now + self._interval
            self._interval = min(self._interval * 2, self.max_reminder)
