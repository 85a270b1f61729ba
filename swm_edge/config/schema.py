"""JSON Schema of the configuration file, for editors and for validating configs elsewhere.

``config/schema.json`` is generated from the models; regenerate it after changing them::

    swm-edge schema --output config/schema.json
    python -m swm_edge.config.schema config/schema.json

Editors using yaml-language-server pick it up from a first line like
``# yaml-language-server: $schema=../config/schema.json``.

A device entry is the core keys plus its driver's keys (docs/decisions/0003-driver-sdk.md),
so ``devices`` items are one of several objects, one per built-in driver, each with the
core keys and that driver's ``device_model`` keys. Only the built-in drivers (entry points
in ``swm_edge_drivers``) are included: the committed schema must not depend on which
third-party drivers happen to be installed where it is generated.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swm_edge.config.models import QUIRK_KEYS, Config
from swm_edge.driver import Driver, available_drivers, load_driver

__all__ = [
    "BUILTIN_DRIVER_PACKAGE",
    "SCHEMA_DIALECT",
    "builtin_drivers",
    "json_schema",
    "profile_json_schema",
    "render_schema",
    "write_schema",
]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: The import package of the drivers shipped with swm-edge.
BUILTIN_DRIVER_PACKAGE = "swm_edge_drivers"
_REF_TEMPLATE = "#/$defs/{model}"


def builtin_drivers() -> dict[str, type[Driver]]:
    """The drivers shipped with swm-edge, by entry-point name (sorted)."""
    out: dict[str, type[Driver]] = {}
    for name, entry_point in sorted(available_drivers().items()):
        module = str(entry_point.module)
        if module == BUILTIN_DRIVER_PACKAGE or module.startswith(f"{BUILTIN_DRIVER_PACKAGE}."):
            out[name] = load_driver(name)
    return out


def _driver_schema(driver: type[Driver], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of ``driver``'s device model; its nested definitions go into ``defs``."""
    schema = driver.device_model.model_json_schema(mode="validation", ref_template=_REF_TEMPLATE)
    for key, definition in schema.pop("$defs", {}).items():
        if key in defs and defs[key] != definition:
            raise ValueError(f"two different models are named {key} in the JSON Schema")
        defs[key] = definition
    return schema


def _bus_types(driver: type[Driver]) -> str:
    return ", ".join(sorted(driver.bus_types)) or "no"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (validation mode: what a user may write)."""
    schema = Config.model_json_schema(mode="validation", ref_template=_REF_TEMPLATE)
    defs: dict[str, Any] = schema["$defs"]
    core = defs.pop("DeviceConfig")
    variants: list[dict[str, Any]] = []
    for name, driver in builtin_drivers().items():
        own = _driver_schema(driver, defs)
        driver_key = copy.deepcopy(core["properties"]["driver"])
        driver_key.pop("anyOf", None)
        driver_key.pop("default", None)
        driver_key["enum"] = [name, None]
        key = f"{driver.__name__}Device"
        defs[key] = {
            "title": f"{name} device",
            "description": f"A device read by the {name} driver (the default on "
            f"{_bus_types(driver)} buses): the core keys and the driver's own.",
            "type": "object",
            "properties": {**core["properties"], **own["properties"], "driver": driver_key},
            "required": sorted({*core.get("required", ()), *own.get("required", ())}),
            "additionalProperties": False,
        }
        variants.append({"$ref": f"#/$defs/{key}"})
    devices = schema["properties"]["devices"]
    if variants:
        devices["items"] = {"anyOf": variants}
    else:  # no built-in driver: at least the core keys
        devices["items"] = core
    return {"$schema": SCHEMA_DIALECT, **schema}


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a device profile file of any built-in driver."""
    from swm_edge.config.models import DeviceQuirks
    from swm_edge.config.profiles import ProfileHeader

    schema = ProfileHeader.model_json_schema(mode="validation", ref_template=_REF_TEMPLATE)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    quirks = DeviceQuirks.model_json_schema(mode="validation", ref_template=_REF_TEMPLATE)
    points: list[dict[str, Any]] = []
    defaults: list[dict[str, Any]] = []
    for name, driver in builtin_drivers().items():
        own = _driver_schema(driver, defs)
        own_points = own["properties"].get("points")
        if own_points is not None:
            points.append(own_points["items"])
        keys = {k: v for k, v in own["properties"].items() if k != "points"}
        defaults.append(
            {
                "title": f"{name} device defaults",
                "description": f"Defaults for devices read by the {name} driver.",
                "type": "object",
                "properties": {**{k: quirks["properties"][k] for k in QUIRK_KEYS}, **keys},
                "additionalProperties": False,
            }
        )
    props = schema["properties"]
    if points:
        props["points"]["items"] = {"anyOf": points}
    if defaults:
        props["device"] = {
            "description": props["device"]["description"],
            "anyOf": [*defaults, {"type": "null"}],
        }
    if not defs:
        del schema["$defs"]
    return {"$schema": SCHEMA_DIALECT, **schema}


def render_schema(schema: dict[str, Any] | None = None) -> str:
    """The schema as the text of ``config/schema.json``: sorted keys, indent 2, final newline."""
    return json.dumps(json_schema() if schema is None else schema, indent=2, sort_keys=True) + "\n"


def write_schema(path: Path) -> None:
    """Write the configuration file's JSON Schema to ``path``."""
    Path(path).write_text(render_schema(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m swm_edge.config.schema [OUTPUT]``: write the schema (default: stdout)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m swm_edge.config.schema [OUTPUT.json]", file=sys.stderr)
        return 2
    if args:
        write_schema(Path(args[0]))
    else:
        sys.stdout.write(render_schema())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
