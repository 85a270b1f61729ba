"""Scheduler logic: slot alignment, overruns, retries and backoff.

The bus here carries a scripted line (our own ModbusLine interface) so timing can be
controlled exactly; the real Modbus stacks are exercised in tests/integration.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.bus import Bus, ModbusLine
from swm_edge.driver import DeviceTimeout, Driver, ReadError
from swm_edge.model import BusSpec, DataType, DeviceSpec, PointSpec, PointValue, Reading, Table
from swm_edge.scheduler import DevicePoller, next_slot


@given(
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    interval=st.sampled_from([0.1, 0.5, 1.0, 2.0, 10.0, 60.0, 900.0]),
)
def test_next_slot_is_the_next_grid_point(now: float, interval: float) -> None:
    slot = next_slot(now, interval)
    assert slot > now
    assert slot - now <= interval + 1e-6
    k = slot / interval
    assert math.isclose(k, round(k), abs_tol=1e-6)


class OpenLine(ModbusLine):
    """A line that is always open; the drivers below never use it."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def is_open(self) -> bool:
        return True

    async def read_registers(self, *a: Any, **k: Any) -> list[int]:
        raise AssertionError("not used")

    async def read_bits(self, *a: Any, **k: Any) -> list[bool]:
        raise AssertionError("not used")


POINT = PointSpec("level", Table.HOLDING, 0, DataType.UINT16, unit="m")


def device(dev_id: str, interval: float, **kw: Any) -> DeviceSpec:
    return DeviceSpec(id=dev_id, bus="b", interval=interval, points=(POINT,), **kw)


class ScriptedDriver(Driver):
    """Answers from a script: a number = a good value after that many seconds, an
    exception = raised after its ``delay`` attribute (default 0)."""

    def __init__(self, dev: DeviceSpec, script: list[Any], default: Any = 1) -> None:
        super().__init__(dev)
        self.script = script
        self.default = default
        self.calls: list[float] = []

    async def read(self, transport: Any) -> dict[str, PointValue]:
        self.calls.append(time.monotonic())
        step = self.script.pop(0) if self.script else self.default
        if isinstance(step, ReadError):
            await asyncio.sleep(getattr(step, "delay", 0))
            raise step
        await asyncio.sleep(step if isinstance(step, float) else 0)
        return {"level": PointValue.good(len(self.calls), "m")}


def bus() -> Bus:
    return Bus(
        BusSpec(id="b", type="modbus-rtu", timeout=0.1, port="/x"),
        OpenLine(BusSpec(id="b", type="modbus-rtu", timeout=0.1, port="/x")),
    )


async def run_for(pollers: list[DevicePoller], seconds: float) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in pollers]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


def test_polls_on_wall_clock_grid_without_drift() -> None:
    out: list[Reading] = []

    async def sink(r: Reading) -> None:
        out.append(r)

    async def main() -> None:
        dev = device("d", 0.2)
        await run_for([DevicePoller(dev, ScriptedDriver(dev, []), bus(), sink)], 1.3)

    asyncio.run(main())
    assert 5 <= len(out) <= 7
    for r in out:
        # started within a few ms of a 0.2 s grid point
        offset = r.ts - round(r.ts / 0.2) * 0.2
        assert abs(offset) < 0.03, offset
    slots = [round(r.ts / 0.2) for r in out]
    assert slots == list(range(slots[0], slots[0] + len(slots)))  # no slot skipped


def test_overrun_takes_next_slot_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    out: list[Reading] = []

    async def sink(r: Reading) -> None:
        out.append(r)

    async def main() -> DevicePoller:
        dev = device("slow", 0.1)
        # every poll takes 0.25 s: 2 or 3 slots missed each time, never a pile-up
        p = DevicePoller(dev, ScriptedDriver(dev, [], default=0.25), bus(), sink)
        await run_for([p], 1.2)
        return p

    p = asyncio.run(main())
    assert 3 <= len(out) <= 5
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(out)]
    assert all(0.25 <= g <= 0.45 for g in gaps), gaps
    assert p.stats.overruns >= 2 * (len(out) - 1)
    # said once, not per skipped slot
    warnings = [r for r in caplog.records if "slots skipped" in r.getMessage()]
    assert len(warnings) == 1


def test_retries_then_bad_reading_with_reason() -> None:
    async def main() -> tuple[Reading, ScriptedDriver]:
        dev = device("d", 1.0, retries=2)
        drv = ScriptedDriver(dev, [DeviceTimeout(), DeviceTimeout(), DeviceTimeout(), 0.0])
        p = DevicePoller(dev, drv, bus(), sink=None)  # type: ignore[arg-type]
        return await p.poll_once(), drv

    reading, drv = asyncio.run(main())
    assert len(drv.calls) == 3  # 1 + 2 retries
    assert reading.points["level"].quality == "bad"
    assert reading.points["level"].error == "timeout"
    assert reading.points["level"].value is None


def test_non_retryable_error_is_not_retried() -> None:
    from swm_edge.driver import DeviceException

    async def main() -> tuple[Reading, ScriptedDriver]:
        dev = device("d", 1.0, retries=3)
        drv = ScriptedDriver(dev, [DeviceException(2)])
        return await DevicePoller(dev, drv, bus(), sink=None).poll_once(), drv  # type: ignore[arg-type]

    reading, drv = asyncio.run(main())
    assert len(drv.calls) == 1
    assert reading.points["level"].error == "exception:2"


