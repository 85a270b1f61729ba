"""Simulators served over Modbus TCP and RTU, read by real pymodbus clients."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from swm_edge_hil.clients import ExceptionAnswer, read_point, read_points, read_raw
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.faults import FaultTable
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.rtu import check_crc, read_request, with_crc
from swm_edge_hil.servers import serve_rtu, serve_tcp

from swm_edge.modbus.codec import decode, scale_value
from swm_edge.modbus.planner import plan_reads
from swm_edge.model import DataType, PointSpec, Table

T0 = 1_700_000_000.0
PROFILES = ["siemens-mag6000", "keller-series30", "yosemitech-y4000"]
TIMEOUT = 0.3


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def site_devices() -> list[SimulatedDevice]:
    return [
        SimulatedDevice(name, unit=unit, seed=11, start=T0, frozen=True)
        for unit, name in enumerate(PROFILES, start=1)
    ]


async def read_planned(client: Any, device: SimulatedDevice) -> dict[str, object]:
    """Read a device the way the agent does: the planner's block reads, then decode."""
    limits = dict(device.profile.device) if device.profile else {}
    values: dict[str, object] = {}
    for request in plan_reads(device.points, max_registers=limits.get("max_registers", 125)):
        data = await read_raw(client, device.unit, request.table, request.address, request.count)
        for point in request.points:
            values[point.name] = scale_value(point, decode(point, request.slice(point, data)))
    return values


def test_tcp_client_reads_every_profile() -> None:
    async def scenario() -> None:
        devices = site_devices()
        async with await serve_tcp(devices) as server:
            assert server.port and server.port > 0
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
            assert await client.connect()
            try:
                for device in devices:
                    expected = device.values()
                    one_by_one = await read_points(client, device.unit, device.points)
                    planned = await read_planned(client, device)
                    assert one_by_one == expected, device.name
                    assert planned == expected, device.name
                # A pinned value (e.g. NaN for an inactive channel) is served at once.
                devices[1].set("pressure_2", math.nan)
                devices[0].set("flow_rate", 0.0125)
                assert math.isnan(await read_point(client, 2, devices[1].points[1]))
                served = await read_point(client, 1, devices[0].points[0])
                assert served == devices[0].value("flow_rate") == pytest.approx(0.0125)
            finally:
                client.close()

    run(scenario())


def test_rtu_client_reads_every_profile_over_the_null_modem(tmp_path: Path) -> None:
    async def scenario() -> None:
        devices = site_devices()
        with NullModem(agent_link=tmp_path / "by-id" / "usb-rs485-if00") as line:
            async with await serve_rtu(devices, line.device_port):
                client = AsyncModbusSerialClient(line.agent_port, timeout=1, retries=0)
                assert await client.connect()
                try:
                    for device in devices:
                        expected = device.values()
                        assert await read_points(client, device.unit, device.points) == expected
                        assert await read_planned(client, device) == expected
                finally:
                    client.close()

    run(scenario())


def test_ticking_values_match_what_is_served() -> None:
    async def scenario() -> None:
        device = SimulatedDevice("keller-series30", seed=5, start=T0)
        async with await serve_tcp(device) as server:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
            await client.connect()
            try:
                first = await read_points(client, 1, device.points)
                device.tick(T0 + 30)
                second = await read_points(client, 1, device.points)
                assert second == device.values() and second != first
            finally:
                client.close()

    run(scenario())


def test_all_four_tables_and_gap_handling() -> None:
    points = [
        PointSpec("hr", Table.HOLDING, 100, DataType.FLOAT32),
        PointSpec("hr2", Table.HOLDING, 110, DataType.INT16, scale=0.1),
        PointSpec("ir", Table.INPUT, 5, DataType.UINT32),
        PointSpec("coil", Table.COIL, 21, DataType.BOOL),
        PointSpec("di", Table.DISCRETE, 7, DataType.BOOL),
    ]

    async def scenario() -> None:
        open_gaps = SimulatedDevice(points, unit=1, start=T0, frozen=True)
        strict = SimulatedDevice(points, unit=2, start=T0, frozen=True, gaps_readable=False)
        for d in (open_gaps, strict):
            d.set("coil", True)
        async with await serve_tcp([open_gaps, strict]) as server:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
            await client.connect()
            try:
                for d in (open_gaps, strict):
                    assert await read_points(client, d.unit, points) == d.values()
                assert d.values()["coil"] is True and d.values()["di"] is False
                block = await read_raw(client, 1, Table.HOLDING, 100, 11)
                assert block[2:10] == [0] * 8  # the gap reads as zeros
                with pytest.raises(ExceptionAnswer) as gap:
                    await read_raw(client, 2, Table.HOLDING, 100, 11)
                assert gap.value.code == 2
                with pytest.raises(ExceptionAnswer) as outside:
                    await read_raw(client, 1, Table.HOLDING, 0, 2)
                assert outside.value.code == 2
                # Measurements are read-only.
                answer = await client.write_register(110, 5, device_id=1)
                assert answer.isError()
            finally:
                client.close()

    run(scenario())


