"""The virtual RS-485 line: frames pass both ways, faults hit one unit, re-plugging works."""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException
from swm_edge_hil.clients import ExceptionAnswer, read_point
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.faults import Fault, FaultKind
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.rtu import check_crc, exception_frame, read_request, with_crc
from swm_edge_hil.servers import serve_rtu

T0 = 1_700_000_000.0
TIMEOUT = 0.3
REQUEST = read_request(1, 3, 2, 2)  # KELLER P1: 01 03 00 02 00 02 65 CB
REPLY = bytes.fromhex("0103043F75F07BE3DE")  # its answer, as printed in the KELLER document


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def read_for(fd: int, timeout: float, n: int | None = None) -> bytes:
    """Bytes arriving on ``fd`` within ``timeout`` (or as soon as ``n`` have come)."""
    data = b""
    deadline = time.monotonic() + timeout
    while (n is None or len(data) < n) and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 4096)
    return data


@pytest.fixture
def raw_line(tmp_path: Path) -> Iterator[tuple[NullModem, int, int]]:
    """A started null modem and raw file descriptors on both of its ends."""
    with NullModem(agent_link=tmp_path / "by-id" / "usb-FTDI_FT232R_A1B2-if00-port0") as line:
        agent = os.open(line.agent_port, os.O_RDWR | os.O_NOCTTY)
        device = os.open(line.device_port, os.O_RDWR | os.O_NOCTTY)
        try:
            yield line, agent, device
        finally:
            os.close(agent)
            os.close(device)


def transact(agent: int, device: int, reply: bytes = REPLY, wait: float = 0.15) -> bytes:
    """Send REQUEST from the agent, check it arrives intact, answer, return what the agent gets."""
    os.write(agent, REQUEST)
    assert read_for(device, 1.0, len(REQUEST)) == REQUEST
    os.write(device, reply)
    return read_for(agent, wait)


def test_the_document_frames_are_valid() -> None:
    assert bytes.fromhex("01030002000265CB") == REQUEST
    assert check_crc(REPLY) and not check_crc(REPLY[:-1] + b"\x00")
    assert exception_frame(1, 3, 2) == with_crc(b"\x01\x83\x02")


def test_frames_pass_both_ways_unchanged(raw_line: tuple[NullModem, int, int]) -> None:
    line, agent, device = raw_line
    assert os.path.islink(line.agent_port)
    assert transact(agent, device) == REPLY
    # A frame of a function the relay has no length for is ended by the line going quiet.
    odd = with_crc(bytes((1, 0x41, 1, 2, 3)))
    os.write(agent, odd)
    assert read_for(device, 0.3) == odd
    assert line.stats["requests"] == 2
    assert ("to_device", REQUEST) in line.trace and ("to_agent", REPLY) in line.trace


def test_raw_faults_change_only_the_reply(raw_line: tuple[NullModem, int, int]) -> None:
    line, agent, device = raw_line
    line.set_fault(1, "exception:6")
    assert transact(agent, device) == exception_frame(1, 3, 6)
    line.set_fault(1, "bad_crc")
    spoiled = transact(agent, device)
    assert spoiled[:-1] == REPLY[:-1] and not check_crc(spoiled)
    line.set_fault(1, "garbage")
    junk = transact(agent, device)
    assert len(junk) == len(REPLY) and junk != REPLY and not check_crc(junk)
    line.set_fault(1, "silent")
    assert transact(agent, device) == b""
    line.set_fault(1, Fault(FaultKind.LATE, delay=0.3))
    started = time.monotonic()
    assert transact(agent, device, wait=0.1) == b""
    assert read_for(agent, 1.0, len(REPLY)) == REPLY
    assert time.monotonic() - started >= 0.3
    line.set_fault(2, "silent")  # another unit's fault leaves unit 1 alone
    line.set_fault(1, None)
    assert transact(agent, device) == REPLY
    assert line.stats["dropped"] == 1 and line.stats["delayed"] == 1


def test_intermittent_answers_about_half_the_time(raw_line: tuple[NullModem, int, int]) -> None:
    line, agent, device = raw_line
    line.set_fault(1, "intermittent:0.5")
    answered = sum(transact(agent, device, wait=0.03) == REPLY for _ in range(40))
    assert 8 <= answered <= 32


def test_line_speed_emulation() -> None:
    with NullModem(baudrate=9600) as line:
        agent = os.open(line.agent_port, os.O_RDWR | os.O_NOCTTY)
        device = os.open(line.device_port, os.O_RDWR | os.O_NOCTTY)
        try:
            started = time.monotonic()
            os.write(agent, REQUEST)
            assert read_for(device, 1.0, len(REQUEST)) == REQUEST
            # 8 bytes x 10 bits at 9600 baud = 8.3 ms on the wire.
            assert time.monotonic() - started >= 0.008
        finally:
            os.close(agent)
            os.close(device)


