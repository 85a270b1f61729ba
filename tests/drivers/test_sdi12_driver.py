"""The SDI-12 driver end to end: the core's real Bus over a real pty pair, against the
simulated sensors of swm_edge_hil.sdi12 (a multi-parameter sonde at address 0 and a level
probe at address 1 on one line). Nothing of the transport is mocked.

A pty cannot carry a break; the simulated sensors answer without one (see hil/sdi12.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from swm_edge_drivers.sdi12 import Sdi12Device, Sdi12Driver
from swm_edge_hil.sdi12 import (
    SONDE_PARAMETERS,
    Parameter,
    Sdi12Line,
    SimulatedSdi12Sensor,
)

from swm_edge.bus import Bus
from swm_edge.driver import CrcError, SerialTransport, load_driver
from swm_edge.model import BusSpec, DeviceSpec, PointValue, Reading
from swm_edge.scheduler import DevicePoller

T = TypeVar("T")

PROBE_PARAMETERS = (
    Parameter("level", "m", 1.2, 0.1, 0.002, 3),
    Parameter("water_temperature", "Cel", 10.0, 1.0, 0.05, 2),
)
BATTERY = (Parameter("battery", "V", 12.4, 0.2, 0.01, 2),)

SONDE_POINTS = [
    {"name": p.name, "index": i + 1, "unit": p.unit} for i, p in enumerate(SONDE_PARAMETERS)
]
PROBE_POINTS = [
    {"name": p.name, "index": i + 1, "unit": p.unit} for i, p in enumerate(PROBE_PARAMETERS)
]


def sonde(**kw: Any) -> SimulatedSdi12Sensor:
    # ttt 1 s announced, ready (and service request) after 30 ms; three values per D page,
    # so the six values need D0 and D1.
    kw = {"ttt": 1, "ready_after": 0.03, "values_per_page": 3, "seed": 1, **kw}
    return SimulatedSdi12Sensor("0", **kw)


def probe() -> SimulatedSdi12Sensor:
    return SimulatedSdi12Sensor("1", PROBE_PARAMETERS, ttt=0, model="LEVEL1", seed=2)


@pytest.fixture
def line() -> Iterator[Sdi12Line]:
    with Sdi12Line([sonde(), probe()]) as sim:
        yield sim


def device(dev_id: str, address: str, points: list[dict[str, Any]], **opts: Any) -> DeviceSpec:
    options = Sdi12Device.model_validate({"address": address, "points": points, **opts})
    return DeviceSpec(
        id=dev_id,
        bus="sdi-1",
        interval=60,
        points=Sdi12Driver.points_of(options),
        driver="sdi12",
        options=options,
        timeout=0.1,
    )


def run(sim: Sdi12Line, body: Callable[[Bus], Awaitable[T]]) -> T:
    """Run ``body`` with a started SDI-12 bus on the simulated line."""

    async def main() -> T:
        bus = Bus(
            BusSpec(
                id="sdi-1",
                type="sdi12",
                timeout=0.1,
                port=sim.port,
                baudrate=1200,
                parity="E",
                bytesize=7,
            )
        )
        await bus.start()
        try:
            return await body(bus)
        finally:
            await bus.stop()

    return asyncio.run(main())


async def read(bus: Bus, dev: DeviceSpec) -> dict[str, PointValue]:
    async with bus.turn() as transport:
        return await Sdi12Driver(dev).read(transport)


async def poll(bus: Bus, dev: DeviceSpec) -> Reading:
    async def sink(reading: Reading) -> None:
        pass

    return await DevicePoller(dev, Sdi12Driver(dev), bus, sink).poll_once()


def good(values: dict[str, PointValue]) -> dict[str, Any]:
    assert all(v.quality == "good" for v in values.values()), values
    return {name: v.value for name, v in values.items()}


def test_registered_for_sdi12_buses() -> None:
    assert load_driver("sdi12") is Sdi12Driver
    assert Sdi12Driver.bus_types == {"sdi12"}


def test_m_measurement_with_service_request_and_two_data_pages(line: Sdi12Line) -> None:
    dev = device("sonde-1", "0", SONDE_POINTS)
    started = time.monotonic()
    values = run(line, lambda bus: read(bus, dev))
    elapsed = time.monotonic() - started
    sensor = line.sensors["0"]
    assert good(values) == sensor.last_values
    assert values["temperature"].unit == "Cel"
    assert sensor.commands == {"M": 1, "D0": 1, "D1": 1}
    # the service request ended the wait, not the announced second
    assert elapsed < 0.9


def test_mc_checks_the_crc_of_every_page(line: Sdi12Line) -> None:
    dev = device("sonde-1", "0", SONDE_POINTS, crc=True)
    values = run(line, lambda bus: read(bus, dev))
    sensor = line.sensors["0"]
    assert good(values) == sensor.last_values
    assert sensor.commands == {"MC": 1, "D0": 1, "D1": 1}


@pytest.mark.parametrize("crc", [False, True])
def test_concurrent_measurement_waits_the_announced_time(line: Sdi12Line, crc: bool) -> None:
    dev = device("sonde-1", "0", SONDE_POINTS, command="C", crc=crc)
    started = time.monotonic()
    values = run(line, lambda bus: read(bus, dev))
    sensor = line.sensors["0"]
    assert good(values) == sensor.last_values
    assert sensor.commands == {("CC" if crc else "C"): 1, "D0": 1, "D1": 1}
    assert time.monotonic() - started >= 1.0  # aC! sends no service request: wait ttt


def test_non_compliant_sensor_without_service_request_is_read_after_ttt() -> None:
    # The standard's example d: "00012" and no service request; the recorder waits 1 s.
    with Sdi12Line([sonde(service_requests=False)]) as sim:
        dev = device("sonde-1", "0", SONDE_POINTS)
        started = time.monotonic()
        values = run(sim, lambda bus: read(bus, dev))
        assert good(values) == sim.sensors["0"].last_values
        assert time.monotonic() - started >= 1.0


def test_announced_time_is_capped_by_max_wait() -> None:
    with Sdi12Line([sonde(ttt=999, ready_after=0.05)]) as sim:
        dev = device("sonde-1", "0", SONDE_POINTS, command="C", max_wait=0.2)
        started = time.monotonic()
        values = run(sim, lambda bus: read(bus, dev))
        assert good(values) == sim.sensors["0"].last_values
        assert time.monotonic() - started < 2


def test_continuous_measurement_needs_no_data_command(line: Sdi12Line) -> None:
    dev = device("sonde-1", "0", SONDE_POINTS, command="R0", crc=True)
    values = run(line, lambda bus: read(bus, dev))
    assert good(values) == line.sensors["0"].last_values
    assert line.sensors["0"].commands == {"RC0": 1}


def test_points_from_several_measurements_run_each_once() -> None:
    with Sdi12Line([sonde(additional={1: BATTERY})]) as sim:
        points = [
            {"name": "temperature", "index": 1, "unit": "Cel"},
            {"name": "depth", "index": 6, "unit": "m"},
            {"name": "battery", "index": 1, "unit": "V", "command": "M1"},
            {"name": "ph_now", "index": 2, "unit": "pH", "command": "R0", "crc": True},
        ]
        dev = device("sonde-1", "0", points)
        values = run(sim, lambda bus: read(bus, dev))
        assert set(good(values)) == {"temperature", "depth", "battery", "ph_now"}
        assert values["battery"].value == sim.sensors["0"].last_values["battery"]
        assert sim.sensors["0"].commands == {"M": 1, "D0": 2, "D1": 1, "M1": 1, "RC0": 1}


def test_scale_and_offset_apply_to_the_value(line: Sdi12Line) -> None:
    points = [{"name": "depth_ft", "index": 6, "unit": "m", "scale": 2.0, "offset": -1.0}]
    dev = device("sonde-1", "0", points)
    values = run(line, lambda bus: read(bus, dev))
    assert values["depth_ft"].value == pytest.approx(line.sensors["0"].last_values["depth"] * 2 - 1)


def test_point_beyond_the_values_returned_is_bad_decode(line: Sdi12Line) -> None:
    points = [*SONDE_POINTS, {"name": "chlorophyll", "index": 7, "unit": "ug/L"}]
    dev = device("sonde-1", "0", points)
    values = run(line, lambda bus: read(bus, dev))
    assert values["chlorophyll"] == PointValue.bad("decode", "ug/L")
    assert all(values[p.name].quality == "good" for p in SONDE_PARAMETERS)


def test_measurement_the_sensor_does_not_have_is_bad_decode(line: Sdi12Line) -> None:
    # "0M3!" -> "00000": no values (as the Aqua TROLL 400 answers M1..M9)
    points = [*SONDE_POINTS, {"name": "extra", "index": 1, "command": "M3"}]
    dev = device("sonde-1", "0", points)
    values = run(line, lambda bus: read(bus, dev))
    assert values["extra"].error == "decode"
    assert values["temperature"].quality == "good"


def test_two_sensors_share_the_line(line: Sdi12Line) -> None:
    sonde_dev = device("sonde-1", "0", SONDE_POINTS)
    probe_dev = device("level-1", "1", PROBE_POINTS)

    async def both(bus: Bus) -> list[Reading]:
        return list(await asyncio.gather(poll(bus, sonde_dev), poll(bus, probe_dev)))

    sonde_reading, probe_reading = run(line, both)
    assert good(dict(sonde_reading.points)) == line.sensors["0"].last_values
    assert good(dict(probe_reading.points)) == line.sensors["1"].last_values
    assert line.sensors["1"].commands == {"M": 1, "D0": 1}  # ttt 0: no wait, one page


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "timeout"),
        ("malformed", "decode"),
        ("bad_crc", "crc"),
        ("slow:0.5", "timeout"),
        ("wrong_address", "crc"),
    ],
)
def test_fault_gives_its_reason_and_spares_the_other_sensor(
    line: Sdi12Line, fault: str, reason: str
) -> None:
    sonde_dev = device("sonde-1", "0", SONDE_POINTS, crc=True)
    probe_dev = device("level-1", "1", PROBE_POINTS)
    line.set_fault("0", fault)

    async def scenario(bus: Bus) -> tuple[Reading, Reading, Reading]:
        faulty, healthy = await asyncio.gather(poll(bus, sonde_dev), poll(bus, probe_dev))
        line.set_fault("0", None)
        return faulty, healthy, await poll(bus, sonde_dev)

    faulty, healthy, healed = run(line, scenario)
    assert {v.error for v in faulty.points.values()} == {reason}
    assert all(v.value is None for v in faulty.points.values())
    assert good(dict(healthy.points)) == line.sensors["1"].last_values
    # nothing left over from the fault spoils the next poll
    assert good(dict(healed.points)) == line.sensors["0"].last_values


def test_retries_are_bounded(line: Sdi12Line) -> None:
    line.set_fault("0", "silent")
    dev = device("sonde-1", "0", SONDE_POINTS, attempts=2)
    started = time.monotonic()
    reading = run(line, lambda bus: poll(bus, dev))
    assert {v.error for v in reading.points.values()} == {"timeout"}
    # attempts per command x (1 + the core's retries), each costing about the timeout
    assert line.sensors["0"].commands == {"M": 2 * (1 + dev.retries)}
    assert time.monotonic() - started < 2


def test_adapter_echo_is_skipped() -> None:
    with Sdi12Line([sonde(), probe()], echo=True) as sim:
        dev = device("sonde-1", "0", SONDE_POINTS, crc=True)
        values = run(sim, lambda bus: read(bus, dev))
        assert good(values) == sim.sensors["0"].last_values


def test_identify_and_address_query(line: Sdi12Line) -> None:
    dev = device("level-1", "1", PROBE_POINTS)

    async def ask(bus: Bus) -> tuple[Any, Any]:
        async with bus.turn() as transport:
            assert isinstance(transport, SerialTransport)
            driver = Sdi12Driver(dev)
            ident = await driver.identify(transport)
            try:
                await driver.query_address(transport)
            except CrcError as exc:  # two sensors answer "?!" at once
                return ident, exc
            return ident, None

    ident, collision = run(line, ask)
    assert (ident.vendor, ident.model, ident.sdi12_version) == ("SWMEDGE", "LEVEL1", "14")
    assert isinstance(collision, CrcError)

    with Sdi12Line([probe()]) as alone:

        async def query(bus: Bus) -> str:
            async with bus.turn() as transport:
                assert isinstance(transport, SerialTransport)
                return await Sdi12Driver(dev).query_address(transport)

        assert run(alone, query) == "1"


def test_bus_break_is_timed_on_a_pty(line: Sdi12Line) -> None:
    async def brk(bus: Bus) -> float:
        async with bus.turn() as transport:
            assert isinstance(transport, SerialTransport)
            started = time.monotonic()
            await transport.send_break(0.02)
            return time.monotonic() - started

    assert 0.02 <= run(line, brk) < 0.2


def test_pages_after_the_last_needed_value_are_not_fetched(line: Sdi12Line) -> None:
    dev = device("sonde-1", "0", [{"name": "ph", "index": 2, "unit": "pH"}])
    values = run(line, lambda bus: read(bus, dev))
    assert good(values) == {"ph": line.sensors["0"].last_values["ph"]}
    assert line.sensors["0"].commands == {"M": 1, "D0": 1}
