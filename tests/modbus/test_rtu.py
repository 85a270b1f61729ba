"""RTU framing of the reads (swm_edge.modbus.rtu): published vectors and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.modbus.rtu import (
    Answer,
    Bad,
    Expected,
    Parse,
    Pending,
    Refused,
    Verdict,
    crc,
    crc_ok,
    parse_answer,
    read_request,
)

# KELLER AG, "Description of the Communication protocol for Series 30 and Series 40
# pressure transmitters", v3.5 (2017), ch. 4: reading P1 (StAdd 0x0002, 2 registers) of
# device 1, request and answer as printed (both CRCs verify; the project's device reference,
# shared/reference/devices.json, lists the document's examples and which CRCs verify).
KELLER_REQUEST = bytes.fromhex("01 03 00 02 00 02 65 CB")
KELLER_ANSWER = bytes.fromhex("01 03 04 3F 75 F0 7B E3 DE")
KELLER_TOB1_ANSWER = bytes.fromhex("01 03 04 41 B5 C0 79 6E 0B")  # TOB1 = 22.719 degC
# The same document's 4-register example prints the CRC A0 77; the CRC of those bytes is
# A0 C7 (a typo in the source): a master must reject the frame as printed.
KELLER_MISPRINTED = bytes.fromhex("01 03 08 3F 75 E3 D2 41 B6 1C 20 A0 77")
# Modbus over Serial Line Specification and Implementation Guide v1.02, appendix B (the
# CRC generation example): the CRC of "02 07" (read exception status of slave 2) is 0x1241,
# sent low byte first: 41 12.
SPEC_CRC_BODY, SPEC_CRC = bytes.fromhex("02 07"), bytes.fromhex("41 12")

P1 = Expected(1, 3, 2)


def frame(body: bytes) -> bytes:
    return body + crc(body)


def answer_frame(unit: int, function: int, data: bytes) -> bytes:
    return frame(bytes((unit, function, len(data))) + data)


def registers_data(words: list[int]) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


def test_published_vectors() -> None:
    assert crc(SPEC_CRC_BODY) == SPEC_CRC
    assert read_request(1, 3, 2, 2) == KELLER_REQUEST
    assert crc_ok(KELLER_ANSWER) and crc_ok(KELLER_TOB1_ANSWER)
    assert parse_answer(KELLER_ANSWER, P1) == Answer(registers=(0x3F75, 0xF07B))
    assert not crc_ok(KELLER_MISPRINTED)
    assert isinstance(parse_answer(KELLER_MISPRINTED, Expected(1, 3, 4)), Bad)


def test_bits_are_unpacked_least_significant_first() -> None:
    # Modbus Application Protocol v1.1b3, 6.1: coils 20-38 of slave 11 answered CD 6B 05.
    got = parse_answer(answer_frame(11, 1, bytes.fromhex("CD 6B 05")), Expected(11, 1, 19))
    assert isinstance(got, Answer)
    want = "10110011" + "11010110" + "101"  # bit 0 of each byte first
    assert got.bits == tuple(c == "1" for c in want)


def test_outcomes() -> None:
    exc = frame(bytes((1, 0x83, 2)))
    assert parse_answer(exc, P1) == Refused(2)
    assert parse_answer(b"", P1) == Pending(Verdict.NOTHING)
    partial = parse_answer(KELLER_ANSWER[:5], P1)
    assert isinstance(partial, Pending) and partial.verdict is Verdict.INCOMPLETE
    other = answer_frame(2, 3, registers_data([1, 2]))
    wrong = parse_answer(other, P1)
    assert isinstance(wrong, Pending) and wrong.verdict is Verdict.WRONG_UNIT
    stale = parse_answer(answer_frame(1, 3, registers_data([1, 2, 3])), P1)
    assert isinstance(stale, Pending) and stale.verdict is Verdict.STALE
    assert parse_answer(other + KELLER_ANSWER, P1) == Answer(registers=(0x3F75, 0xF07B), skipped=1)
    assert isinstance(parse_answer(KELLER_ANSWER + b"\x00", P1), Bad)
    assert isinstance(parse_answer(bytes((1, 0x41, 0, 0, 0)), P1), Bad)  # unknown function
    # another function's exception from the same unit is an answer to another request
    assert isinstance(parse_answer(frame(bytes((1, 0x84, 2))), P1), Pending)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3, 0, 1), "unit"),
        ((248, 3, 0, 1), "unit"),
        ((1, 5, 0, 1), "function"),
        ((1, 3, 0, 126), "count"),
        ((1, 1, 0, 2001), "count"),
        ((1, 3, 65535, 2), "addresses"),
        ((1, 3, -1, 1), "addresses"),
    ],
)
def test_bad_requests(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_request(*args)


units = st.integers(1, 247)


@st.composite
def expected_answers(draw: st.DrawFn) -> tuple[Expected, bytes, Answer]:
    """An expected answer, its frame and what parsing it must give."""
    unit, function = draw(units), draw(st.sampled_from([1, 2, 3, 4]))
    if function in (3, 4):
        words = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
        exp = Expected(unit, function, len(words))
        return exp, answer_frame(unit, function, registers_data(words)), Answer(tuple(words))
    bits = draw(st.lists(st.booleans(), min_size=1, max_size=2000))
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        packed[i // 8] |= bit << (i % 8)
    exp = Expected(unit, function, len(bits))
    return exp, answer_frame(unit, function, bytes(packed)), Answer(bits=tuple(bits))


@st.composite
def foreign_frames(draw: st.DrawFn, exp: Expected) -> bytes:
    """A valid frame that is not the answer to ``exp``: another unit's answer or
    exception, or the same unit's answer to another request (another function, or the
    same function with another byte count)."""
    unit = draw(units)
    function = draw(st.sampled_from([1, 2, 3, 4, 0x81, 0x82, 0x83, 0x84, 5, 6, 15, 16]))
    if function & 0x80:
        if unit == exp.unit and function == exp.function | 0x80:
            unit = unit % 247 + 1
        return frame(bytes((unit, function, draw(st.integers(1, 11)))))
    if function in (5, 6, 15, 16):
        return frame(bytes((unit, function)) + draw(st.binary(min_size=4, max_size=4)))
    data = draw(st.binary(max_size=250))
    if unit == exp.unit and function == exp.function and len(data) == exp.data_bytes:
        data += b"\x00"
    return answer_frame(unit, function, data)


@given(st.data())
def test_answer_after_any_foreign_frames_is_found(data: st.DataObject) -> None:
    exp, wire, want = data.draw(expected_answers())
    foreign = data.draw(st.lists(foreign_frames(exp), max_size=5))
    got = parse_answer(b"".join(foreign) + wire, exp)
    assert isinstance(got, Answer)
    assert (got.registers, got.bits, got.skipped) == (want.registers, want.bits, len(foreign))


@given(st.data())
def test_every_truncation_is_pending(data: st.DataObject) -> None:
    exp, wire, _ = data.draw(expected_answers())
    foreign = b"".join(data.draw(st.lists(foreign_frames(exp), max_size=2)))
    for cut in range(len(foreign) + len(wire)):
        got = parse_answer((foreign + wire)[:cut], exp)
        assert isinstance(got, Pending), (cut, got)


@given(st.data())
def test_single_byte_corruption_is_never_a_good_answer(data: st.DataObject) -> None:
    exp, wire, _ = data.draw(expected_answers())
    at = data.draw(st.integers(0, len(wire) - 1))
    flip = data.draw(st.integers(1, 255))
    spoiled = bytearray(wire)
    spoiled[at] ^= flip
    got = parse_answer(bytes(spoiled), exp)
    assert not isinstance(got, Answer), (at, flip)
    # a corrupted frame must not pass for the unit's exception answer either
    assert not isinstance(got, Refused), (at, flip)


@given(st.data())
def test_trailing_bytes_make_the_answer_bad(data: st.DataObject) -> None:
    exp, wire, _ = data.draw(expected_answers())
    tail = data.draw(st.binary(min_size=1, max_size=8))
    assert isinstance(parse_answer(wire + tail, exp), Bad)


@given(
    st.binary(max_size=600),
    units,
    st.sampled_from([1, 2, 3, 4]),
    st.integers(1, 125),
)
def test_garbage_never_raises(junk: bytes, unit: int, function: int, count: int) -> None:
    got: Parse = parse_answer(junk, Expected(unit, function, count))
    assert isinstance(got, Pending | Answer | Refused | Bad)
    if isinstance(got, Answer):  # only possible if the junk ends in a whole valid answer
        assert crc_ok(junk[-Expected(unit, function, count).length :])


@given(units, st.sampled_from([1, 2, 3, 4]), st.integers(0, 0xFFFF), st.integers(1, 125))
def test_requests_carry_a_valid_crc(unit: int, function: int, address: int, count: int) -> None:
    if address + count > 0x10000:
        address = 0x10000 - count
    request = read_request(unit, function, address, count)
    assert len(request) == 8 and crc_ok(request)
    assert request[:2] == bytes((unit, function))
    assert int.from_bytes(request[2:4], "big") == address
    assert int.from_bytes(request[4:6], "big") == count
