"""RTU timing tests against figures worked out by hand."""

from __future__ import annotations

from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.modbus import (
    DEVICE_TURNAROUND_SECONDS,
    ReadRequest,
    plan_reads,
    poll_seconds,
    rtu_request_seconds,
)
from swm_edge.model import DataType, PointSpec, Table


class Serial(TypedDict):
    parity: str
    stopbits: int
    bytesize: int


SERIAL_8N1 = Serial(parity="N", stopbits=1, bytesize=8)


def req(table: Table, count: int, address: int = 0) -> ReadRequest:
    return ReadRequest(table, address, count, ())


def test_turnaround_is_ten_ms() -> None:
    assert DEVICE_TURNAROUND_SECONDS == 0.010


def test_9600_8n1_two_registers() -> None:
    # 10-bit characters at 9600 baud: 1/960 s each. Request 8 + silence 3.5, response
    # 5 + 2*2 = 9 + silence 3.5: 24 characters = 25 ms, plus 10 ms turnaround.
    got = rtu_request_seconds(req(Table.HOLDING, 2), baudrate=9600, **SERIAL_8N1)
    assert got == pytest.approx(0.035, abs=1e-12)


@pytest.mark.parametrize(
    ("parity", "stopbits", "bytesize", "bits"),
    [
        ("N", 1, 8, 10),
        ("E", 1, 8, 11),  # the Modbus-over-serial-line default, 8E1
        ("O", 1, 8, 11),
        ("N", 2, 8, 11),
        ("E", 2, 7, 11),
        ("M", 1, 7, 10),
    ],
)
def test_character_size(parity: str, stopbits: int, bytesize: int, bits: int) -> None:
    # The same 24-character transaction as above, at ``bits`` bits per character.
    got = rtu_request_seconds(
        req(Table.INPUT, 2), baudrate=9600, parity=parity, stopbits=stopbits, bytesize=bytesize
    )
    assert got == pytest.approx(24 * bits / 9600 + 0.010, abs=1e-12)


@pytest.mark.parametrize(
    ("table", "count", "expected"),
    [
        # response 5 + 2*125 = 255; 8 + 255 + 7 = 270 characters = 281.25 ms
        (Table.HOLDING, 125, 0.28125 + 0.010),
        # bits: response 5 + ceil(10/8) = 7; 8 + 7 + 7 = 22 characters
        (Table.COIL, 10, 22 / 960 + 0.010),
        (Table.DISCRETE, 16, 22 / 960 + 0.010),
        (Table.DISCRETE, 17, 23 / 960 + 0.010),
        (Table.COIL, 1, 21 / 960 + 0.010),
        # 2000 bits = 250 bytes; 8 + 255 + 7 = 270 characters, like 125 registers
        (Table.COIL, 2000, 0.28125 + 0.010),
    ],
)
def test_response_size_by_table(table: Table, count: int, expected: float) -> None:
    got = rtu_request_seconds(req(table, count), baudrate=9600, **SERIAL_8N1)
    assert got == pytest.approx(expected, abs=1e-12)


def test_fixed_silence_above_19200_baud() -> None:
    # Modbus over Serial Line v1.02, 2.5.1.1: t3.5 is 1.75 ms above 19200 baud.
    # 115200 8N1, 2 registers: 17 characters of 10 bits, 2 x 1.75 ms silence, 10 ms turnaround.
    got = rtu_request_seconds(req(Table.HOLDING, 2), baudrate=115200, **SERIAL_8N1)
    assert got == pytest.approx(170 / 115200 + 0.0035 + 0.010, abs=1e-12)
    # At 19200 the silence is still 3.5 characters: 24 characters of 10 bits.
    got = rtu_request_seconds(req(Table.HOLDING, 2), baudrate=19200, **SERIAL_8N1)
    assert got == pytest.approx(240 / 19200 + 0.010, abs=1e-12)


