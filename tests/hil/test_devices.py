"""SimulatedDevice: plausible, deterministic values; values() is what the registers hold."""

from __future__ import annotations

import math

import pytest
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.profiles import synthetic_points

from swm_edge.modbus.codec import decode, register_count, scale_value
from swm_edge.model import DataType, PointSpec, Table, WordOrder

T0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC
DAY = 86400


def run_day(device: SimulatedDevice, step: float = 60.0) -> dict[str, list[float]]:
    """Tick through one day and collect every value."""
    seen: dict[str, list[float]] = {p.name: [] for p in device.points}
    t = T0
    while t < T0 + DAY:
        t += step
        device.tick(t)
        for name, value in device.values().items():
            seen[name].append(float(value))
    return seen


def decoded_from_image(device: SimulatedDevice) -> dict[str, int | float | bool]:
    out = {}
    for p in device.points:
        n = 1 if p.table.is_bits else register_count(p.type)
        out[p.name] = scale_value(p, decode(p, device.words(p.table, p.address, n)))
    return out


@pytest.mark.parametrize("profile", ["siemens-mag6000", "keller-series30", "yosemitech-y4000"])
def test_same_seed_same_values_other_seed_other_values(profile: str) -> None:
    a = SimulatedDevice(profile, seed=7, start=T0)
    b = SimulatedDevice(profile, seed=7, start=T0)
    c = SimulatedDevice(profile, seed=8, start=T0)
    for t in (T0 + 1, T0 + 2, T0 + 60):
        for d in (a, b, c):
            d.tick(t)
    assert a.values() == b.values()
    assert a.values() != c.values()


def test_values_are_plausible_over_a_day() -> None:
    flow = run_day(SimulatedDevice("siemens-mag6000", seed=1, start=T0))
    rate_m3h = [q * 3600 for q in flow["flow_rate"]]
    assert min(rate_m3h) > 5 and max(rate_m3h) < 80
    assert max(rate_m3h) > 2 * min(rate_m3h)  # the daily demand curve shows
    pressure = run_day(SimulatedDevice("keller-series30", seed=1, start=T0))
    assert min(pressure["pressure"]) > 3.0 and max(pressure["pressure"]) < 4.2
    assert min(pressure["temperature"]) > 8 and max(pressure["temperature"]) < 17
    assert set(pressure["status"]) == {0.0}
    sonde = run_day(SimulatedDevice("yosemitech-y4000", seed=1, start=T0))
    assert min(sonde["ph"]) > 6.8 and max(sonde["ph"]) < 7.6
    assert min(sonde["turbidity"]) >= 0 and max(sonde["turbidity"]) < 2
    assert min(sonde["dissolved_oxygen"]) > 6.5 and max(sonde["dissolved_oxygen"]) < 10
    assert 0.3 < min(sonde["conductivity"]) < max(sonde["conductivity"]) < 0.6  # mS/cm
    assert set(sonde["error_flag"]) == {0.0}


def test_totalizers_integrate_the_flow_and_copies_follow() -> None:
    meter = SimulatedDevice("siemens-mag6000", seed=3, start=T0)
    meter.set("flow_rate", 0.01)  # m3/s
    before = meter.values()
    for i in range(1, 11):
        meter.tick(T0 + i * 6.0)  # 60 s in all
    after = meter.values()
    assert after["totalizer_1"] - before["totalizer_1"] == pytest.approx(0.6, rel=1e-9)
    assert after["totalizer_2"] - before["totalizer_2"] == pytest.approx(0.6, rel=1e-9)
    # The float32 copy is the same counter, rounded to float32.
    assert after["totalizer_1_float"] == pytest.approx(after["totalizer_1"], abs=0.01)
    assert after["totalizer_2_float"] == pytest.approx(after["totalizer_2"], abs=0.01)


def test_values_are_decoded_from_the_served_registers() -> None:
    d = SimulatedDevice("yosemitech-y4000", seed=2, start=T0)
    d.tick(T0 + 5)
    values = d.values()
    assert values == decoded_from_image(d)
    # float32 rounding is visible: the served value is exactly representable in float32.
    import struct

    ph = values["ph"]
    assert struct.unpack(">f", struct.pack(">f", ph))[0] == ph


def test_freeze_set_and_unpin() -> None:
    d = SimulatedDevice("keller-series30", seed=1, start=T0, frozen=True)
    frozen = d.values()
    d.tick(T0 + 3600)
    assert d.values() == frozen and d.frozen
    d.set("pressure", 4.25)
    assert d.value("pressure") == pytest.approx(4.25, abs=1e-6)
    d.unfreeze()
    d.tick(T0 + 7200)
    assert d.value("pressure") == pytest.approx(4.25, abs=1e-6)  # pinned survives ticks
    assert d.value("temperature") != frozen["temperature"]
    d.unpin("pressure")
    d.tick(T0 + 7201)
    assert d.value("pressure") != pytest.approx(4.25, abs=1e-6)
    d.set("pressure", math.nan)  # an inactive KELLER channel reads NaN
    assert math.isnan(float(d.value("pressure")))
    with pytest.raises(KeyError):
        d.set("nope", 1)


def test_scaled_integer_bool_and_bit_points() -> None:
    points = [
        PointSpec("level", Table.INPUT, 0, DataType.INT16, scale=0.01, unit="m"),
        PointSpec("counter", Table.HOLDING, 10, DataType.UINT32, word_order=WordOrder.LITTLE),
        PointSpec("offset_temp", Table.HOLDING, 20, DataType.INT16, scale=0.1, offset=-40.0),
        PointSpec("pump_on", Table.COIL, 3, DataType.BOOL),
        PointSpec("alarm", Table.DISCRETE, 17, DataType.BOOL),
        PointSpec("valve", Table.HOLDING, 30, DataType.BOOL),
    ]
    d = SimulatedDevice(points, unit=5, start=T0)
    assert 0 < float(d.value("level")) < 5  # metres, from an int16 in cm
    d.set("level", 1.234)
    assert d.words(Table.INPUT, 0, 1) == [123]  # raw = round(1.234 / 0.01)
    assert d.value("level") == pytest.approx(1.23)
    d.set("offset_temp", 21.5)
    assert d.words(Table.HOLDING, 20, 1) == [615]  # (21.5 + 40) / 0.1
    d.set("counter", 0x12345678)
    assert d.words(Table.HOLDING, 10, 2) == [0x5678, 0x1234]
    d.set("pump_on", True)
    d.set("valve", True)
    assert d.values()["pump_on"] is True and d.values()["alarm"] is False
    assert d.words(Table.COIL, 3, 1) == [1] and d.words(Table.HOLDING, 30, 1) == [1]
    with pytest.raises(ValueError):
        d.set("level", 1000.0)  # 100000 does not fit an int16
    assert d.span(Table.DISCRETE) == (17, 18)
    assert d.values() == decoded_from_image(d)


def test_synthetic_points_and_validation() -> None:
    d = SimulatedDevice(synthetic_points(50), seed=4, start=T0)
    assert len(d.values()) == 50 and d.span(Table.HOLDING) == (0, 100)
    with pytest.raises(ValueError, match="share"):
        SimulatedDevice(
            [
                PointSpec("a", Table.HOLDING, 0, DataType.FLOAT32),
                PointSpec("b", Table.HOLDING, 1, DataType.INT16),
            ]
        )
    with pytest.raises(ValueError):
        SimulatedDevice(synthetic_points(1), unit=0)
