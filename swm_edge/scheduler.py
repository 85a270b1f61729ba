"""Fixed-rate, wall-clock-aligned polling.

Every device gets a slot grid aligned to the wall clock (``interval: 10`` polls at :00,
:10, :20 …). A poll that runs past the next slot skips to the first slot still ahead and
counts the overrun: slots never pile up. Devices on one bus take turns on the bus's lock,
so an RS-485 line sees strictly sequential requests while TCP buses poll concurrently.

A failed poll still produces a :class:`~swm_edge.model.Reading`, with every point bad and a
reason: a gap in the data is always explained. A device that keeps failing is backed off so
it costs its line little until it returns; its skipped slots yield bad readings without
touching the line. The scheduler hands readings to a sink (the buffer's queue) and never
waits on publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from swm_edge.bus import Bus
from swm_edge.driver import Driver, ReadError
from swm_edge.lograte import FailureLog
from swm_edge.model import DeviceSpec, PointValue, Quality, Reading, Reason

log = logging.getLogger(__name__)

Sink = Callable[[Reading], Awaitable[None]]

# Longest single sleep: the wall clock is re-read at least this often, so a clock step
# (NTP sync on a gateway that booted in 1970) re-aligns the grid instead of stalling it.
MAX_SLEEP = 1.0
# The one point of a reading from a device whose points are not known yet, that failed.
DEVICE_POINT = "_device"
# Seconds between repeated warnings about skipped slots of one device.
OVERRUN_LOG_EVERY = 600.0


def next_slot(now: float, interval: float) -> float:
    """The first wall-clock slot of the grid ``k * interval`` strictly after ``now``."""
    return (math.floor(now / interval) + 1) * interval


@dataclass
class DeviceStats:
    """What the status command and the tests want to know about one device."""

    polls: int = 0
    good_polls: int = 0
    errors: int = 0
    overruns: int = 0
    driver_errors: int = 0
    skipped_offline: int = 0
    consecutive_failures: int = 0
    last_read: float | None = None
    last_quality: str | None = None
    last_error: str | None = None
    offline: bool = False


class DevicePoller:
    """Polls one device on its slot grid and sends every result to the sink."""

    def __init__(
        self,
        device: DeviceSpec,
        driver: Driver,
        bus: Bus,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        stamp: Callable[[], tuple[float, str | None]] | None = None,
    ) -> None:
        self.device = device
        self.driver = driver
        self.bus = bus
        self.sink = sink
        self.clock = clock
        # The time of a reading and the clock's trust flag (swm_edge.clock.ClockMonitor).
        self.stamp = stamp if stamp is not None else lambda: (clock(), None)
        self.stats = DeviceStats()
        self._retry_at = 0.0  # monotonic time before which a backed-off device is skipped
        self._overrun_logged_at: float | None = None
        # Names and units of the points a driver that discovers them last reported.
        self._discovered: dict[str, str | None] = {}
        self.failures = FailureLog(log, f"device {device.id}")
        # Monotonic time the run loop last came round: the watchdog's sign of progress.
        self.heartbeat = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set; a poll in flight is finished and delivered."""
        interval = self.device.interval
        slot = next_slot(self.clock(), interval)
        while not stopping.is_set():
            self.heartbeat = time.monotonic()
            delay = slot - self.clock()
            if delay > interval + MAX_SLEEP:
                # The wall clock went back: realign rather than wait out the jump.
                slot = next_slot(self.clock(), interval)
                continue
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=min(delay, MAX_SLEEP))
                continue
            started = time.monotonic()
            reading = await self.poll_once()
            await self.sink(reading)
            now = self.clock()
            following = slot + interval
            if now >= following:
                if time.monotonic() - started < interval:
                    # The poll was quick: the wall clock stepped forward (an NTP sync), no
                    # slot was missed. Realign instead of counting an hour as overruns.
                    following = next_slot(now, interval)
                else:
                    missed = math.floor((now - following) / interval) + 1
                    self._overrun(missed)
                    following += missed * interval
            slot = following

    def stall_limit(self, floor: float) -> float:
        """How long one turn of the run loop may take before the poller counts as hung:
        at least ``floor``, more for slow devices (every point a request timing out on every
        attempt, plus three intervals of waiting for the bus)."""
        d = self.device
        worst_poll = (1 + d.retries) * ((d.timeout or 1.0) + d.request_delay) * len(d.points)
        return max(floor, 3 * d.interval + worst_poll)

    def _overrun(self, missed: int) -> None:
        self.stats.overruns += missed
        # Once, then at most every OVERRUN_LOG_EVERY: an undersized line must be visible
        # in the log without writing a line per slot.
        now = time.monotonic()
        if self._overrun_logged_at is None or now - self._overrun_logged_at >= OVERRUN_LOG_EVERY:
            self._overrun_logged_at = now
            log.warning(
                "device %s: polls take longer than the %g s interval; %d slots skipped so far "
                "(lengthen the interval, speed up the line, or split the bus)",
                self.device.id,
                self.device.interval,
                self.stats.overruns,
            )

    async def poll_once(self) -> Reading:
        """Read the device now (with retries), or report why not."""
        ts, clock_flag = self.stamp()
        if self.stats.offline and time.monotonic() < self._retry_at:
            # Backed off: explain the slot without spending line time on it.
            self.stats.skipped_offline += 1
            self.stats.polls += 1
            self.stats.errors += 1
            self.stats.last_read = ts
            reason = self.stats.last_error or Reason.TIMEOUT
            self.failures.failure(reason)
            return Reading(self.device.id, ts, self._all_bad(reason), clock_flag)
        points = await self._read_with_retries()
        return self._record(ts, points, clock_flag)

    async def _read_with_retries(self) -> dict[str, PointValue]:
        attempts = 1 + self.device.retries
        last: ReadError | None = None
        for _ in range(attempts):
            try:
                async with self.bus.turn(self.device.request_delay) as transport:
                    return await self.driver.read(transport)
            except ReadError as exc:
                last = exc
                if not exc.retryable:
                    break
            except Exception as exc:  # a driver bug must not stop the other devices
                if self.stats.last_error != Reason.DRIVER_ERROR:
                    # Once per state change: a broken driver must not fill the SD card.
                    log.exception(
                        "device %s: driver %s raised an unexpected error; its readings are "
                        "bad with reason driver-error until it recovers",
                        self.device.id,
                        self.device.driver,
                    )
                self.stats.driver_errors += 1
                last = ReadError(str(exc), reason=Reason.DRIVER_ERROR)
                break
        assert last is not None
        return self._all_bad(last.reason)

    def _all_bad(self, reason: str) -> dict[str, PointValue]:
        points = {p.name: p.unit for p in self.device.points} or self._discovered
        if not points:
            # A device whose points come from its answers has not answered yet: the
            # reserved name says the whole device failed (docs/wire-contract.md).
            points = {DEVICE_POINT: None}
        return {name: PointValue.bad(reason, unit) for name, unit in points.items()}

    def _record(self, ts: float, points: dict[str, PointValue], clock_flag: str | None) -> Reading:
        stats = self.stats
        stats.polls += 1
        stats.last_read = ts
        if not self.device.points and points and DEVICE_POINT not in points:
            self._discovered = {name: v.unit for name, v in points.items()}
        bad = [v for v in points.values() if v.quality is Quality.BAD]
        if bad:
            stats.errors += 1
            stats.last_error = bad[0].error
        if len(bad) == len(points):
            stats.last_quality = Quality.BAD
            stats.consecutive_failures += 1
            if stats.consecutive_failures >= self.device.offline_after:
                self._back_off()
        else:
            stats.last_quality = Quality.GOOD
            stats.good_polls += 1
            self.failures.success()
            stats.offline = False
            stats.consecutive_failures = 0
        return Reading(self.device.id, ts, points, clock_flag)

    def _back_off(self) -> None:
        stats = self.stats
        self.failures.failure(
            stats.last_error or Reason.TIMEOUT,
            f"no valid answer in {stats.consecutive_failures} polls; backing off "
            "(every slot still yields a bad reading)",
        )
        stats.offline = True
        excess = stats.consecutive_failures - self.device.offline_after
        delay = min(self.device.interval * 2 ** min(excess, 30), self.device.offline_backoff_max)
        self._retry_at = time.monotonic() + delay