def test_poll_seconds_sums_a_devices_requests() -> None:
    # KELLER P1..TOB1 (devices.json) with the 4-register limit: two reads of 4 registers.
    points = [PointSpec(n, Table.HOLDING, a, DataType.FLOAT32) for n, a in [("P1", 2), ("P2", 4)]]
    points += [PointSpec(n, Table.HOLDING, a, DataType.FLOAT32) for n, a in [("T", 6), ("B", 8)]]
    requests = plan_reads(points, max_registers=4)
    assert len(requests) == 2
    # each: 8 + (5 + 8) + 7 = 28 characters at 1/960 s, plus 10 ms
    one = 28 / 960 + 0.010
    assert poll_seconds(requests, baudrate=9600, **SERIAL_8N1) == pytest.approx(2 * one)
    with_delay = poll_seconds(requests, baudrate=9600, request_delay=0.05, **SERIAL_8N1)
    assert with_delay == pytest.approx(2 * (one + 0.05))


def test_poll_seconds_of_nothing_is_zero() -> None:
    assert poll_seconds([], baudrate=9600, **SERIAL_8N1) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"baudrate": 0, "parity": "N", "stopbits": 1, "bytesize": 8},
        {"baudrate": -9600, "parity": "N", "stopbits": 1, "bytesize": 8},
        {"baudrate": 9600, "parity": "X", "stopbits": 1, "bytesize": 8},
        {"baudrate": 9600, "parity": "none", "stopbits": 1, "bytesize": 8},
        {"baudrate": 9600, "parity": "N", "stopbits": 0, "bytesize": 8},
        {"baudrate": 9600, "parity": "N", "stopbits": 3, "bytesize": 8},
        {"baudrate": 9600, "parity": "N", "stopbits": 1, "bytesize": 9},
        {"baudrate": 9600, "parity": "N", "stopbits": 1, "bytesize": 4},
    ],
)
def test_rejects_impossible_serial_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        rtu_request_seconds(req(Table.HOLDING, 1), **kwargs)  # type: ignore[arg-type]


def test_rejects_negative_request_delay() -> None:
    with pytest.raises(ValueError):
        poll_seconds([req(Table.HOLDING, 1)], baudrate=9600, request_delay=-1, **SERIAL_8N1)


@given(
    table=st.sampled_from(Table),
    count=st.integers(1, 124),
    baudrate=st.integers(300, 1_000_000),
    parity=st.sampled_from("NEO"),
    stopbits=st.sampled_from([1, 2]),
)
def test_property_more_data_or_slower_line_takes_longer(
    table: Table, count: int, baudrate: int, parity: str, stopbits: int
) -> None:
    serial = Serial(parity=parity, stopbits=stopbits, bytesize=8)
    t = rtu_request_seconds(req(table, count), baudrate=baudrate, **serial)
    more = rtu_request_seconds(req(table, count + 1), baudrate=baudrate, **serial)
    slower = rtu_request_seconds(req(table, count), baudrate=baudrate - 1, **serial)
    assert t > DEVICE_TURNAROUND_SECONDS
    assert more > t if not table.is_bits else more >= t
    assert slower > t


def test_silent_interval_is_3_5_characters_up_to_19200_baud_then_fixed() -> None:
    from swm_edge.modbus.timing import silent_interval

    # 8N1: 10 bits a character; 8E1: 11 (Modbus over Serial Line v1.02, 2.5.1.1)
    assert silent_interval(baudrate=9600, parity="N", stopbits=1, bytesize=8) == pytest.approx(
        3.5 * 10 / 9600
    )
    assert silent_interval(baudrate=9600, parity="E", stopbits=1, bytesize=8) == pytest.approx(
        3.5 * 11 / 9600
    )
    assert silent_interval(baudrate=38400, parity="E", stopbits=1, bytesize=8) == 0.00175


def test_an_rtu_bus_keeps_the_silence_between_requests() -> None:
    from swm_edge.bus import Bus, _Guard
    from swm_edge.model import BusSpec

    rtu = Bus(BusSpec(id="b", type="modbus-rtu", timeout=0.1, port="/dev/null", parity="E"))
    tcp = Bus(BusSpec(id="t", type="modbus-tcp", timeout=0.1, host="127.0.0.1"))
    assert _Guard(rtu, 0.0)._delay == pytest.approx(3.5 * 11 / 9600)
    assert _Guard(rtu, 0.02)._delay == 0.02  # a longer device delay wins
    assert _Guard(tcp, 0.0)._delay == 0.0
