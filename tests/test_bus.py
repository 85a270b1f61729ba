"""Buses over the real Modbus stacks: both RTU backends against the simulated RS-485 line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import site_config
from swm_edge_hil.site import DemoSite

from swm_edge.agent import read_once
from swm_edge.broker import free_port
from swm_edge.config import load_config
from swm_edge.model import Reading


class _NoBroker:
    host = "127.0.0.1"
    port = free_port()


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


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked ptys made by socat, as a USB adapter and the device behind it."""
    import shutil
    import subprocess
    import time

    socat = shutil.which("socat")
    assert socat, "socat is needed (apt-get install socat; .ci/run installs it)"
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not (Path(a).exists() and Path(b).exists()):
        assert time.monotonic() < deadline, "socat did not create its ptys"
        time.sleep(0.02)
    try:
        yield a, b
    finally:
        proc.terminate()
        proc.wait(5)


def test_serial_bus_hands_a_bounded_raw_transport(socat_pair: tuple[str, str]) -> None:
    import serial

    from swm_edge.bus import Bus
    from swm_edge.driver import ConnectionLost, SerialTransport
    from swm_edge.model import BusSpec

    agent_side, device_side = socat_pair
    device = serial.Serial(device_side, baudrate=2400, parity="E", timeout=1)

    async def main() -> None:
        bus = Bus(
            BusSpec(
                id="mbus-1", type="mbus", timeout=0.5, port=agent_side, baudrate=2400, parity="E"
            )
        )
        await bus.start()
        async with bus.turn() as t:
            assert isinstance(t, SerialTransport)
            await t.write(b"\x10\x5b\xfe\x59\x16")  # REQ_UD2 to address 254
            assert device.read(5) == b"\x10\x5b\xfe\x59\x16"
            device.write(b"\xe5")
            assert await t.read(1, timeout=1) == b"\xe5"
            # a short answer: what arrived, after the timeout, never more than asked
            device.write(b"abc")
            t0 = asyncio.get_running_loop().time()
            assert await t.read(10, timeout=0.3) == b"abc"
            assert asyncio.get_running_loop().time() - t0 >= 0.25
            device.write(b"0+3.14\r\nrest")
            assert await t.read_until(b"\r\n", timeout=1) == b"0+3.14\r\n"
            await asyncio.sleep(0.1)
            await t.reset_input()  # "rest" is stale now
            assert await t.read(4, timeout=0.2) == b""
            assert await t.read_until(b"\n", timeout=0.2, max_size=8) == b""
            device.write(b"x" * 50)
            assert len(await t.read_until(b"\n", timeout=1, max_size=8)) == 8
        Path(agent_side).unlink()  # the adapter is unplugged: the port disappears
        bus.line._serial.close()  # type: ignore[attr-defined]
        with pytest.raises(ConnectionLost):
            async with bus.turn() as t:
                await t.write(b"\x10")
        await bus.stop()

    asyncio.run(main())
    device.close()