def test_faults_on_a_shared_line_seen_by_pymodbus() -> None:
    """Each fault of unit 1 gives the client what it should; unit 2 keeps answering."""

    async def scenario() -> None:
        level = SimulatedDevice("keller-series30", unit=1, start=T0, frozen=True)
        sonde = SimulatedDevice("yosemitech-y4000", unit=2, start=T0, frozen=True)
        pressure, ph = level.points[0], sonde.points[3]
        with NullModem() as line:
            server = await serve_rtu([level, sonde], line.device_port)
            client = AsyncModbusSerialClient(line.agent_port, timeout=TIMEOUT, retries=0)
            assert await client.connect()
            try:
                assert await read_point(client, 1, pressure) == level.value("pressure")
                for code in (2, 6, 11):
                    line.set_fault(1, f"exception:{code}")
                    with pytest.raises(ExceptionAnswer) as answer:
                        await read_point(client, 1, pressure)
                    assert answer.value.code == code
                    assert await read_point(client, 2, ph) == sonde.value("ph")
                for fault in ("silent", "garbage", "bad_crc", "intermittent:0"):
                    line.set_fault(1, fault)
                    started = time.monotonic()
                    with pytest.raises(ModbusException) as failure:
                        await read_point(client, 1, pressure)
                    assert not isinstance(failure.value, ExceptionAnswer), fault
                    assert time.monotonic() - started >= TIMEOUT * 0.9, fault  # a timeout
                    assert await read_point(client, 2, ph) == sonde.value("ph"), fault
                line.set_fault(1, "late:0.5")
                with pytest.raises(ModbusException):
                    await read_point(client, 1, pressure)
                await asyncio.sleep(0.4)  # the late answer lands and is discarded
                line.set_fault(1, None)
                assert await read_point(client, 2, ph) == sonde.value("ph")
                assert await read_point(client, 1, pressure) == level.value("pressure")
            finally:
                client.close()
                await server.stop()

    run(scenario())


def test_unplug_and_replug_under_a_stable_link(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"

    async def scenario() -> None:
        level = SimulatedDevice("keller-series30", unit=1, start=T0, frozen=True)
        pressure = level.points[0]
        with NullModem(agent_link=link) as line:
            assert line.agent_port == str(link) and link.is_symlink()
            server = await serve_rtu(level, line.device_port)
            client = AsyncModbusSerialClient(str(link), timeout=TIMEOUT, retries=0)
            assert await client.connect()
            try:
                assert await read_point(client, 1, pressure) == level.value("pressure")
                old_pty = line.agent_pty
                line.unplug()
                assert not line.plugged and not os.path.lexists(link)
                assert old_pty is not None and not os.path.exists(old_pty)
                await asyncio.sleep(0.05)
                with pytest.raises(ModbusException):
                    await read_point(client, 1, pressure)
                fresh = AsyncModbusSerialClient(str(link), timeout=TIMEOUT, retries=0)
                assert not await fresh.connect()  # nothing at that path while unplugged
                fresh.close()

                line.replug()
                assert line.plugged and link.is_symlink()
                assert os.readlink(link) == line.agent_pty
                again = AsyncModbusSerialClient(str(link), timeout=TIMEOUT, retries=0)
                assert await again.connect()
                try:
                    level.set("pressure", 3.75)
                    assert await read_point(again, 1, pressure) == level.value("pressure")
                finally:
                    again.close()
            finally:
                client.close()
                await server.stop()
        assert not os.path.lexists(link)  # closing removes the link

    run(scenario())


def test_frame_kinds_rewrite_the_reply(raw_line: tuple[NullModem, int, int]) -> None:
    line, agent, device = raw_line
    line.set_fault(1, "wrong_unit:5")
    assert transact(agent, device) == with_crc(b"\x05" + REPLY[1:-2])
    line.set_fault(1, "truncated:2")
    assert transact(agent, device) == REPLY[:-2]
    line.set_fault(1, "overlong:4")
    long = transact(agent, device)
    assert long[: len(REPLY)] == REPLY and len(long) == len(REPLY) + 4 and not check_crc(long)
    assert line.stats["corrupted"] == 3


OTHER = read_request(2, 3, 0, 1)  # a request to unit 2
OTHER_REPLY = with_crc(bytes((2, 3, 2, 0, 7)))


def other_transact(agent: int, device: int) -> bytes:
    os.write(agent, OTHER)
    assert read_for(device, 1.0, len(OTHER)) == OTHER
    os.write(device, OTHER_REPLY)
    return read_for(agent, 0.15)


def test_late_echo_goes_out_after_the_next_request(raw_line: tuple[NullModem, int, int]) -> None:
    """A late_echo reply is held, then sent right after the next request the relay frames:
    to any unit, only to chosen units, or in one write with that request's answer."""
    line, agent, device = raw_line
    line.set_fault(1, "late_echo")
    assert transact(agent, device) == b""  # held
    assert other_transact(agent, device) == REPLY + OTHER_REPLY  # released to any unit
    assert transact(agent, device) == b""
    line.echo_late([1])  # only before requests to unit 1
    assert other_transact(agent, device) == OTHER_REPLY
    # unit 1's next request gets the echo; its own answer is held in turn
    assert transact(agent, device) == REPLY
    line.echo_late([2], with_answer=True)
    assert other_transact(agent, device) == REPLY + OTHER_REPLY
    assert ("to_agent", REPLY + OTHER_REPLY) in line.trace  # one write
    line.set_fault(1, None)
    line.echo_late()
    assert line.faults.take_held() is None
    assert transact(agent, device) == REPLY
    assert line.stats["echoed"] == 3 and line.stats["delayed"] == 3
