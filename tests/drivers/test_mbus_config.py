"""The M-Bus device model: what a device entry may say, and the messages when it is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML
from swm_edge_drivers import mbus
from swm_edge_drivers.mbus import Function, MbusDevice, MbusPoint, Quantity
from swm_edge_drivers.mbus.frames import SecondaryAddress

from swm_edge.model import BusSpec

VOLUME = {"name": "volume", "quantity": "volume"}


def errors(data: dict[str, Any], context: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        MbusDevice.model_validate(data, context=context)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_primary_defaults() -> None:
    dev = MbusDevice.model_validate({"address": 0, "points": [VOLUME]})
    assert (dev.reset, dev.max_telegrams, dev.timezone) == (True, 8, "UTC")
    assert dev.selection is None
    (point,) = dev.points
    assert (point.storage, point.tariff, point.subunit) == (0, 0, 0)
    assert point.function is Function.INSTANTANEOUS and point.vife == ()
    assert point.unit == "m3"  # the quantity's base unit when none is given


def test_secondary_with_wildcards_and_narrowing() -> None:
    dev = MbusDevice.model_validate(
        {"secondary": "1234ffff", "manufacturer": "acw", "medium": 7, "points": [VOLUME]}
    )
    assert dev.selection == SecondaryAddress("1234FFFF", "ACW", None, 7)


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ("volume", "L"),
        ("volume_flow", "m3/h"),
        ("volume_flow", "L/min"),
        ("flow_temperature", "Cel"),
        ("pressure", "mbar"),
        ("energy", "kWh"),
        ("power", "kW"),
        ("operating_time", "d"),
        ("datetime", "s"),
        ("error_flags", 1),  # YAML reads "unit: 1" as an integer
    ],
)
def test_units_of_each_quantity(quantity: str, unit: Any) -> None:
    point = MbusPoint.model_validate({"name": "p", "quantity": quantity, "unit": unit})
    assert point.unit == str(unit)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"name": "p", "quantity": "volume", "unit": "m3/h"}, "allowed: m3, L, mL"),
        ({"name": "p", "quantity": "datetime", "unit": "h"}, "allowed: s"),
        ({"name": "p", "quantity": "volume", "unit": "m³"}, "did you mean 'm3'"),
        ({"name": "p", "quantity": "flow"}, "Input should be 'volume'"),
        ({"name": "p", "quantity": "volume", "storage": -1}, "greater than or equal to 0"),
        ({"name": "p", "quantity": "volume", "tariff": "1"}, "valid integer"),
        ({"name": "p", "quantity": "volume", "vife": [0x80]}, "less than or equal to 127"),
        ({"name": "p", "quantity": "status", "storage": 1}, "storage does not apply to status"),
        ({"name": "p", "quantity": "volume", "scale": 2}, "Extra inputs are not permitted"),
        ({"name": "bad name", "quantity": "volume"}, "should match pattern"),
    ],
)
def test_point_errors(point: dict[str, Any], message: str) -> None:
    found = errors({"address": 1, "points": [point]})
    assert any(message in e for e in found), found


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"points": [VOLUME]}, "set exactly one of address"),
        ({"address": 1, "secondary": "12345678"}, "set exactly one of address"),
        ({"address": 251}, "less than or equal to 250"),
        ({"address": "1"}, "valid integer"),
        ({"secondary": "1234567"}, "should match pattern"),
        ({"secondary": "1234567A"}, "should match pattern"),
        ({"secondary": 12345678}, "valid string"),
        ({"address": 1, "manufacturer": "ACW"}, "manufacturer narrows a secondary-address"),
        ({"secondary": "12345678", "manufacturer": "AC"}, "should match pattern"),
        ({"address": 1, "max_telegrams": 0}, "greater than or equal to 1"),
        ({"address": 1, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"address": 1, "points": [VOLUME, VOLUME]}, "point name 'volume' is used twice"),
        ({"address": 1, "unit": 1}, "Extra inputs are not permitted"),
    ],
)
def test_device_errors(device: dict[str, Any], message: str) -> None:
    found = errors(device)
    assert any(message in e for e in found), found


def test_bus_type_is_checked_with_the_bus_in_context() -> None:
    modbus = BusSpec(id="rs485", type="modbus-rtu", timeout=1, port="/dev/ttyUSB0")
    found = errors({"address": 1, "points": [VOLUME]}, context={"bus": modbus})
    assert any("needs a bus of type mbus" in e for e in found), found
    mbus = BusSpec(id="m", type="mbus", timeout=1, port="/dev/ttyUSB0", baudrate=2400, parity="E")
    MbusDevice.model_validate({"address": 1, "points": [VOLUME]}, context={"bus": mbus})


def test_relation_errors_name_their_keys() -> None:
    # The loader places an error at ctx["field"] and may move it to a related key.
    with pytest.raises(ValidationError) as info:
        MbusDevice.model_validate({"address": 1, "medium": 7})
    (error,) = info.value.errors()
    assert error["type"] == "mbus_config"
    assert error["ctx"] == {"field": "medium", "related": "secondary"}


def test_every_quantity_has_a_default_unit() -> None:
    for quantity in Quantity:
        assert MbusPoint(name="p", quantity=quantity).unit is not None


CORE_KEYS = {
    "id",
    "bus",
    "interval",
    "driver",
    "profile",
    "timeout",
    "retries",
    "request_delay",
    "offline_after",
    "offline_backoff_max",
}


def test_the_readme_sample_config_is_valid() -> None:
    readme = (Path(mbus.__file__).parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = YAML(typ="safe").load(block)
    assert config["buses"][0]["type"] == "mbus"
    devices = config["devices"]
    assert len(devices) == 2
    for entry in devices:
        MbusDevice.model_validate({k: v for k, v in entry.items() if k not in CORE_KEYS})