def test_driver_bug_is_isolated_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A driver that raises: its device gets driver-error readings, the other device on the
    bus keeps its schedule, and the log says it once, not every poll."""
    out: list[Reading] = []

    class Buggy(Driver):
        async def read(self, transport: Any) -> dict[str, PointValue]:
            raise ZeroDivisionError("oops")

    async def sink(r: Reading) -> None:
        out.append(r)

    async def main() -> DevicePoller:
        shared = bus()
        bad_dev = device("buggy", 0.1, offline_after=1000)
        good_dev = device("fine", 0.1)
        bad = DevicePoller(bad_dev, Buggy(bad_dev), shared, sink)
        good = DevicePoller(good_dev, ScriptedDriver(good_dev, []), shared, sink)
        await run_for([bad, good], 1.05)
        return bad

    caplog.set_level("INFO")
    bad = asyncio.run(main())
    buggy = [r for r in out if r.device_id == "buggy"]
    fine = [r for r in out if r.device_id == "fine"]
    assert len(buggy) >= 9 and len(fine) >= 9
    assert all(r.points["level"].error == "driver-error" for r in buggy)
    assert all(r.points["level"].quality == "good" for r in fine)
    assert bad.stats.driver_errors == len(buggy)
    logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_dead_device_is_backed_off_and_costs_its_bus_little() -> None:
    """A dead device and a live one share a bus: the live one keeps every slot, the dead one
    is tried less and less often but still yields a bad reading for each slot."""
    out: list[Reading] = []

    async def sink(r: Reading) -> None:
        out.append(r)

    async def main() -> DevicePoller:
        shared = bus()
        dead_dev = device("dead", 0.1, retries=0, offline_after=2, offline_backoff_max=10)
        live_dev = device("live", 0.1)
        timeout = DeviceTimeout()
        timeout.delay = 0.05  # type: ignore[attr-defined]
        dead = DevicePoller(dead_dev, ScriptedDriver(dead_dev, [], default=timeout), shared, sink)
        live = DevicePoller(live_dev, ScriptedDriver(live_dev, []), shared, sink)
        await run_for([dead, live], 2.05)
        return dead

    dead = asyncio.run(main())
    dead_readings = [r for r in out if r.device_id == "dead"]
    live_readings = [r for r in out if r.device_id == "live"]
    assert len(live_readings) >= 18
    assert all(r.points["level"].quality == "good" for r in live_readings)
    # every slot of the dead device is explained...
    assert len(dead_readings) >= 18
    assert all(r.points["level"].error == "timeout" for r in dead_readings)
    # ...but after 2 failures it is tried at 0.1, 0.2, 0.4, 0.8 s gaps, not every slot
    assert len(dead.driver.calls) <= 7  # type: ignore[attr-defined]
    assert dead.stats.offline
    assert dead.stats.skipped_offline >= 10


def test_device_recovers_from_backoff() -> None:
    async def main() -> DevicePoller:
        dev = device("d", 0.1, retries=0, offline_after=1, offline_backoff_max=0.2)
        p = DevicePoller(
            dev, ScriptedDriver(dev, [DeviceTimeout(), DeviceTimeout()]), bus(), sink=_discard
        )
        await run_for([p], 1.5)
        return p

    p = asyncio.run(main())
    assert not p.stats.offline
    assert p.stats.last_quality == "good"
    assert p.stats.consecutive_failures == 0


async def _discard(_r: Reading) -> None:
    return None


@pytest.mark.parametrize("jump", [-3600.0, 3600.0])
def test_wall_clock_jump_does_not_stall_polling(jump: float) -> None:
    """NTP steps the clock an hour: polling carries on in the new grid within a slot or two."""
    offset = [0.0]
    out: list[Reading] = []

    async def sink(r: Reading) -> None:
        out.append(r)
        if len(out) == 3:
            offset[0] = jump

    async def main() -> None:
        dev = device("d", 0.1)
        p = DevicePoller(
            dev, ScriptedDriver(dev, []), bus(), sink, clock=lambda: time.time() + offset[0]
        )
        await run_for([p], 1.2)

    asyncio.run(main())
    after = [r for r in out[3:]]
    assert len(after) >= 6
    assert all(abs(r.ts - (time.time() + jump)) < 2.0 for r in after[-2:])


def test_readings_carry_the_stamp_time_and_clock_flag() -> None:
    stamps = iter([(12.0, "unsynchronized"), (1_795_000_000.0, None)])

    async def main() -> list[Reading]:
        dev = device("d", 1.0, retries=0, offline_after=1, offline_backoff_max=60)
        drv = ScriptedDriver(dev, [DeviceTimeout()])
        p = DevicePoller(dev, drv, bus(), sink=None, stamp=lambda: next(stamps))  # type: ignore[arg-type]
        # a failed poll (backed off at once), then a skipped slot: both stamped
        return [await p.poll_once(), await p.poll_once()]

    first, second = asyncio.run(main())
    assert (first.ts, first.clock) == (12.0, "unsynchronized")
    assert (second.ts, second.clock) == (1_795_000_000.0, None)
    assert second.points["level"].error == "timeout"
