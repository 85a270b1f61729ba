"""SDI-12 wire format: the standard's own examples, malformed lines, and fuzzing.

The vectors are the worked examples of SDI-12 v1.4 (SDI-12 Support Group, "SDI-12 A
Serial-Digital Interface Standard for Microprocessor-Based Sensors", version 1.4, section
4.4.8.4 for measurements and section 4.4.12 for the CRC), as recorded with their source in
shared/reference/devices.json, key "sdi12". The standard prints command and response
run together ("0M!00001"); the response alone is what follows the "!".
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from swm_edge_drivers.sdi12.protocol import (
    MAX_VALUES_CHARS,
    Ack,
    Kind,
    Measurement,
    command,
    crc16,
    crc_chars,
    data_command,
    format_value,
    frame,
    parse_ack,
    parse_address,
    parse_identification,
    parse_values,
)

from swm_edge.driver import CrcError, DecodeError, DeviceTimeout, ReadError

M = Measurement(Kind.MEASURE)
C = Measurement(Kind.CONCURRENT)

# (label in devices.json, [(command, response)...], values over all D pages)
STANDARD_EXCHANGES = [
    ("a. one value", [("0M!", "00001"), ("0D0!", "0+3.14")], [3.14]),
    (
        "b. three values in 5 s, service request",
        [("0M!", "00053"), (None, "0"), ("0D0!", "0+3.14+2.718+1.414")],
        [3.14, 2.718, 1.414],
    ),
    (
        "c. nine values in 35 s, needs D1",
        [
            ("0M!", "00359"),
            (None, "0"),
            ("0D0!", "0+1.11+2.22+3.33+4.44+5.55+6.66"),
            ("0D1!", "0+7.77+8.88+9.99"),
        ],
        [1.11, 2.22, 3.33, 4.44, 5.55, 6.66, 7.77, 8.88, 9.99],
    ),
    (
        "d. two values in 1 s, no service request",
        [("0M!", "00012"), ("0D0!", "0+3.14+2.718")],
        [3.14, 2.718],
    ),
    (
        "e. three values spread over D0..D2",
        [
            ("0M!", "00053"),
            (None, "0"),
            ("0D0!", "0+3.14"),
            ("0D1!", "0+2.718"),
            ("0D2!", "0+1.414"),
        ],
        [3.14, 2.718, 1.414],
    ),
]

# CRC examples a-e (section 4.4.12): the data lines with their three CRC characters.
STANDARD_CRC_LINES = [
    ("0+3.14", "OqZ"),
    ("0+3.14+2.718+1.414", "Ipz"),
    ("0+1.11+2.22+3.33+4.44+5.55+6.66", "I]q"),
    ("0+7.77+8.88+9.99", "IvW"),
    ("0+3.14+2.718", "IWO"),
    ("0+2.718", "Gbc"),
    ("0+1.414", "GtW"),
]


def wire(text: str) -> bytes:
    return text.encode("ascii") + b"\r\n"


@pytest.mark.parametrize(("label", "exchange", "expected"), STANDARD_EXCHANGES)
def test_standard_measurement_examples(
    label: str, exchange: list[tuple[str | None, str]], expected: list[float]
) -> None:
    (cmd, ack_text), *rest = exchange
    assert cmd == command("0", "M").decode()
    ack = parse_ack(frame(wire(ack_text)), "0", M)
    values: list[float] = []
    page = 0
    for sent, response in rest:
        if sent is None:  # the service request: the address alone
            assert parse_address(frame(wire(response))) == "0"
            continue
        assert sent == data_command("0", page).decode()
        values.extend(parse_values(frame(wire(response), sent.encode()), "0", limit=35))
        page += 1
    assert ack.count == len(expected)
    assert values == expected


def test_standard_acknowledgements() -> None:
    assert parse_ack(b"00001", "0", M) == Ack(seconds=0, count=1)
    assert parse_ack(b"00053", "0", M) == Ack(seconds=5, count=3)
    assert parse_ack(b"00359", "0", M) == Ack(seconds=35, count=9)
    # concurrent example: two sensors, atttnn
    assert parse_ack(b"004512", "0", C) == Ack(seconds=45, count=12)
    assert parse_ack(b"101504", "1", C) == Ack(seconds=15, count=4)
    # verification example "0V!" -> "00011": same atttn shape as M
    assert parse_ack(b"00011", "0", M) == Ack(seconds=1, count=1)


def test_standard_concurrent_and_continuous_values() -> None:
    assert parse_values(b"1+1.23+2.34+345+4.4678", "1") == (1.23, 2.34, 345.0, 4.4678)
    long_line = b"0+1.234-4.56+12354-0.00045+2.223+145.5+7.7003+4328.8+9+10+11.433+12"
    assert parse_values(long_line, "0") == (
        1.234, -4.56, 12354.0, -0.00045, 2.223, 145.5, 7.7003, 4328.8, 9.0, 10.0, 11.433, 12.0,
    )  # fmt: skip
    # 67 characters of values: fine for C (75), too many for one M data line (35)
    with pytest.raises(DecodeError):
        parse_values(long_line, "0", limit=MAX_VALUES_CHARS)
    assert parse_values(b"0+3.14", "0") == (3.14,)  # "0R0!" continuous example


@pytest.mark.parametrize(("line", "crc"), STANDARD_CRC_LINES)
def test_standard_crc_examples(line: str, crc: str) -> None:
    assert crc_chars(line.encode()).decode() == crc
    values = parse_values(frame(wire(line + crc)), "0", crc=True)
    assert values == parse_values(line.encode(), "0")


def test_crc16_is_the_reflected_0xa001_polynomial_with_zero_start() -> None:
    assert crc16(b"") == 0
    # "OqZ" = 0x40|0xF, 0x40|0x31, 0x40|0x1A -> 0b1111_110001_011010
    assert crc16(b"0+3.14") == (0xF << 12) | (0x31 << 6) | 0x1A


def test_crc_mismatch_and_short_crc_are_crc_errors() -> None:
    with pytest.raises(CrcError):
        parse_values(b"0+3.14OqY", "0", crc=True)
    with pytest.raises(CrcError):
        parse_values(b"0+3.14", "0", crc=True)  # CRC asked for, none sent: "14" is no CRC
    with pytest.raises(CrcError):
        parse_values(b"0Oq", "0", crc=True)


def test_no_values_is_valid() -> None:
    # "a<CR><LF>": nothing (more) to send; with a CRC it still carries one
    assert parse_values(b"0", "0") == ()
    assert parse_values(b"0" + crc_chars(b"0"), "0", crc=True) == ()


@pytest.mark.parametrize(
    "line",
    [
        b"03.14",  # no sign
        b"0+3.1.4",  # two decimal points
        b"0++3",  # sign without digits
        b"0+",
        b"0+.",
        b"0+12345678",  # 8 digits
        b"0+1234.5678",  # 8 digits with a point
        b"0+3,14",
        b"0 +3.14",
        b"0+3.14e2",
    ],
)
def test_malformed_values_are_decode_errors(line: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_values(line, "0")


def test_seven_digits_and_bare_point_forms_are_accepted() -> None:
    assert parse_values(b"0+1234567-.5+7.", "0") == (1234567.0, -0.5, 7.0)


def test_answer_from_another_address_is_a_crc_error() -> None:
    # Another sensor answering, or a bit flipped in the address: not this sensor's line.
    for parse in (
        lambda: parse_values(b"1+3.14", "0"),
        lambda: parse_ack(b"10001", "0", M),
        lambda: parse_identification(b"114SWMEDGE SONDE6100", "0"),
    ):
        with pytest.raises(CrcError):
            parse()


@pytest.mark.parametrize(
    ("line", "measurement"),
    [(b"0001", M), (b"000012", M), (b"00a53", M), (b"00053", C), (b"0", M), (b"0+3.14", M)],
)
def test_malformed_acknowledgements_are_decode_errors(
    line: bytes, measurement: Measurement
) -> None:
    with pytest.raises(DecodeError):
        parse_ack(line, "0", measurement)


def test_framing() -> None:
    assert frame(b"00001\r\n") == b"00001"
    assert frame(b"0M!00001\r\n", b"0M!") == b"00001"  # adapter echo dropped
    assert frame(b"\x000+3.14\r\n") == b"0+3.14"  # NUL left by the break
    with pytest.raises(DeviceTimeout):
        frame(b"")
    with pytest.raises(DeviceTimeout):
        frame(b"0D0!", b"0D0!")  # only our own echo came back
    with pytest.raises(CrcError):
        frame(b"0+3.14")  # cut short: no CR LF
    with pytest.raises(CrcError):
        frame(b"\r\n")
    with pytest.raises(CrcError):
        frame(b"0+3.\xb94\r\n")  # a byte beyond ASCII
    with pytest.raises(CrcError):
        frame(b"0+3.\x0714\r\n")  # a control character


def test_identification() -> None:
    ident = parse_identification(b"014SWMEDGE SONDE6100SIM0001", "0")
    assert (ident.sdi12_version, ident.vendor, ident.model, ident.version, ident.extra) == (
        "14",
        "SWMEDGE",
        "SONDE6",
        "100",
        "SIM0001",
    )
    with pytest.raises(DecodeError):
        parse_identification(b"014SHORT", "0")


def test_commands() -> None:
    assert command("0", "M") == b"0M!"
    assert command("?", "") == b"?!"
    assert data_command("z", 9) == b"zD9!"
    with pytest.raises(ValueError):
        command("#", "M")
    with pytest.raises(ValueError):
        command("0", "M!")
    with pytest.raises(ValueError):
        data_command("0", 10)
    bodies = {
        ("M", False): "M",
        ("M", True): "MC",
        ("M1", True): "MC1",
        ("C", True): "CC",
        ("C9", False): "C9",
        ("R0", True): "RC0",
        ("R9", False): "R9",
    }
    for (name, crc), body in bodies.items():
        measurement = Measurement.parse(name, crc=crc)
        assert measurement.body == body
        assert measurement.name == name
    for bad_name in ("MC", "M0", "C0", "R", "R10", "D0", "", "X"):
        with pytest.raises(ValueError):
            Measurement.parse(bad_name)


def test_format_value_round_trips_and_refuses_too_many_digits() -> None:
    assert format_value(3.14159, 2) == "+3.14"
    assert format_value(-0.00045, 5) == "-0.00045"
    assert format_value(12354, 0) == "+12354"
    with pytest.raises(ValueError):
        format_value(123456.7, 2)


# -- fuzzing: whatever arrives, the parsers answer with a value or one of our ReadErrors --

addresses = st.sampled_from("0123456789AZaz")
measurements = st.sampled_from([M, C])


@given(raw=st.binary(max_size=100), address=addresses, crc=st.booleans())
def test_parsers_raise_only_read_errors_on_arbitrary_bytes(
    raw: bytes, address: str, crc: bool
) -> None:
    for parse in (
        lambda: parse_values(frame(raw, b"0D0!"), address, crc=crc, limit=35),
        lambda: parse_values(raw, address, crc=crc),
        lambda: parse_ack(raw, address, M),
        lambda: parse_ack(frame(raw), address, C),
        lambda: parse_identification(raw, address),
        lambda: parse_address(raw),
    ):
        with contextlib.suppress(ReadError):  # anything else fails the test
            parse()


# Lines that look like SDI-12 most of the way, where the interesting mistakes are.
sdi12ish = st.text(alphabet="0123456789+-.!ACDIMR\r\n \x00OqZ", max_size=60)


@given(text=sdi12ish, address=addresses, crc=st.booleans(), measurement=measurements)
def test_parsers_raise_only_read_errors_on_near_misses(
    text: str, address: str, crc: bool, measurement: Measurement
) -> None:
    raw = (address + text).encode("ascii")
    for parse in (
        lambda: parse_values(frame(raw), address, crc=crc),
        lambda: parse_ack(frame(raw), address, measurement),
    ):
        with contextlib.suppress(ReadError):  # anything else fails the test
            parse()


values_strategy = st.lists(
    st.tuples(st.floats(min_value=-9999, max_value=9999, allow_nan=False), st.integers(0, 3)),
    max_size=8,
)


@given(values=values_strategy, address=addresses)
def test_written_values_parse_back_with_their_crc(
    values: list[tuple[float, int]], address: str
) -> None:
    texts = [format_value(v, d) for v, d in values]
    body = (address + "".join(texts)).encode("ascii")
    line = frame(body + crc_chars(body) + b"\r\n")
    assert parse_values(line, address, crc=True) == tuple(float(t) for t in texts)
