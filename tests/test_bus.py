"""Buses over the real Modbus stacks: both RTU backends against the simulated RS-485 line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import SiteRunner, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.agent import read_once
from swm_edge.broker import free_port
from swm_edge.config import load_config
from swm_edge.model import Reading


class _NoBroker:
    host = "127.0.0.1"
    port = free_port()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DemoSite]:
    runner = SiteRunner(tick=0)
    runner.site.freeze()
    try:
        yield runner.site
    finally:
        runner.close()


def read(tmp_path: Path, site: DemoSite, backend: str) -> dict[str, Reading]:
    config = site_config(tmp_path, _NoBroker(), site, backend=backend, name=f"{backend}.yaml")
    readings = asyncio.run(read_once(load_config(config), ["pressure-1", "quality-1"]))
    return {r.device_id: r for r in readings}


def values(reading: Reading) -> dict[str, Any]:
    return {k: (v.value, v.quality, v.unit, v.error) for k, v in reading.points.items()}


def test_both_rtu_backends_read_identical_values(tmp_path: Path, site: DemoSite) -> None:
    via_pymodbus = read(tmp_path, site, "pymodbus")
    via_minimalmodbus = read(tmp_path, site, "minimalmodbus")
    for device, sim in (("pressure-1", site.pressure), ("quality-1", site.sonde)):
        a, b = values(via_pymodbus[device]), values(via_minimalmodbus[device])
        assert a == b
        assert {k: v[0] for k, v in a.items()} == sim.values()
        assert all(v[1] == "good" for v in a.values())


@pytest.mark.parametrize("backend", ["pymodbus", "minimalmodbus"])
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "timeout"),
        ("exception:2", "exception:2"),
        ("exception:6", "exception:6"),
        ("garbage", "crc"),
        ("bad_crc", "crc"),
    ],
)
def test_both_backends_classify_faults_alike(
    tmp_path: Path, site: DemoSite, backend: str, fault: str, reason: str
) -> None:
    site.null_modem.set_fault(2, fault)
    readings = read(tmp_path, site, backend)
    assert {v.error for v in readings["quality-1"].points.values()} == {reason}
    assert all(v.value is None for v in readings["quality-1"].points.values())
    # the healthy device on the same line is not affected
    assert all(v.quality == "good" for v in readings["pressure-1"].points.values())


def test_missing_serial_port_is_a_connection_error(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site)
    text = config.read_text().replace(site.serial_port, str(tmp_path / "no-such-tty"))
    config.write_text(text)
    readings = asyncio.run(read_once(load_config(config), ["pressure-1", "flow-1"]))
    by_id = {r.device_id: r for r in readings}
    assert {v.error for v in by_id["pressure-1"].points.values()} == {"connection"}
    assert all(v.quality == "good" for v in by_id["flow-1"].points.values())
