"""The generated JSON Schema (config/schema.json) and the example config."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from swm_edge.config import load_config
from swm_edge.config.models import CORE_DEVICE_KEYS
from swm_edge.config.schema import (
    builtin_drivers,
    json_schema,
    profile_json_schema,
    render_schema,
    write_schema,
)
from swm_edge.driver import ENTRY_POINT_GROUP, available_drivers
from swm_edge.modbus.config import ModbusDevice
from swm_edge.model import Table

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "config" / "schema.json"
EXAMPLE = ROOT / "config" / "example.yaml"
DRIVER_PROFILES = ROOT / "drivers" / "modbus" / "profiles"
REGENERATE = "swm-edge schema --output config/schema.json"


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        f"config/schema.json is stale; regenerate it with: {REGENERATE} "
        "(or: python -m swm_edge.config.schema config/schema.json)"
    )


def test_schema_format_sorted_indented_newline(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    write_schema(out)
    text = out.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n  "$defs": {')
    assert json.loads(text) == json_schema()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_module_entry_point_writes_the_same_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "swm_edge.config.schema", str(out)],
        check=True,
        cwd=tmp_path,
    )
    assert out.read_text(encoding="utf-8") == render_schema()


def _properties(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = [("(root)", name, prop) for name, prop in schema["properties"].items()]
    for model, definition in schema.get("$defs", {}).items():
        for name, prop in definition.get("properties", {}).items():
            out.append((model, name, prop))
    return out


@pytest.mark.parametrize(
    "schema", [json_schema(), profile_json_schema()], ids=["config", "profile"]
)
def test_every_field_is_documented(schema: dict[str, Any]) -> None:
    undocumented = [f"{m}.{n}" for m, n, prop in _properties(schema) if not prop.get("description")]
    assert undocumented == []


def test_schema_contents_that_editors_rely_on() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"gateway", "mqtt"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert defs["MqttConfig"]["properties"]["protocol"]["enum"] == ["5", "3.1.1", 5]
    assert "password" not in defs["MqttConfig"]["properties"]
    assert defs["RtuBusConfig"]["properties"]["baudrate"]["enum"][:2] == [1200, 2400]
    assert defs["Table"]["enum"] == [t.value for t in Table]
    assert "m3/h" in defs["ModbusPoint"]["properties"]["unit"]["anyOf"][0]["enum"]
    buses = schema["properties"]["buses"]["items"]
    assert buses["discriminator"]["propertyName"] == "type"
    assert sorted(buses["discriminator"]["mapping"]) == [
        "mbus",
        "modbus-rtu",
        "modbus-tcp",
        "sdi12",
        "serial",
    ]
    assert defs["MbusBusConfig"]["properties"]["baudrate"]["default"] == 2400
    assert defs["Sdi12BusConfig"]["properties"]["bytesize"]["default"] == 7


def test_device_items_are_the_core_keys_plus_one_drivers_keys() -> None:
    schema = json_schema()
    defs = schema["$defs"]
    variants = schema["properties"]["devices"]["items"]["anyOf"]
    refs = [v["$ref"].removeprefix("#/$defs/") for v in variants]
    # One object per built-in driver, each closed: core keys and that driver's keys only.
    assert len(refs) == len(builtin_drivers()) and "ModbusDriverDevice" in refs
    modbus = defs["ModbusDriverDevice"]
    assert modbus["additionalProperties"] is False
    assert set(modbus["properties"]) == CORE_DEVICE_KEYS | set(ModbusDevice.model_fields)
    assert modbus["required"] == ["bus", "id", "unit"]
    assert modbus["properties"]["driver"]["enum"] == ["modbus", None]
    assert modbus["properties"]["points"]["items"] == {"$ref": "#/$defs/ModbusPoint"}
    assert "modbus-rtu, modbus-tcp" in modbus["description"]
    assert "DeviceConfig" not in defs


def test_schema_has_only_the_builtin_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A third-party driver installed where the schema is generated must not change the
    # committed file.
    real = available_drivers()
    plugin = EntryPoint("acme", "acme_swm.driver:AcmeDriver", ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        "swm_edge.config.schema.available_drivers", lambda: {**real, "acme": plugin}
    )
    assert sorted(builtin_drivers()) == sorted(
        name for name, ep in real.items() if ep.module.startswith("swm_edge_drivers")
    )
    assert render_schema() == SCHEMA_FILE.read_text(encoding="utf-8")


def test_profile_schema_points_are_the_drivers_points() -> None:
    schema = profile_json_schema()
    assert set(schema["required"]) == {"manufacturer", "model", "kind", "source", "points"}
    points = schema["properties"]["points"]
    assert points["minItems"] == 1
    assert {"$ref": "#/$defs/ModbusPoint"} in points["items"]["anyOf"]
    defaults = schema["properties"]["device"]["anyOf"]
    modbus = next(d for d in defaults if d.get("title") == "modbus device defaults")
    assert "max_registers" in modbus["properties"] and "retries" in modbus["properties"]
    assert "points" not in modbus["properties"] and "interval" not in modbus["properties"]


def test_example_config_validates_with_the_shipped_profiles() -> None:
    needed = ["siemens-mag6000", "keller-series30", "yosemitech-y4000"]
    missing = [n for n in needed if not (DRIVER_PROFILES / f"{n}.yaml").is_file()]
    assert not missing, f"example.yaml uses profiles that are not shipped: {missing}"
    loaded = load_config(EXAMPLE)
    assert loaded.warnings == []
    assert [b.type for b in loaded.buses] == ["modbus-tcp", "modbus-rtu"]
    devices = {d.id: d for d in loaded.devices}
    assert set(devices) == {"dma-inlet-flow", "dma-inlet-pressure", "dma-inlet-quality"}
    flow = devices["dma-inlet-flow"]
    by_name = {p.name: p for p in flow.points}
    # The example redefines the profile's m3/s flow rate as m3/h.
    assert (by_name["flow_rate"].scale, by_name["flow_rate"].unit) == (3600.0, "m3/h")
    assert "totalizer_1" in by_name
    # The KELLER profile's max_registers: 4 reaches the device.
    assert devices["dma-inlet-pressure"].options.max_registers == 4
    assert devices["dma-inlet-quality"].timeout == 1.5
    assert loaded.config.mqtt[0].port == 8883  # tls given, port left to its default
    assert loaded.config.mqtt[0].client_id == "swm-edge-gw-lima-0001"
