"""Fault kinds of swm_edge_hil.faults: parsing, round trips and what each does to a frame."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from swm_edge_hil.faults import FRAME_KINDS, Fault, FaultKind, FaultTable
from swm_edge_hil.rtu import check_crc, response_length, with_crc

# A valid reply of unit 1 to "read 2 holding registers": 01 03 04 0001 0002 + CRC.
REPLY = with_crc(bytes((1, 3, 4, 0, 1, 0, 2)))


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("wrong_unit", Fault(FaultKind.WRONG_UNIT)),
        ("wrong_unit:9", Fault(FaultKind.WRONG_UNIT, unit=9)),
        ("wrong_unit:0x10", Fault(FaultKind.WRONG_UNIT, unit=16)),
        ("truncated", Fault(FaultKind.TRUNCATED, size=3)),
        ("truncated:1", Fault(FaultKind.TRUNCATED, size=1)),
        ("overlong", Fault(FaultKind.OVERLONG, size=4)),
        ("OVERLONG:7", Fault(FaultKind.OVERLONG, size=7)),
        ("late_echo", Fault(FaultKind.LATE_ECHO)),
    ],
)
def test_parse_new_kinds(text: str, fault: Fault) -> None:
    parsed = Fault.parse(text)
    assert parsed == fault
    assert Fault.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "wrong_unit:256",
        "wrong_unit:-1",
        "wrong_unit:x",
        "truncated:0",
        "overlong:-2",
        "late_echo:1",
    ],
)
def test_bad_arguments_of_new_kinds(text: str) -> None:
    with pytest.raises(ValueError):
        Fault.parse(text)


def test_defaults_of_new_kinds() -> None:
    assert Fault(FaultKind.TRUNCATED).size == 3
    assert Fault(FaultKind.OVERLONG).size == 4
    assert Fault(FaultKind.WRONG_UNIT).unit is None
    with pytest.raises(ValueError):
        Fault(FaultKind.OVERLONG, size=-1)


def test_existing_kinds_unchanged() -> None:
    assert str(Fault.parse("late")) == "late:2"
    assert str(Fault.parse("intermittent")) == "intermittent:0.5"
    assert str(Fault.parse("exception:6")) == "exception:6"
    for text in ("silent", "garbage", "bad_crc"):
        assert str(Fault.parse(text)) == text
    # spoil() leaves the frame alone for kinds that the relay/servers apply themselves
    for kind in set(FaultKind) - FRAME_KINDS:
        assert Fault(kind, code=2).spoil(REPLY, random.Random(0)) == REPLY


def test_wrong_unit_is_a_valid_frame_from_another_unit() -> None:
    spoiled = Fault(FaultKind.WRONG_UNIT).spoil(REPLY, random.Random(0))
    assert check_crc(spoiled)
    assert spoiled[0] == 2 and spoiled[1:-2] == REPLY[1:-2]
    assert Fault(FaultKind.WRONG_UNIT).spoil(with_crc(bytes((247, 3, 0))), random.Random())[0] == 1
    assert Fault.parse("wrong_unit:33").spoil(REPLY, random.Random())[0] == 33


def test_truncated_frame() -> None:
    spoiled = Fault.parse("truncated:3").spoil(REPLY, random.Random(0))
    assert spoiled == REPLY[:-3]
    assert not check_crc(spoiled)
    # shorter than the header announces: a reader waits for more bytes
    length = response_length(spoiled)
    assert length is not None and length > len(spoiled)
    # never less than one byte, whatever the size
    assert Fault.parse("truncated:100").spoil(REPLY, random.Random(0)) == REPLY[:1]


def test_overlong_frame_is_the_valid_frame_plus_garbage() -> None:
    spoiled = Fault.parse("overlong:5").spoil(REPLY, random.Random(1))
    assert spoiled[: len(REPLY)] == REPLY
    assert len(spoiled) == len(REPLY) + 5
    assert not check_crc(spoiled)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(min_size=3, max_size=40),
    kind=st.sampled_from(sorted(FRAME_KINDS)),
    size=st.integers(1, 8),
    seed=st.integers(0, 2**32),
)
def test_frame_kinds_never_pass_as_the_original(
    body: bytes, kind: FaultKind, size: int, seed: int
) -> None:
    frame = with_crc(body)
    spoiled = Fault(kind, size=size).spoil(frame, random.Random(seed))
    assert spoiled != frame
    if kind is FaultKind.WRONG_UNIT:
        assert check_crc(spoiled) and spoiled[0] != frame[0]
    else:
        assert not check_crc(spoiled)


def test_table_reply_and_held_echo() -> None:
    table = FaultTable(seed=3)
    table.set(1, "overlong:2")
    fault = table.get(1)
    assert fault is not None
    first = table.reply(fault, REPLY)
    assert first.startswith(REPLY) and len(first) == len(REPLY) + 2
    # seeded: the same table seed gives the same garbage
    assert FaultTable(seed=3).reply(fault, REPLY) == first

    assert table.take_held() is None
    table.hold(REPLY)
    table.hold(REPLY[:-1] + b"\x00")  # a newer held reply replaces the older one
    assert table.take_held() == REPLY[:-1] + b"\x00"
    assert table.take_held() is None
