"""The demo site and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from swm_edge_hil.clients import read_points
from swm_edge_hil.profiles import synthetic_points
from swm_edge_hil.site import DemoSite

T0 = 1_700_000_000.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def test_demo_site_serves_all_three_devices(tmp_path: Path) -> None:
    link = tmp_path / "by-id" / "usb-demo-rs485"

    async def scenario() -> None:
        async with DemoSite(seed=3, tick=0.2, serial_link=link) as site:
            info = site.info()
            assert info["serial"]["port"] == str(link) == site.serial_port
            assert info["tcp"]["port"] == site.tcp_port > 0
            assert [d["profile"] for d in info["serial"]["devices"]] == [
                "keller-series30", "yosemitech-y4000",
            ]  # fmt: skip
            json.dumps(info)

            tcp = AsyncModbusTcpClient(site.host, port=site.tcp_port, timeout=1, retries=0)
            rtu = AsyncModbusSerialClient(site.serial_port, timeout=1, retries=0)
            assert await tcp.connect() and await rtu.connect()
            try:
                before = site.pressure.values()
                await asyncio.sleep(0.5)  # the ticker runs
                assert site.pressure.values() != before
                site.freeze()
                flow = site.flow_meter
                assert await read_points(tcp, 1, flow.points) == flow.values()
                for device in (site.pressure, site.sonde):
                    assert await read_points(rtu, device.unit, device.points) == device.values()
                site.null_modem.set_fault(2, "silent")
                pressure = site.pressure
                assert await read_points(rtu, 1, pressure.points) == pressure.values()
                site.unfreeze()
            finally:
                tcp.close()
                rtu.close()
        assert not link.exists()

    run(scenario())


@contextmanager
def cli(*args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Run ``python -m swm_edge_hil ARGS``, yield it with its JSON line, stop it with SIGTERM."""
    with subprocess.Popen(
        [sys.executable, "-m", "swm_edge_hil", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            yield proc, json.loads(line)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_cli_site_prints_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "serial-link"
    with cli("site", "--link", str(link), "--seed", "1") as (proc, info):
        assert info["serial"]["port"] == str(link) and link.is_symlink()

        async def scenario() -> None:
            tcp = AsyncModbusTcpClient("127.0.0.1", port=info["tcp"]["port"], timeout=1, retries=0)
            rtu = AsyncModbusSerialClient(str(link), timeout=1, retries=0)
            assert await tcp.connect() and await rtu.connect()
            try:
                assert (await tcp.read_holding_registers(3002, count=2, device_id=1)).registers
                answer = await rtu.read_holding_registers(9729, count=16, device_id=2)
                assert len(answer.registers) == 16
            finally:
                tcp.close()
                rtu.close()

        run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not link.exists()


def test_cli_tcp_serves_n_devices_with_p_points() -> None:
    with cli("tcp", "--devices", "3", "--points", "20", "--port", "0", "--tick", "0") as (
        proc,
        info,
    ):
        assert len(info["ports"]) == 3 and len(set(info["ports"])) == 3
        assert info["points"] == 20

        async def scenario() -> None:
            for port in info["ports"]:
                client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
                assert await client.connect()
                try:
                    values = await read_points(client, 1, synthetic_points(20))
                    assert len(values) == 20
                    assert all(isinstance(v, float) and v > 0 for v in values.values())
                finally:
                    client.close()

        run(scenario())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
