"""The Modbus driver's device model (swm_edge.modbus.config), on its own, without the loader."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from swm_edge.modbus.config import ModbusDevice, ModbusPoint
from swm_edge.model import BusSpec, DataType, PointSpec, Table, WordOrder

RTU = BusSpec(id="rs485", type="modbus-rtu", timeout=0.5, port="/dev/ttyUSB0")
TCP = BusSpec(id="lan", type="modbus-tcp", timeout=1.0, host="192.0.2.1")
MBUS = BusSpec(id="mb", type="mbus", timeout=1.0, port="/dev/ttyUSB1")


def errors(data: dict[str, Any], bus: BusSpec | None = None) -> list[tuple[Any, ...]]:
    context = {} if bus is None else {"bus": bus}
    with pytest.raises(ValidationError) as info:
        ModbusDevice.model_validate(data, context=context)
    return [
        (err["loc"], err["type"], err["msg"], err.get("ctx"))
        for err in info.value.errors(include_url=False)
    ]


def test_point_defaults_width_and_spec() -> None:
    point = ModbusPoint.model_validate({"name": "level", "address": 3})
    assert (point.table, point.type, point.word_order, point.byte_swap) == (
        Table.HOLDING,
        DataType.UINT16,
        WordOrder.BIG,
        False,
    )
    assert point.width == 1
    assert point.to_spec() == PointSpec("level", Table.HOLDING, 3, DataType.UINT16)
    wide = ModbusPoint.model_validate(
        {"name": "t", "address": 0, "type": "float64", "unit": "m3", "note": "ch. 5"}
    )
    assert wide.width == 4
    # The note documents the point; it is not part of the core's spec.
    assert wide.to_spec() == PointSpec("t", Table.HOLDING, 0, DataType.FLOAT64, unit="m3")
    coil = ModbusPoint.model_validate({"name": "c", "table": "coil", "address": 0, "type": "bool"})
    assert coil.width == 1


def test_point_errors_name_their_field() -> None:
    with pytest.raises(ValidationError) as info:
        ModbusPoint.model_validate({"name": "c", "table": "coil", "address": 0})
    (err,) = info.value.errors(include_url=False)
    assert (err["loc"], err["type"], err.get("ctx")) == ((), "modbus_config", {"field": "type"})
    assert err["msg"] == "a coil point is a single bit: its type must be bool, not uint16"


def test_device_defaults() -> None:
    device = ModbusDevice.model_validate({"unit": 1})
    assert (device.points, device.single_point_reads) == ((), False)
    assert (device.max_gap, device.max_registers, device.max_bits) == (10, 125, 2000)
    with pytest.raises(ValidationError, match="frozen"):
        device.unit = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("bus", "unit", "ok"),
    [
        (RTU, 0, False),
        (RTU, 1, True),
        (RTU, 247, True),
        (RTU, 248, False),
        (TCP, 0, True),
        (TCP, 255, True),
        (None, 0, True),  # without a bus only 0..255 is checked
        (None, 255, True),
    ],
)
def test_unit_range_by_bus_type(bus: BusSpec | None, unit: int, ok: bool) -> None:
    if ok:
        context = {} if bus is None else {"bus": bus}
        assert ModbusDevice.model_validate({"unit": unit}, context=context).unit == unit
        return
    assert errors({"unit": unit}, bus) == [
        (
            ("unit",),
            "modbus_unit_range",
            f"unit {unit} is out of range 1..247 for a device on modbus-rtu bus 'rs485' "
            "(0 is broadcast, which no device answers)",
            None,
        )
    ]


def test_unit_beyond_255_on_any_bus() -> None:
    ((loc, etype, _, _),) = errors({"unit": 256}, TCP)
    assert (loc, etype) == (("unit",), "less_than_equal")


def test_modbus_device_on_a_serial_bus_is_refused() -> None:
    assert errors({"unit": 1}, MBUS) == [
        (
            ("unit",),
            "modbus_bus_type",
            "a Modbus device needs a modbus-rtu or modbus-tcp bus, but bus 'mb' is mbus",
            None,
        )
    ]


def test_every_too_wide_point_is_an_error_at_its_type() -> None:
    data = {
        "unit": 1,
        "max_registers": 2,
        "points": [
            {"name": "a", "address": 0, "type": "float64"},
            {"name": "b", "address": 4, "type": "float32"},
            {"name": "c", "address": 8, "type": "int64"},
        ],
    }
    assert errors(data, RTU) == [
        (
            ("points", 0, "type"),
            "modbus_point_width",
            "point 'a' is a float64 of 4 registers, but the device reads at most 2 per request "
            "(max_registers)",
            {"related": "max_registers"},
        ),
        (
            ("points", 2, "type"),
            "modbus_point_width",
            "point 'c' is a int64 of 4 registers, but the device reads at most 2 per request "
            "(max_registers)",
            {"related": "max_registers"},
        ),
    ]


def test_strict_types() -> None:
    got = errors({"unit": True, "single_point_reads": 1, "points": [{"name": "a", "address": "1"}]})
    assert [(loc, etype) for loc, etype, _, _ in got] == [
        (("unit",), "int_type"),
        (("points", 0, "address"), "int_type"),
        (("single_point_reads",), "bool_type"),
    ]
