"""SDI-12 device configuration: the driver's model, its profile, the line-load estimate,
and a config file read through the whole agent against simulated sensors."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from swm_edge_drivers.sdi12 import Sdi12Device, Sdi12Driver
from swm_edge_hil.sdi12 import Parameter, Sdi12Line, SimulatedSdi12Sensor

from swm_edge.agent import read_once
from swm_edge.config import load_config
from swm_edge.config.profiles import load_profile
from swm_edge.model import BusSpec, DeviceSpec

PROFILE = Sdi12Driver.profile_dirs[0] / "insitu-aquatroll400.yaml"
SDI12_BUS = BusSpec(
    id="sdi-1", type="sdi12", timeout=1.0, port="/dev/null", baudrate=1200, parity="E", bytesize=7
)

# An Aqua TROLL 400 in its factory-default SDI-12 configuration (see the profile): seven
# values, at most three per D page, ttt 4 s with a service request (here after 50 ms).
TROLL_PARAMETERS = (
    Parameter("dissolved_oxygen", "mg/L", 8.2, 0.4, 0.02, 2),
    Parameter("dissolved_oxygen_saturation", "%", 92.0, 3.0, 0.3, 1),
    Parameter("temperature", "Cel", 11.0, 1.5, 0.02, 2),
    Parameter("specific_conductivity", "uS/cm", 512.0, 20.0, 1.0, 1),
    Parameter("depth", "ft", 8.2, 0.3, 0.01, 3),
    Parameter("ph", "pH", 7.4, 0.1, 0.01, 2),
    Parameter("orp", "mV", 210.0, 15.0, 1.0, 1),
)


def troll(address: str) -> SimulatedSdi12Sensor:
    return SimulatedSdi12Sensor(
        address, TROLL_PARAMETERS, ttt=4, ready_after=0.05, values_per_page=3, model="AT400"
    )


def validate(data: dict[str, Any], bus: BusSpec | None = SDI12_BUS) -> Sdi12Device:
    context = {"bus": bus} if bus is not None else None
    return Sdi12Device.model_validate(data, context=context)


def errors(data: dict[str, Any], bus: BusSpec | None = SDI12_BUS) -> list[tuple[Any, str]]:
    with pytest.raises(ValidationError) as info:
        validate(data, bus)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


POINT = {"name": "temperature", "index": 1, "unit": "Cel"}


def test_minimal_device_and_defaults() -> None:
    opts = validate({"address": "0", "points": [POINT]})
    assert (opts.command, opts.crc, opts.attempts) == ("M", False, 3)
    assert opts.break_duration >= 0.012 and opts.marking >= 0.00833
    assert Sdi12Driver.points_of(opts)[0].name == "temperature"
    # YAML makes "address: 0" an integer
    assert validate({"address": 7, "points": [POINT]}).address == "7"


@pytest.mark.parametrize("address", ["", "10", "#", "?", 10, -1, True])
def test_invalid_addresses(address: Any) -> None:
    assert [loc for loc, _ in errors({"address": address, "points": [POINT]})] == [("address",)]


def test_crc_is_a_flag_not_a_command_suffix() -> None:
    [(loc, msg)] = errors({"address": "0", "command": "MC", "points": [POINT]})
    assert loc == ("command",) and "crc: true" in msg
    for good in ("M", "M9", "C", "C1", "R0", "R9"):
        assert validate({"address": "0", "command": good, "points": [POINT]}).command == good
    for bad in ("M0", "R", "D0", "V", "m"):
        assert errors({"address": "0", "command": bad, "points": [POINT]})


def test_point_index_must_fit_its_measurement() -> None:
    points = [
        {"name": "a", "index": 10},  # device command M: at most 9
        {"name": "b", "index": 12, "command": "C"},
        {"name": "c", "index": 100, "command": "C"},
    ]
    found = errors({"address": "0", "points": points})
    assert [loc for loc, _ in found] == [("points", 2, "index")]  # 100 > 99: field bound
    found = errors({"address": "0", "points": points[:2]})
    assert found == [
        (
            ("points", 0, "index"),
            "point 'a' is value 10, but a M measurement returns at most 9 values "
            "(C returns up to 99)",
        )
    ]
    assert validate({"address": "0", "command": "C", "points": points[:2]})


def test_point_problems_are_all_reported_at_their_keys() -> None:
    points = [
        POINT,
        {"name": "temperature", "index": 2, "unit": "Cel"},
        {"name": "t2", "index": 1, "unit": "degC"},
        {"name": "t3", "index": 1, "bogus": 1},
    ]
    locs = [loc for loc, _ in errors({"address": "0", "points": points})]
    assert ("points", 2, "unit") in locs and ("points", 3, "bogus") in locs
    locs = [loc for loc, _ in errors({"address": "0", "points": points[:2]})]
    assert locs == [("points", 1, "name")]


def test_unknown_keys_and_timing_bounds() -> None:
    assert errors({"address": "0", "points": [POINT], "unit": 3})
    assert errors({"address": "0", "points": [POINT], "break_duration": 0.005})
    assert errors({"address": "0", "points": [POINT], "marking": 0.1})
    assert errors({"address": "0", "points": [POINT], "attempts": 0})
    assert errors({"address": "0", "points": [POINT], "max_wait": math.inf})


def test_device_needs_an_sdi12_bus() -> None:
    modbus = BusSpec(id="rtu-1", type="modbus-rtu", timeout=0.5, port="/dev/null")
    [(loc, msg)] = errors({"address": "0", "points": [POINT]}, bus=modbus)
    assert loc == ("address",) and "sdi12 bus" in msg
    assert validate({"address": "0", "points": [POINT]}, bus=None)


def test_json_schema_lists_commands_and_addresses() -> None:
    schema = Sdi12Device.model_json_schema()
    assert "R9" in schema["properties"]["command"]["enum"]
    assert {"type": "integer", "minimum": 0, "maximum": 9} in schema["properties"]["address"][
        "anyOf"
    ]


def test_aqua_troll_profile_passes_the_core_checks() -> None:
    profile = load_profile(PROFILE, Sdi12Driver)
    assert profile.defaults == {"command": "M", "measurement_seconds": 4}
    assert [p.index for p in profile.points] == [1, 2, 3, 4, 5, 6, 7]
    assert {p.unit for p in profile.points} == {"mg/L", "%", "Cel", "uS/cm", "m", "pH", "mV"}
    assert "Aqua TROLL 400" in profile.source


def device_spec(opts: Sdi12Device, interval: float = 60) -> DeviceSpec:
    return DeviceSpec(
        id="d",
        bus="sdi-1",
        interval=interval,
        points=Sdi12Driver.points_of(opts),
        driver="sdi12",
        options=opts,
    )


def test_estimate_counts_wire_time_and_measurement_time() -> None:
    profile = load_profile(PROFILE, Sdi12Driver)
    opts = validate(
        {"address": "0", **profile.defaults, "points": [p.model_dump() for p in profile.points]}
    )
    # per command 15 ms break + 10 ms marking + 15 ms turnaround; 10 bits at 1200 baud;
    # "0M!" + "0004n\r\n" (10 chars), 4 s, service request (3), 3 pages of 3 values at
    # 9 chars each: "0D0!" + "0" + "\r\n" (7 chars) per page + 7 x 9 value chars
    char = 10 / 1200
    expected = 0.04 + 10 * char + 4 + 3 * char + 3 * (0.04 + 7 * char) + 63 * char
    assert estimate(opts) == pytest.approx(expected)
    faster = dataclasses.replace(SDI12_BUS, baudrate=9600)
    assert estimate(opts, faster) < expected
    # R needs no measurement time and no data commands
    assert estimate(validate({"address": "0", "command": "R0", "points": [POINT]})) < 0.2
    # no measurement_seconds: 1 s assumed per M measurement
    assert 1.0 < estimate(validate({"address": "0", "points": [POINT]})) < 1.5


def estimate(opts: Sdi12Device, bus: BusSpec = SDI12_BUS) -> float:
    seconds = Sdi12Driver.estimate_seconds(device_spec(opts), bus)
    assert seconds is not None
    return seconds


def test_config_file_through_the_agent(tmp_path: Path) -> None:
    """The README's kind of config, loaded by the core and read by the agent's own path
    (build the pollers, open the bus, poll) against a simulated sonde and Aqua TROLL."""
    with Sdi12Line([SimulatedSdi12Sensor("0", ttt=1, ready_after=0.03), troll("1")]) as line:
        config = tmp_path / "config.yaml"
        config.write_text(
            f"""
