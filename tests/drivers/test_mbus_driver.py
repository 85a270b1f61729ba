"""The M-Bus driver end to end: the core's serial bus over a real pty pair to simulated
meters (swm_edge_hil.mbus), nothing mocked.

The simulator's line holds meters by primary address (1, 2, 5) and by secondary address
only (87654321, 87650000); meter 5 replays the real OMS example frame of libmbus
(test/test-frames/oms_frame2.hex, rscada/libmbus git snapshot f09d613b, as recorded in
shared/reference/devices.json).
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Iterator
from typing import Any

import pytest
from swm_edge_drivers.mbus import MbusDevice, MbusDriver
from swm_edge_hil.mbus import MbusFault, MbusSimulator, SimMeter

from swm_edge.bus import Bus
from swm_edge.driver import CrcError, DeviceTimeout, PointValue, ReadError
from swm_edge.model import BusSpec, DeviceSpec

OMS_FRAME2 = bytes.fromhex(
    "68 29 29 68 08 FD 72 44 22 75 92 24 23 29 07 1F 00 00 00 0C 13 27 04 85 02 0B 3B 27 01 00"
    " 4C 13 19 54 44 01 42 6C FF 0C 02 FD 17 00 00 99 16"
)
TIMEOUT = 0.3

WATER_POINTS: list[dict[str, Any]] = [
    {"name": "volume", "quantity": "volume", "storage": 0, "tariff": 0, "subunit": 0},
    {"name": "volume_l", "quantity": "volume", "unit": "L"},
    {"name": "flow", "quantity": "volume_flow", "unit": "L/h"},
    {"name": "clock", "quantity": "datetime"},
    {"name": "errors", "quantity": "error_flags"},
    {"name": "due_volume", "quantity": "volume", "storage": 1},
    {"name": "due_date", "quantity": "date", "storage": 1},
    {"name": "tariff1", "quantity": "volume", "tariff": 1},
    {"name": "register2", "quantity": "volume", "subunit": 1},
    {"name": "operating", "quantity": "operating_time", "unit": "d"},
    {"name": "firmware", "quantity": "firmware_version"},
    {"name": "status", "quantity": "status"},
]


def water_meter(ident: str, **kw: Any) -> SimMeter:
    return SimMeter(ident, **kw)


@pytest.fixture
def sim() -> Iterator[MbusSimulator]:
    meters = [
        water_meter("11490378", primary=1),
        water_meter(
            "12345678",
            primary=2,
            telegrams=3,
            flow_temperature=41.5,
            return_temperature=30.5,
            volume_l=1_000_000.0,
        ),
        SimMeter.from_frame(OMS_FRAME2, primary=5),
        water_meter("87654321", manufacturer="EFE", medium=0x06, volume_l=332.0),
        water_meter("87650000", manufacturer="ACW", volume_l=100.0),
    ]
    with MbusSimulator(meters) as simulator:
        yield simulator


def device(options: dict[str, Any], *, timeout: float = TIMEOUT) -> DeviceSpec:
    opts = MbusDevice.model_validate(options)
    return DeviceSpec(
        id="meter",
        bus="mbus-1",
        interval=60,
        points=MbusDriver.points_of(opts),
        driver="mbus",
        options=opts,
        timeout=timeout,
    )


def bus_for(sim: MbusSimulator) -> Bus:
    return Bus(
        BusSpec(id="mbus-1", type="mbus", timeout=TIMEOUT, port=sim.port, baudrate=2400, parity="E")
    )


class Session:
    """One bus on the simulator's port, opened once for several polls.

    (A pty cannot store the parity bit, and this kernel rejects a later tcsetattr whose
    only change is PARENB, so a pty is opened with parity E once per test.)
    """

    def __init__(self, sim: MbusSimulator) -> None:
        self.bus = bus_for(sim)

    async def __aenter__(self) -> Session:
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()

    async def poll(self, driver: MbusDriver) -> dict[str, PointValue] | ReadError:
        """One poll; a failed poll gives its error."""
        try:
            async with self.bus.turn() as transport:
                return await driver.read(transport)
        except ReadError as exc:
            return exc


def run(sim: MbusSimulator, *drivers: MbusDriver) -> list[dict[str, PointValue] | ReadError]:
    """Poll each driver once in turn on one bus."""

    async def main() -> list[dict[str, PointValue] | ReadError]:
        async with Session(sim) as line:
            return [await line.poll(d) for d in drivers]

    return asyncio.run(main())


def good(result: dict[str, PointValue] | ReadError) -> dict[str, Any]:
    assert isinstance(result, dict), result
    bad = {k: v for k, v in result.items() if v.quality != "good"}
    assert not bad, bad
    return {k: v.value for k, v in result.items()}


def test_primary_address_reads_every_kind_of_record(sim: MbusSimulator) -> None:
    (result,) = run(sim, MbusDriver(device({"address": 1, "points": WATER_POINTS})))
    assert good(result) == {
        "volume": 54.321,
        "volume_l": 54321.0,
        "flow": 500.0,
        "clock": calendar.timegm((2025, 3, 13, 11, 11, 0)),
        "errors": 0,
        "due_volume": 41.0,
        "due_date": calendar.timegm((2024, 12, 31, 0, 0, 0)),
        "tariff1": 1.234,
        "register2": 0.777,
        "operating": 521.0,
        "firmware": 2,
        "status": 0,
    }
    assert isinstance(result, dict)
    assert result["volume"].unit == "m3" and result["clock"].unit == "s"
    # SND_NKE, then REQ_UD2 with FCB set (the first request after a reset).
    assert list(sim.requests) == [bytes.fromhex("10 40 01 41 16"), bytes.fromhex("10 7B 01 7C 16")]


def test_volume_rises_between_polls(sim: MbusSimulator) -> None:
    driver = MbusDriver(device({"address": 1, "points": [{"name": "v", "quantity": "volume"}]}))

    async def main() -> tuple[Any, Any]:
        async with Session(sim) as line:
            first = await line.poll(driver)
            sim.advance(3600)  # one hour at 500 L/h
            return first, await line.poll(driver)

    first, second = asyncio.run(main())
    assert good(second)["v"] == pytest.approx(good(first)["v"] + 0.5)


def test_multi_telegram_reply_toggles_fcb_until_the_last_telegram(sim: MbusSimulator) -> None:
    points = [
        {"name": "volume", "quantity": "volume"},  # telegram 1
        {"name": "flow_temperature", "quantity": "flow_temperature"},  # telegram 1
        {"name": "return_temperature", "quantity": "return_temperature"},  # telegram 2
        {"name": "due_date", "quantity": "date", "storage": 1},  # telegram 2
        {"name": "firmware", "quantity": "firmware_version"},  # telegram 3
    ]
    (result,) = run(sim, MbusDriver(device({"address": 2, "points": points})))
    values = good(result)
    assert values["volume"] == 1000.0
    assert values["flow_temperature"] == 41.5 and values["return_temperature"] == 30.5
    assert values["firmware"] == 2
    requests = [r.hex(" ").upper() for r in sim.requests]
    assert requests == ["10 40 02 42 16", "10 7B 02 7D 16", "10 5B 02 5D 16", "10 7B 02 7D 16"]


def test_max_telegrams_bounds_the_poll(sim: MbusSimulator) -> None:
    points = [
        {"name": "volume", "quantity": "volume"},
        {"name": "fw", "quantity": "firmware_version"},
    ]
    driver = MbusDriver(device({"address": 2, "max_telegrams": 2, "points": points}))
    (result,) = run(sim, driver)
    assert isinstance(result, dict)
    assert result["volume"].value == 1000.0
    assert result["fw"].quality == "bad" and result["fw"].error == "decode"  # never read
    assert sim.meter(2).seen["req_ud2"] == 2


def test_a_failing_later_telegram_marks_only_the_missing_points(sim: MbusSimulator) -> None:
    meter = sim.meter(2)
    sim.set_fault(2, "bad_checksum")
    meter.faulty_telegrams = frozenset({1})
    points = [
        {"name": "volume", "quantity": "volume"},
        {"name": "fw", "quantity": "firmware_version"},
    ]
    (result,) = run(sim, MbusDriver(device({"address": 2, "points": points})))
    assert isinstance(result, dict)
    assert result["volume"].value == 1000.0
    assert result["fw"].error == "crc"


def test_without_reset_fcb_carries_on_between_polls(sim: MbusSimulator) -> None:
    driver = MbusDriver(
        device({"address": 1, "reset": False, "points": [{"name": "v", "quantity": "volume"}]})
    )
    results = run(sim, driver, driver)
    assert [good(r) for r in results] == [{"v": 54.321}] * 2
    assert sim.meter(1).seen["nke"] == 0
    assert [r.hex(" ").upper() for r in sim.requests] == ["10 7B 01 7C 16", "10 5B 01 5C 16"]


def test_secondary_address_selects_the_meter(sim: MbusSimulator) -> None:
    points = [{"name": "v", "quantity": "volume"}, {"name": "fab", "quantity": "fabrication_no"}]
    exact = MbusDriver(device({"secondary": "87654321", "points": points}))
    wildcard = MbusDriver(
        device({"secondary": "8765FFFF", "manufacturer": "EFE", "points": points})
    )
    by_medium = MbusDriver(device({"secondary": "8765FFFF", "medium": 7, "points": points}))
    results = run(sim, exact, wildcard, by_medium)
    assert good(results[0]) == {"v": 0.332, "fab": 87654321}
    assert good(results[1]) == {"v": 0.332, "fab": 87654321}
    assert good(results[2]) == {"v": 0.1, "fab": 87650000}
    # The selection frame on the wire: CI 52, ident 87654321 LSB first, no wildcards.
    selection = bytes.fromhex("68 0B 0B 68 73 FD 52 21 43 65 87 FF FF FF FF")
    assert any(r.startswith(selection) for r in sim.requests)
    assert sim.meter("87654321").seen["select"] == 2
    assert sim.meter("87650000").seen["select"] == 1


def test_an_ambiguous_wildcard_is_a_collision(sim: MbusSimulator) -> None:
    driver = MbusDriver(
        device({"secondary": "8765FFFF", "points": [{"name": "v", "quantity": "volume"}]})
    )
    (result,) = run(sim, driver)
    assert isinstance(result, CrcError), result


def test_absent_meters_time_out(sim: MbusSimulator) -> None:
    points = [{"name": "v", "quantity": "volume"}]
    results = run(
        sim,
        MbusDriver(device({"address": 9, "points": points})),
        MbusDriver(device({"secondary": "99999999", "points": points})),
    )
    assert all(isinstance(r, DeviceTimeout) for r in results), results


def test_a_real_telegram_replayed_by_primary_address(sim: MbusSimulator) -> None:
    points = [
        {"name": "volume", "quantity": "volume"},
        {"name": "flow", "quantity": "volume_flow"},
        {"name": "due_volume", "quantity": "volume", "storage": 1},
        {"name": "due_date", "quantity": "date", "storage": 1},
        {"name": "errors", "quantity": "error_flags"},
        {"name": "missing", "quantity": "flow_temperature"},
    ]
    (result,) = run(sim, MbusDriver(device({"address": 5, "points": points})))
    assert isinstance(result, dict)
    missing = result.pop("missing")
    assert missing.quality == "bad" and missing.error == "decode" and missing.unit == "Cel"
    # Documented decoding (libmbus oms_frame2.norm.xml).
    assert good(result) == {
        "volume": 2850.427,
        "flow": 0.127,
        "due_volume": 1445.419,
        "due_date": calendar.timegm((2007, 12, 31, 0, 0, 0)),
        "errors": 0,
    }


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (MbusFault.SILENT, DeviceTimeout),
        (MbusFault.BAD_CHECKSUM, CrcError),
        (MbusFault.TRUNCATED, CrcError),
        (MbusFault.GARBAGE, CrcError),
        (MbusFault.BAD_LENGTH, CrcError),
        (MbusFault.BAD_STOP, CrcError),
    ],
)
def test_faults_give_their_reason_and_spare_the_other_meters(
    sim: MbusSimulator, fault: MbusFault, error: type[ReadError]
) -> None:
    points = [{"name": "v", "quantity": "volume"}]
    faulty = MbusDriver(device({"address": 1, "points": points}))
    other = MbusDriver(device({"address": 5, "points": points}))
    secondary = MbusDriver(device({"secondary": "87654321", "points": points}))
    sim.set_fault(1, fault)

    async def main() -> list[Any]:
        async with Session(sim) as line:
            results = [await line.poll(d) for d in (faulty, other, secondary, faulty, other)]
            sim.set_fault(1, None)
            return [*results, await line.poll(faulty)]

    results = asyncio.run(main())
    for k in (0, 3):
        assert isinstance(results[k], error), results[k]
        assert results[k].reason == {DeviceTimeout: "timeout", CrcError: "crc"}[error]
    assert good(results[1]) == {"v": 2850.427}
    assert good(results[2]) == {"v": 0.332}
    assert good(results[4]) == {"v": 2850.427}
    assert good(results[5]) == {"v": 54.321}  # healed


def test_undecodable_records_are_bad_points_with_decode(sim: MbusSimulator) -> None:
    sim.set_fault(1, MbusFault.BAD_RECORDS)
    points = [{"name": "v", "quantity": "volume"}, {"name": "status", "quantity": "status"}]
    (result,) = run(sim, MbusDriver(device({"address": 1, "points": points})))
    assert isinstance(result, dict)
    assert result["v"].quality == "bad" and result["v"].error == "decode"
    assert result["status"].value == 0  # the header is still readable


def test_a_silent_secondary_meter_times_out_at_the_selection(sim: MbusSimulator) -> None:
    sim.set_fault("87654321", MbusFault.SILENT)
    driver = MbusDriver(
        device({"secondary": "87654321", "points": [{"name": "v", "quantity": "volume"}]})
    )
    (result,) = run(sim, driver)
    assert isinstance(result, DeviceTimeout) and "selection" in str(result)


def test_a_slow_line_longer_than_the_timeout_still_reads() -> None:
    # 2400 baud, 11 bits per byte: the ~80-byte answer takes ~0.4 s, more than the 0.15 s
    # timeout; the driver keeps reading while bytes keep coming.
    with MbusSimulator([SimMeter("11490378", primary=1)], baudrate=2400) as slow:
        driver = MbusDriver(
            device({"address": 1, "points": [{"name": "v", "quantity": "volume"}]}, timeout=0.15)
        )
        (result,) = run(slow, driver)
    assert good(result) == {"v": 54.321}


def test_estimate_seconds_counts_the_frames_at_11_bits_per_byte() -> None:
    bus = BusSpec(id="m", type="mbus", timeout=1, port="/dev/null", baudrate=2400, parity="E")
    primary = device({"address": 1, "points": [{"name": "v", "quantity": "volume"}]})
    secondary = device({"secondary": "12345678", "points": [{"name": "v", "quantity": "volume"}]})
    no_reset = device({"address": 1, "reset": False, "points": []})
    char = 11 / 2400
    # SND_NKE + E5, REQ_UD2 + a full 261-byte answer, 50 ms turnaround per request.
    assert MbusDriver.estimate_seconds(primary, bus) == pytest.approx((6 + 266) * char + 0.1)
    assert MbusDriver.estimate_seconds(secondary, bus) == pytest.approx(
        (6 + 18 + 266) * char + 0.15
    )
    assert MbusDriver.estimate_seconds(no_reset, bus) == pytest.approx(266 * char + 0.05)
    modbus = BusSpec(id="m", type="modbus-rtu", timeout=1, port="/dev/null")
    assert MbusDriver.estimate_seconds(primary, modbus) is None


def test_the_driver_is_registered() -> None:
    from swm_edge.driver import load_driver

    assert load_driver("mbus") is MbusDriver
    assert "mbus" in MbusDriver.bus_types


def test_without_points_every_record_becomes_a_reading(sim: MbusSimulator) -> None:
    """The issue's example: no points list, so every record is published, named by
    quantity with storage/tariff/subunit when non-zero, in base (canonical) units."""
    auto, configured = run(
        sim,
        MbusDriver(device({"address": 1})),
        MbusDriver(device({"address": 1, "points": WATER_POINTS})),
    )
    values = good(auto)
    assert isinstance(auto, dict) and isinstance(configured, dict)
    # the same records as the configured points, under their automatic names and units
    assert values["volume"] == configured["volume"].value == 54.321
    assert auto["volume"].unit == "m3"
    assert values["volume_flow"] == 0.5 and auto["volume_flow"].unit == "m3/h"
    assert values["volume_storage1"] == configured["due_volume"].value
    assert values["date_storage1"] == configured["due_date"].value
    assert values["volume_tariff1"] == configured["tariff1"].value
    assert values["volume_subunit1"] == configured["register2"].value
    assert values["datetime"] == configured["clock"].value
    assert values["error_flags"] == 0
    assert "fabrication_no" in values or "firmware_version" in values
    assert len(set(values)) == len(values)


def test_without_points_a_silent_meter_still_explains_the_gap() -> None:
    """A meter configured without points that never answered: the core publishes one
    bad `_device` value with the reason; once it answered, its points are known."""
    from swm_edge.scheduler import DEVICE_POINT, DevicePoller

    async def main() -> tuple[Any, Any, Any]:
        with MbusSimulator([water_meter("11490378", primary=1)]) as simulator:
            async with Session(simulator) as line:
                spec = device({"address": 1}, timeout=0.1)
                poller = DevicePoller(spec, MbusDriver(spec), line.bus, sink=_ignore)
                simulator.meters[0].fault = MbusFault("silent")
                before = await poller.poll_once()
                simulator.meters[0].fault = None
                answered = await poller.poll_once()
                simulator.meters[0].fault = MbusFault("silent")
                after = await poller.poll_once()
                return before, answered, after

    before, answered, after = asyncio.run(main())
    assert dict(before.points) == {DEVICE_POINT: PointValue.bad("timeout")}
    assert answered.points["volume"].quality == "good"
    assert set(after.points) == set(answered.points)
    assert all(v.error == "timeout" for v in after.points.values())
    assert after.points["volume"].unit == "m3"


async def _ignore(_reading: Any) -> None:
    return None