def test_tcp_faults_per_unit() -> None:
    async def scenario() -> None:
        flow = SimulatedDevice("siemens-mag6000", unit=1, start=T0, frozen=True)
        level = SimulatedDevice("keller-series30", unit=2, start=T0, frozen=True)
        server = await serve_tcp([flow, level], faults=FaultTable(seed=1))
        flow_point, pressure = flow.points[0], level.points[0]

        async def client() -> AsyncModbusTcpClient:
            c = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=TIMEOUT, retries=0)
            assert await c.connect()
            return c

        c = await client()
        try:
            server.set_fault(1, "exception:6")
            with pytest.raises(ExceptionAnswer) as busy:
                await read_point(c, 1, flow_point)
            assert busy.value.code == 6
            assert await read_point(c, 2, pressure) == level.value("pressure")

            with pytest.raises(ExceptionAnswer) as gateway:
                await read_point(c, 9, pressure)  # no device with unit 9 behind this "gateway"
            assert gateway.value.code == 0x0B

            server.set_fault(1, "silent")
            started = time.monotonic()
            with pytest.raises(ModbusException):
                await read_point(c, 1, flow_point)
            assert time.monotonic() - started >= TIMEOUT * 0.9
            c.close()
            c = await client()  # pymodbus may drop a TCP connection after a timeout
            assert await read_point(c, 2, pressure) == level.value("pressure")

            server.set_fault(1, "intermittent:0")
            with pytest.raises(ModbusException):
                await read_point(c, 1, flow_point)
            c.close()
            c = await client()
            server.set_fault(1, "intermittent:1")
            assert await read_point(c, 1, flow_point) == flow.value("flow_rate")

            server.set_fault(1, "late:0.6")
            with pytest.raises(ModbusException):
                await read_point(c, 1, flow_point)
            c.close()

            with pytest.raises(ValueError, match="bad_crc"):
                server.set_fault(1, "bad_crc")
            server.set_fault(1, None)
            await asyncio.sleep(0.4)  # let the late answer go out
            c = await client()
            assert await read_point(c, 1, flow_point) == flow.value("flow_rate")
        finally:
            c.close()
            await server.stop()
            await server.stop()  # idempotent

    run(scenario())


def test_rtu_server_side_faults_without_a_relay(tmp_path: Path) -> None:
    """serve_rtu applies faults itself too, e.g. on a real serial adapter pair."""

    async def scenario() -> None:
        level = SimulatedDevice("keller-series30", unit=1, start=T0, frozen=True)
        sonde = SimulatedDevice("yosemitech-y4000", unit=2, start=T0, frozen=True)
        with NullModem() as line:
            server = await serve_rtu([level, sonde], line.device_port)
            c = AsyncModbusSerialClient(line.agent_port, timeout=TIMEOUT, retries=0)
            await c.connect()
            try:
                ph = sonde.points[3]
                for fault in ("bad_crc", "garbage", "silent"):
                    server.set_fault(2, fault)
                    with pytest.raises(ModbusException):
                        await read_point(c, 2, ph)
                    assert await read_point(c, 1, level.points[0]) == level.value("pressure")
                server.set_fault(2, "exception:4")
                with pytest.raises(ExceptionAnswer) as failure:
                    await read_point(c, 2, ph)
                assert failure.value.code == 4
                with pytest.raises(ModbusException):
                    await read_point(c, 7, ph)  # nobody at unit 7: silence, as on a real bus
                server.set_fault(2, None)
                assert await read_point(c, 2, ph) == sonde.value("ph")
                assert server.info()["units"] == {"1": "keller-series30", "2": "yosemitech-y4000"}
            finally:
                c.close()
                await server.stop()

    run(scenario())


def test_rtu_server_rewrites_frames_and_refuses_what_it_cannot_apply() -> None:
    """wrong_unit, truncated and overlong on serve_rtu, seen as raw bytes on the line;
    late_echo (the relay's) and the RTU framing kinds on TCP are refused."""

    async def scenario() -> None:
        level = SimulatedDevice("keller-series30", unit=1, start=T0, frozen=True)
        request = read_request(1, 3, 2, 2)
        with NullModem() as line:
            server = await serve_rtu(level, line.device_port)
            agent = os.open(line.agent_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

            async def answer() -> bytes:
                os.write(agent, request)
                data, deadline = b"", time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(agent, 512)
                return data

            try:
                good = await answer()
                assert check_crc(good) and len(good) == 9
                server.set_fault(1, "wrong_unit:9")
                assert await answer() == with_crc(b"\x09" + good[1:-2])
                server.set_fault(1, "truncated:2")
                assert await answer() == good[:-2]
                server.set_fault(1, "overlong:3")
                long = await answer()
                assert long[:9] == good and len(long) == 12 and not check_crc(long)
                with pytest.raises(ValueError, match="late_echo"):
                    server.set_fault(1, "late_echo")
            finally:
                os.close(agent)
                await server.stop()
        tcp = await serve_tcp(level)
        try:
            for kind in ("bad_crc", "wrong_unit", "truncated", "overlong", "late_echo"):
                with pytest.raises(ValueError):
                    tcp.set_fault(1, kind)
        finally:
            await tcp.stop()

    run(scenario())
