"""The built-in device profiles: well-formed, and their byte orders reproduce the examples
printed in the manufacturers' documents (shared/reference/devices.json)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.profiles import (
    available_profiles,
    load_points,
    load_profile,
    profile_path,
    synthetic_points,
)

from swm_edge.modbus.codec import decode, encode, scale_value
from swm_edge.model import DataType, PointSpec, Table, WordOrder
from swm_edge.units import CANONICAL_UNITS as ALL_CANONICAL_UNITS

PROFILES = ["siemens-mag6000", "keller-series30", "yosemitech-y4000"]
CANONICAL_UNITS = {
    "m3", "m3/h", "m3/s", "L", "L/s", "L/min", "L/h", "bar", "mbar", "kPa", "Pa", "MPa",
    "m", "cm", "mm", "Cel", "mg/L", "ug/L", "NTU", "uS/cm", "mS/cm", "pH", "mV", "V", "A",
    "%", "s", "h", "ppm", "1",
}  # fmt: skip


def words(hex_bytes: str) -> list[int]:
    data = bytes.fromhex(hex_bytes)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def point(profile: str, name: str) -> PointSpec:
    return next(p for p in load_points(profile) if p.name == name)


def test_the_three_profiles_are_built_in() -> None:
    assert set(PROFILES) <= set(available_profiles())


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_well_formed_and_cites_its_source(name: str) -> None:
    profile = load_profile(name)
    assert profile.manufacturer and profile.model and profile.kind
    assert len(profile.source) > 40
    assert profile.points
    for p in profile.points:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p.name), p.name
        assert p.unit is None or p.unit in CANONICAL_UNITS, (p.name, p.unit)
        assert profile.notes.get(p.name), f"{p.name} has no note"
        assert p.table is Table.HOLDING  # all three devices read process values with FC 3


def test_mag6000_register_map() -> None:
    profile = load_profile("siemens-mag6000")
    by_name = {p.name: p for p in profile.points}
    assert by_name["flow_rate"] == PointSpec(
        "flow_rate", Table.HOLDING, 3002, DataType.FLOAT32, unit="m3/s"
    )
    assert (by_name["totalizer_1"].address, by_name["totalizer_1"].type) == (3014, "float64")
    assert (by_name["totalizer_2"].address, by_name["totalizer_2"].type) == (3018, "float64")
    assert by_name["totalizer_1_float"].address == 3022
    assert by_name["totalizer_2_float"].address == 3024
    assert "inferred" in profile.notes["totalizer_1"]  # the trust note survived
    # Appendix H table: 100.0 = 42C80000h, 55.32 = 425D47AEh, -1.0 = BF800000h (ABCD).
    flow = by_name["flow_rate"]
    assert decode(flow, words("42C80000")) == 100.0
    assert decode(flow, words("425D47AE")) == pytest.approx(55.32, abs=1e-5)
    assert encode(flow, -1.0) == words("BF800000")


def test_keller_register_map_and_limits() -> None:
    profile = load_profile("keller-series30")
    assert profile.device == {"max_registers": 4}
    by_name = {p.name: p for p in profile.points}
    assert (by_name["pressure"].address, by_name["pressure"].unit) == (2, "bar")
    assert (by_name["temperature"].address, by_name["temperature"].unit) == (8, "Cel")
    # Document examples: P1 response 3F 75 F0 7B = 0.960701 bar, TOB1 41 B5 C0 79 = 22.719.
    assert decode(by_name["pressure"], words("3F75F07B")) == pytest.approx(0.960701, abs=1e-6)
    assert decode(by_name["temperature"], words("41B5C079")) == pytest.approx(22.719, abs=1e-3)
    assert decode(by_name["pressure"], words("412902DE")) == pytest.approx(10.5632, abs=1e-4)


def test_y4000_register_map_is_dcba() -> None:
    profile = load_profile("yosemitech-y4000")
    by_name = {p.name: p for p in profile.points}
    do = by_name["dissolved_oxygen"]
    assert (do.address, do.unit, do.word_order, do.byte_swap) == (
        9729, "mg/L", WordOrder.LITTLE, True,
    )  # fmt: skip
    # Manual: DO bytes CD CC FC 40 = 7.90 mg/L; 7.6 = 40F33333h is sent as 33 33 F3 40.
    assert decode(do, words("CDCCFC40")) == pytest.approx(7.90, abs=1e-6)
    assert encode(by_name["ph"], 7.6) == words("3333F340")
    assert decode(by_name["supply_voltage"], words("C3F54441")) == pytest.approx(12.31, 1e-6)
    # The 16-register "read all values" block at 0x2601 holds eight floats back to back.
    block = sorted(p.address for p in profile.points if 9729 <= p.address < 9729 + 16)
    assert block == list(range(9729, 9745, 2))
    assert {"turbidity", "conductivity", "ph", "temperature", "orp"} <= set(by_name)
    assert "not printed" in profile.notes["turbidity"]


def test_load_profile_from_a_file_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text(
        "manufacturer: X\nmodel: Y\nkind: meter\nsource: a manual\n"
        "points:\n  - {name: level, table: input, address: 7, type: int16, scale: 0.01,"
        " unit: m, note: as printed}\n"
    )
    profile = load_profile(good)
    assert profile.name == "mine"
    assert profile.points == (
        PointSpec("level", Table.INPUT, 7, DataType.INT16, scale=0.01, unit="m"),
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("points:\n  - {name: x, table: holding, address: 1, type: float16}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_profile(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("points:\n  - {name: x, table: holding, adress: 1, type: int16}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_profile(typo)
    with pytest.raises(FileNotFoundError):
        profile_path("no-such-device")


def test_synthetic_points_are_packed() -> None:
    points = synthetic_points(3)
    assert [(p.name, p.address, p.type) for p in points] == [
        ("p0", 0, DataType.FLOAT32), ("p1", 2, DataType.FLOAT32), ("p2", 4, DataType.FLOAT32),
    ]  # fmt: skip
    bits = synthetic_points(2, table=Table.COIL, type=DataType.BOOL, start=10)
    assert [p.address for p in bits] == [10, 11]


# -- the profiles added for the six device kinds ----------------------------------

NEW_PROFILES = ["dynaflox-ultrad", "insitu-aquatroll400", "abb-aquamaster3", "vega-vegapuls-c21"]
T0_SIM = 1_700_000_000.0


@pytest.mark.parametrize("name", NEW_PROFILES)
def test_new_profile_is_well_formed_and_cites_its_source(name: str) -> None:
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.manufacturer and profile.model and profile.kind
    assert len(profile.source) > 40
    for p in profile.points:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p.name), p.name
        assert p.unit is None or p.unit in ALL_CANONICAL_UNITS, (p.name, p.unit)
        assert profile.notes.get(p.name), f"{p.name} has no note"


def test_dynaflox_longs_are_high_word_first_and_totals_come_in_two_parts() -> None:
    profile = load_profile("dynaflox-ultrad")
    assert profile.device == {"max_registers": 22}  # "up to 22 registers per read"
    by_name = {p.name: p for p in profile.points}
    longs = [p for p in profile.points if p.type is DataType.INT32]
    assert [p.address for p in longs] == list(range(0, 16, 2))
    assert all(p.table is Table.HOLDING and p.word_order is WordOrder.BIG for p in longs)
    assert (by_name["error_code"].address, by_name["error_code"].type) == (16, DataType.INT16)
    assert by_name["flow_rate"].unit == "L/h"
    for total in ("total_forward", "total_reverse"):
        assert by_name[total].unit == "m3"
        assert by_name[f"{total}_fraction"].unit == "mL"
        assert by_name[f"{total}_fraction"].address == by_name[total].address + 2
    # The source states no word order: the documented choice is high word first.
    assert encode(by_name["flow_rate"], 70_000) == [0x0001, 0x1170]
    assert decode(by_name["total_forward"], [0xFFFF, 0xFFFE]) == -2
    assert "not stated" in profile.notes["flow_rate"]


def test_aquatroll400_addresses_are_printed_numbers_minus_one() -> None:
    profile = load_profile("insitu-aquatroll400")
    printed = {
        "dissolved_oxygen": 38, "dissolved_oxygen_quality": 42, "temperature": 46, "tds": 570,
        "resistivity": 578, "ph": 1538, "ph_quality": 1542, "ph_mv": 1546, "orp": 1554,
        "external_power_voltage": 7004,
    }  # fmt: skip
    by_name = {p.name: p for p in profile.points}
    assert {name: p.address + 1 for name, p in by_name.items()} == printed
    assert all(p.table is Table.HOLDING for p in profile.points)
    floats = [p for p in profile.points if p.type is DataType.FLOAT32]
    # Float word order is not stated in what was read: ABCD assumed, and the note says so.
    assert all(p.word_order is WordOrder.BIG and not p.byte_swap for p in floats)
    assert all("ABCD assumed" in profile.notes[p.name] for p in floats)
    assert encode(by_name["ph"], 7.0) == words("40E00000")
    # TDS comes in ppt by default; scale 1000 publishes ppm.
    tds = by_name["tds"]
    assert (tds.scale, tds.unit) == (1000.0, "ppm")
    assert scale_value(tds, decode(tds, words("3F000000"))) == 500.0


def test_aquamaster3_partial_map_is_big_endian_and_one_based() -> None:
    profile = load_profile("abb-aquamaster3")
    by_name = {p.name: p for p in profile.points}
    # Data model register numbers 12003, 4013, 5033 -> PDU addresses one less.
    assert (by_name["totaliser_forward"].table, by_name["totaliser_forward"].address) == (
        Table.HOLDING, 12002,
    )  # fmt: skip
    assert (by_name["transmitter_unique_id"].table, by_name["transmitter_unique_id"].address) == (
        Table.INPUT, 4012,
    )  # fmt: skip
    assert (by_name["calibrated_bore"].table, by_name["calibrated_bore"].address) == (
        Table.INPUT, 5032,
    )  # fmt: skip
    assert encode(by_name["totaliser_forward"], 0x12345678) == [0x1234, 0x5678]
    assert encode(by_name["calibrated_bore"], 100.0) == words("42C80000")
    # Only what the pages read state: no unit was stated for any of these points.
    assert all(p.unit is None for p in profile.points)


def test_vegapuls_c21_reads_the_abcd_block_and_the_distance() -> None:
    profile = load_profile("vega-vegapuls-c21")
    assert profile.device == {"max_gap": 0}
    by_name = {p.name: p for p in profile.points}
    assert all(p.table is Table.INPUT for p in profile.points)
    pv, distance = by_name["primary_value"], by_name["distance"]
    assert (pv.address, pv.type, pv.word_order, pv.unit) == (
        2002, DataType.FLOAT32, WordOrder.BIG, None,
    )  # fmt: skip
    assert (distance.address, distance.unit) == (2303, "m")
    assert decode(distance, words("4019999A")) == pytest.approx(2.4)  # ABCD
    assert (by_name["status"].address, by_name["status"].type) == (2000, DataType.UINT32)
    assert (by_name["primary_value_unit"].address, by_name["primary_value_unit"].type) == (
        104, DataType.UINT16,
    )  # fmt: skip
    assert by_name["device_status"].address == 2307


def test_new_profiles_simulate_plausible_values() -> None:
    meter = SimulatedDevice("dynaflox-ultrad", seed=4, start=T0_SIM)
    first = meter.values()
    assert 3_000 < first["battery_voltage"] < 3_700  # mV, a lithium cell
    assert first["fault_time"] == 0 and first["error_code"] == 0
    assert 0 < first["total_reverse"] < first["total_forward"]
    meter.set("flow_rate", 36_000)  # L/h = 0.01 m3/s
    for i in range(1, 11):
        meter.tick(T0_SIM + i * 360.0)  # one hour in all
    after = meter.values()
    # Integer registers: the counters move by whole units (rounding may take one).
    assert after["run_time"] - first["run_time"] == pytest.approx(3600, abs=1)
    assert after["total_forward"] - first["total_forward"] == pytest.approx(36, abs=1)  # m3
    assert after["total_reverse"] - first["total_reverse"] < 1  # no back-flow to speak of
    sonde = SimulatedDevice("insitu-aquatroll400", seed=4, start=T0_SIM).values()
    assert sonde["dissolved_oxygen_quality"] == 0 and sonde["ph_quality"] == 0
    assert 11_000 < sonde["external_power_voltage"] < 13_500  # mV
    assert 6.5 < sonde["dissolved_oxygen"] < 10
    radar = SimulatedDevice("vega-vegapuls-c21", seed=4, start=T0_SIM).values()
    assert 0 < radar["distance"] < 10
    assert radar["status"] == 0 and radar["device_status"] == 0