gateway: {{id: gw-1}}
mqtt: {{host: 127.0.0.1}}
buffer: {{path: {tmp_path / "buffer.sqlite"}}}
buses:
  - {{id: sdi-1, type: sdi12, port: {line.port}, timeout: 0.2}}
devices:
  - id: sonde-1
    bus: sdi-1
    address: "0"
    interval: 60
    points:
      - {{name: temperature, index: 1, unit: Cel}}
      - {{name: ph, index: 2, unit: pH}}
      - {{name: depth, index: 6, unit: m}}
  - id: troll-1
    bus: sdi-1
    address: 1
    interval: 60
    profile: insitu-aquatroll400
    crc: true
"""
        )
        readings = asyncio.run(read_once(load_config(config)))
        by_id = {r.device_id: r for r in readings}
        sonde = line.sensors["0"].last_values
        assert {k: v.value for k, v in by_id["sonde-1"].points.items()} == {
            "temperature": sonde["temperature"],
            "ph": sonde["ph"],
            "depth": sonde["depth"],
        }
        sent = line.sensors["1"].last_values
        got = by_id["troll-1"].points
        assert all(v.quality == "good" for v in got.values())
        assert got["orp"].value == sent["orp"] and got["orp"].unit == "mV"
        assert got["depth"].value == pytest.approx(sent["depth"] * 0.3048)  # ft -> m
        assert got["depth"].unit == "m"
        assert line.sensors["1"].commands == {"MC": 1, "D0": 1, "D1": 1, "D2": 1}
