"""The M-Bus link layer: frames built and checked (EN 13757-2, FT1.2 of IEC 60870-5-2).

Fixed vectors follow the frame formats and the checksum rule of EN 13757-2 (CS = sum of
C, A, CI and data modulo 256); where a vector also appears elsewhere it says where. The
real long frames of the reference data are checked in test_mbus_telegrams.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from swm_edge_drivers.mbus.frames import (
    MAX_FRAME,
    Frame,
    FrameKind,
    SecondaryAddress,
    checksum,
    frame_size,
    is_rsp_ud,
    long_frame,
    manufacturer_code,
    manufacturer_letters,
    parse_frame,
    req_ud2,
    select_secondary,
    short_frame,
    snd_nke,
)

from swm_edge.driver import CrcError


@pytest.mark.parametrize(
    ("built", "wire"),
    [
        # SND_NKE to address 1: C 40, A 01, CS 41.
        (snd_nke(1), "10 40 01 41 16"),
        # SND_NKE to 253 deselects a slave selected by secondary address.
        (snd_nke(253), "10 40 FD 3D 16"),
        # REQ_UD2 to 254 without FCB: the bytes tests/test_bus.py sends over the socat pair.
        (req_ud2(254, fcb=False), "10 5B FE 59 16"),
        # REQ_UD2 with FCB set, as the first request after SND_NKE (libmbus sends 7B).
        (req_ud2(1, fcb=True), "10 7B 01 7C 16"),
        # Control frame: SND_UD with CI 50 (application reset) to 254.
        (long_frame(0x53, 0xFE, 0x50), "68 03 03 68 53 FE 50 A1 16"),
        # Selection (CI 52) of ident 14491001, manufacturer code 1057, version 01, medium
        # 06 - the example address of libmbus' select-secondary packing - with C 73 as
        # libmbus sends it: ident BCD least significant byte first, then man, ver, med.
        (
            select_secondary(SecondaryAddress("14491001", "DBW", 0x01, 0x06)),
            "68 0B 0B 68 73 FD 52 01 10 49 14 57 10 01 06 9E 16",
        ),
    ],
)
def test_request_frames(built: bytes, wire: str) -> None:
    assert built == bytes.fromhex(wire)
    assert len(built) == frame_size(built)
    parse_frame(built)  # our own frames pass our own checks


def test_manufacturer_codes() -> None:
    # The Itron Cyble telegram (libmbus itron_cyble_m-bus_v1.4_water.hex) carries 77 04 and
    # libmbus prints it as ACW; DBW is what 0x1057 spells.
    assert manufacturer_code("ACW") == 0x0477
    assert manufacturer_letters(0x0477) == "ACW"
    assert manufacturer_letters(0x1057) == "DBW"
    assert manufacturer_letters(0xFFFF)[0] == "?"
    with pytest.raises(ValueError):
        manufacturer_code("A1W")


def test_secondary_address_wildcards() -> None:
    sel = SecondaryAddress("1234FFFF")
    assert sel.encode() == bytes.fromhex("FF FF 34 12 FF FF FF FF")
    assert sel.matches("12345678", "ACW", 1, 7)
    assert not sel.matches("12335678", "ACW", 1, 7)
    narrowed = SecondaryAddress("12345678", "acw", None, 0x07)
    assert narrowed.encode()[4:] == bytes.fromhex("77 04 FF 07")
    assert narrowed.matches("12345678", "ACW", 9, 7)
    assert not narrowed.matches("12345678", "EFE", 9, 7)
    assert not narrowed.matches("12345678", "ACW", 9, 6)
    for bad in ("1234567", "1234567X", "123456789"):
        with pytest.raises(ValueError):
            SecondaryAddress(bad)


def test_parse_valid_frames() -> None:
    assert parse_frame(b"\xe5") == Frame(FrameKind.ACK)
    assert parse_frame(bytes.fromhex("10 7B 01 7C 16")) == Frame(FrameKind.SHORT, 0x7B, 0x01)
    rsp = long_frame(0x08, 5, 0x72, b"\x01\x02")
    frame = parse_frame(rsp)
    assert frame == Frame(FrameKind.LONG, 0x08, 5, 0x72, b"\x01\x02")
    assert is_rsp_ud(frame)
    assert is_rsp_ud(parse_frame(long_frame(0x38, 5, 0x72, b"")))  # ACD and DFC set
    assert not is_rsp_ud(parse_frame(long_frame(0x53, 5, 0x72, b"")))  # SND_UD


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        ("", "truncated"),
        ("68 04", "truncated"),
        ("68 04 04 68 08 01 72", "truncated frame: 7 of 10"),
        ("10 7B 01 7C 16 16", "followed by 1 more"),
        ("10 7B 01 7D 16", "checksum 0x7D, computed 0x7C"),
        ("10 7B 01 7C 17", "stop byte 0x17"),
        ("68 03 04 68 53 FE 50 A1 16", "L fields differ"),
        ("68 03 03 69 53 FE 50 A1 16", "second start byte"),
        ("68 02 02 68 53 FE A1 16", "too small"),
        ("00 10 7B 01 7C 16", "no frame starts with 0x00"),
        ("68 03 03 68 53 FE 50 A2 16", "checksum"),
        ("E5 E5", "followed by 1 more"),
    ],
)
def test_broken_frames_are_crc_errors(wire: str, problem: str) -> None:
    with pytest.raises(CrcError, match=problem):
        parse_frame(bytes.fromhex(wire))


def test_frame_size_needs_four_bytes_of_a_long_frame() -> None:
    assert frame_size(b"") is None
    assert frame_size(b"\x68\xff\xff") is None
    assert frame_size(b"\x68\xff\xff\x68") == MAX_FRAME == 261
    assert frame_size(b"\x10") == 5
    assert frame_size(b"\xe5") == 1


def test_long_frame_limits() -> None:
    assert len(long_frame(0x08, 1, 0x72, bytes(252))) == MAX_FRAME
    with pytest.raises(ValueError):
        long_frame(0x08, 1, 0x72, bytes(253))
    with pytest.raises(CrcError):
        parse_frame(bytes(MAX_FRAME + 1))
    with pytest.raises(ValueError):
        short_frame(0x100, 1)


@given(st.binary(max_size=300))
def test_parser_raises_only_crc_errors_on_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except CrcError:
        return
    # Whatever passes is a consistent frame.
    if frame.kind is FrameKind.LONG:
        assert data == long_frame(frame.c, frame.a, frame.ci or 0, frame.data)


@given(st.binary(max_size=8))
def test_frame_size_raises_only_crc_errors(data: bytes) -> None:
    try:
        size = frame_size(data)
    except CrcError:
        return
    assert size is None or 1 <= size <= MAX_FRAME


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=252),
)
def test_long_frames_round_trip(c: int, a: int, ci: int, data: bytes) -> None:
    raw = long_frame(c, a, ci, data)
    assert raw[1] == raw[2] == len(data) + 3
    assert raw[-2] == checksum(raw[4:-2])
    frame = parse_frame(raw)
    assert (frame.c, frame.a, frame.ci, frame.data) == (c, a, ci, data)


@given(st.text(alphabet="0123456789", min_size=8, max_size=8), st.integers(0, 255))
def test_a_wildcard_selection_matches_its_meter(ident: str, mask: int) -> None:
    wild = "".join("F" if mask >> i & 1 else ch for i, ch in enumerate(ident))
    assert SecondaryAddress(wild).matches(ident, "ACW", 1, 7)
    encoded = SecondaryAddress(wild).encode()
    assert encoded[:4][::-1].hex().upper() == wild
