"""The dependency rules of docs/decisions/0001 and ARCHITECTURE.md, checked on the source:
drivers see only the SDK, the buffer knows nothing of MQTT, encoders are pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a driver may import from the core: the driver API and the Modbus SDK.
DRIVER_SDK = ("swm_edge.driver", "swm_edge.modbus")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def core_imports(path: Path) -> set[str]:
    return {m for m in imports(path) if m == "swm_edge" or m.startswith("swm_edge.")}


DRIVER_FILES = sorted(
    p for p in (ROOT / "drivers").rglob("*.py") if "tests" not in p.relative_to(ROOT).parts
)


@pytest.mark.parametrize("path", DRIVER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_import_only_the_sdk(path: Path) -> None:
    outside = {
        m
        for m in core_imports(path)
        if not any(m == s or m.startswith(s + ".") for s in DRIVER_SDK)
    }
    assert not outside, (
        f"{path.relative_to(ROOT)} imports {sorted(outside)} (drivers use swm_edge.driver)"
    )


@pytest.mark.parametrize("name", ["buffer.py", "spool.py", "scheduler.py", "bus.py", "driver.py"])
def test_the_data_path_before_the_publisher_knows_no_mqtt(name: str) -> None:
    found = imports(ROOT / "swm_edge" / name)
    assert not {m for m in found if m.startswith(("paho", "swm_edge.publish"))}


def test_encoders_are_pure_functions_of_readings() -> None:
    for path in (ROOT / "swm_edge" / "publish" / "encoders").glob("*.py"):
        assert core_imports(path) <= {"swm_edge.model", "swm_edge.publish.encoders.json_v1"}, path
        assert not {m for m in imports(path) if m.startswith(("paho", "sqlite3", "asyncio"))}, path
