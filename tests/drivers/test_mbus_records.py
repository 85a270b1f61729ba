"""The M-Bus application layer: data record coding (EN 13757-3), one rule at a time.

The real telegrams of the reference data are in test_mbus_telegrams.py; the records here
are built by hand from the coding tables of EN 13757-3 (DIF table 4, LVAR table 5, VIF
tables 10/12/14, combinable VIFEs table 15, date types F, G, I of annex A), each test
naming the rule it checks, plus property tests that no input makes the decoder raise
anything but :class:`DecodeError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from swm_edge_drivers.mbus.records import (
    Function,
    Quantity,
    Record,
    convert,
    decode_user_data,
    parse_header,
    parse_records,
)
from swm_edge_hil.mbus import encode_bcd, encode_int, encode_type_f, encode_type_g, record

from swm_edge.driver import DecodeError


def one(hex_text: str) -> Record:
    parsed = parse_records(bytes.fromhex(hex_text))
    assert len(parsed.records) == 1, parsed
    return parsed.records[0]


@pytest.mark.parametrize(
    ("hex_text", "value"),
    [
        ("01 13 FF", Decimal("-0.001")),  # 8-bit integer, signed (type B)
        ("02 13 FE FF", Decimal("-0.002")),
        ("03 13 01 00 80", Decimal(-(2**23) + 1).scaleb(-3)),  # 24-bit
        ("04 13 F7 3E 00 00", Decimal("16.119")),  # 32-bit, exact (not 16.118999...)
        ("06 13 01 00 00 00 00 00", Decimal("0.001")),  # 48-bit
        ("07 13 01 00 00 00 00 00 00 80", Decimal(-(2**63) + 1).scaleb(-3)),  # 64-bit
        ("05 13 00 00 80 3F", Decimal("0.001")),  # 32-bit real 1.0
        ("09 13 99", Decimal("0.099")),  # 2-digit BCD
        ("0A 13 45 F1", Decimal("-0.145")),  # 4-digit BCD, leading F = negative
        ("0B 13 56 34 12", Decimal("123.456")),  # 6-digit BCD
        ("0C 13 67 45 23 01", Decimal("1234.567")),  # 8-digit BCD
        ("0E 13 12 90 78 56 34 12", Decimal("123456789.012")),  # 12-digit BCD
        ("0D 13 C2 34 12", Decimal("1.234")),  # LVAR C2: positive BCD, 2 bytes
        ("0D 13 D2 34 12", Decimal("-1.234")),  # LVAR D2: negative BCD
        ("0D 13 E3 01 02 03", Decimal(0x030201).scaleb(-3)),  # LVAR E3: binary, 3 bytes
    ],
)
def test_data_field_types(hex_text: str, value: Decimal) -> None:
    rec = one(hex_text)
    assert rec.quantity is Quantity.VOLUME and rec.unit == "m3"
    assert rec.value == value and rec.error is None


@pytest.mark.parametrize(
    ("hex_text", "reason"),
    [
        ("0C 13 1A 00 00 00", "non-decimal digit"),
        ("05 13 00 00 C0 7F", "not a number"),  # NaN
        ("00 13", "no data"),
        ("08 13", "no data"),  # selection for readout
    ],
)
def test_unreadable_values_leave_the_record_with_a_reason(hex_text: str, reason: str) -> None:
    rec = one(hex_text)
    assert rec.value is None and rec.error is not None and reason in rec.error


def test_variable_length_text_and_unsigned_codes() -> None:
    # VIF FD 11 "customer", LVAR 03: three characters, sent last first.
    rec = one("0D FD 11 03 43 42 41")
    assert rec.description == "customer" and rec.value == "ABC"
    # Error flags (FD 17) are a bit field: unsigned even with bit 7 set.
    assert one("01 FD 17 80").value == Decimal(128)
    assert one("04 78 2E 25 4C 80").value == Decimal(0x804C252E)  # fabrication no.


def test_dife_storage_tariff_subunit() -> None:
    # DIF C4: extension, storage bit 0 = 1, 32-bit. DIFE 8F: storage bits 1-4 = F, DIFE 01:
    # storage bits 5-8 = 1 -> storage 1 + 30 + 32 = 63.
    rec = one("C4 8F 01 13 01 00 00 00")
    assert (rec.storage, rec.tariff, rec.subunit) == (63, 0, 0)
    # DIFE F0: subunit 1, tariff 3; DIFE 70: subunit bit 1, tariff bits 2-3 = 3.
    rec = one("84 F0 70 13 01 00 00 00")
    assert (rec.storage, rec.tariff, rec.subunit) == (0, 15, 3)
    assert rec.dife == (0xF0, 0x70)
    assert one("14 13 01 00 00 00").function is Function.MAXIMUM
    assert one("24 13 01 00 00 00").function is Function.MINIMUM
    assert one("34 13 01 00 00 00").function is Function.ERROR


@pytest.mark.parametrize(
    ("hex_text", "quantity", "value"),
    [
        ("02 10 01 00", Quantity.VOLUME, Decimal("0.000001")),  # 10^-6 m3
        ("02 17 01 00", Quantity.VOLUME, Decimal(10)),  # 10^1 m3
        ("02 3E 01 00", Quantity.VOLUME_FLOW, Decimal(1)),  # 10^(6-6) m3/h
        ("02 46 01 00", Quantity.VOLUME_FLOW, Decimal(6)),  # 10^(6-7) m3/min = 6 m3/h
        ("02 4F 01 00", Quantity.VOLUME_FLOW, Decimal(36)),  # 10^(7-9) m3/s = 36 m3/h
        ("02 5A 9F 01", Quantity.FLOW_TEMPERATURE, Decimal("41.5")),  # 10^-1 Cel
        ("02 5F 07 00", Quantity.RETURN_TEMPERATURE, Decimal(7)),
        ("02 65 C8 00", Quantity.EXTERNAL_TEMPERATURE, Decimal("2.00")),  # 10^-2 Cel
        ("02 6A 0A 00", Quantity.PRESSURE, Decimal(1)),  # 10 * 10^(2-3) bar
        ("02 03 E8 03", Quantity.ENERGY, Decimal(1)),  # 1000 Wh = 1 kWh
        ("02 06 05 00", Quantity.ENERGY, Decimal(5)),  # kWh
        ("02 0E 24 00", Quantity.ENERGY, Decimal(36) / Decimal("3.6")),  # 36 MJ = 10 kWh
        ("02 2B 64 00", Quantity.POWER, Decimal(100)),  # W
        ("02 33 10 0E", Quantity.POWER, Decimal(1000)),  # 3600 * 10^3 J/h = 1 kW
        ("02 22 02 00", Quantity.ON_TIME, Decimal(7200)),  # hours -> s
        ("02 24 05 00", Quantity.OPERATING_TIME, Decimal(5)),  # seconds
        ("02 FB 01 03 00", Quantity.ENERGY, Decimal(3000)),  # FB 01: MWh
        ("02 FB 10 02 00", Quantity.VOLUME, Decimal(200)),  # FB 10: 100 m3
        ("01 FD 0D 03", Quantity.HARDWARE_VERSION, Decimal(3)),
    ],
)
def test_vif_scaling(hex_text: str, quantity: Quantity, value: Decimal) -> None:
    rec = one(hex_text)
    assert rec.quantity is quantity
    assert rec.value == value


def test_combinable_vifes() -> None:
    # E111 0nnn: multiplicative correction 10^(nnn-6), applied.
    rec = one("04 93 74 0A 00 00 00")
    assert rec.value == Decimal("0.0001") and rec.extensions == ()
    # E111 1101: times 10^3, applied.
    assert one("04 93 7D 02 00 00 00").value == Decimal(2)
    # E011 1011 "accumulation only if positive" (forward flow): changes the meaning, kept.
    rec = one("04 93 3B 02 00 00 00")
    assert rec.extensions == (0x3B,) and rec.value == Decimal("0.002")
    # After 7F (manufacturer specific) nothing is interpreted, not even a correction.
    assert one("04 93 FF 74 02 00 00 00").extensions == (0x7F, 0x74)


def test_plain_text_vif() -> None:
    # libmbus' reading of 0D 7C: VIF text ("cust. ID" sent reversed), then the data.
    rec = one("02 7C 03 43 42 41 05 00")
    assert rec.description == "plain text 'ABC'" and rec.value == Decimal(5)


def test_dates() -> None:
    assert one("42 6C E1 01").value == dt.date(2007, 1, 1)  # type G
    assert one("42 6C FF FF").value is None  # day 31, month 15
    assert one("04 6D 3A 0D E6 02").value == dt.datetime(2007, 2, 6, 13, 58)  # type F
    invalid = one("04 6D BA 0D E6 02")  # IV bit
    assert invalid.value is None and invalid.error is not None and "invalid" in invalid.error
    summer = one("04 6D 1D B4 58 34")  # SU bit and hundred-year bits 01 (aptmbusna)
    assert summer.value == dt.datetime(2026, 4, 24, 20, 29) and summer.summer_time
    assert one("03 6D 01 02 03").value is None  # type J: time of day only
    assert one("04 6C 01 02 03 04").value is None  # a date must be type G
    assert one("06 6D 10 12 95 F4 27 00").value == dt.datetime(2023, 7, 20, 21, 18, 16)


def test_special_functions() -> None:
    parsed = parse_records(bytes.fromhex("2F 2F 04 13 01 00 00 00 2F 1F 01 02"))
    assert [r.value for r in parsed.records] == [Decimal("0.001")]
    assert parsed.more and parsed.manufacturer_data == b"\x01\x02"
    parsed = parse_records(bytes.fromhex("0F 1F"))
    assert not parsed.more and parsed.manufacturer_data == b"\x1f"


@pytest.mark.parametrize(
    ("hex_text", "problem"),
    [
        ("04 13 01 00 00", "needs 4 bytes"),
        ("04", "VIF missing"),
        ("3F 13 00", "reserved DIF 0x3F"),
        ("84 80 80 80 80 80 80 80 80 80 80 00 13", "more than 10 DIFE"),
        ("04 93 80 80 80 80 80 80 80 80 80 80 00", "more than 10 VIFE"),
        ("0D 13 F7", "reserved LVAR"),
        ("02 FD", "VIFE missing"),
        ("02 7C 05 41", "plain-text VIF needs 5 bytes"),
    ],
)
def test_record_structure_errors(hex_text: str, problem: str) -> None:
    data = bytes.fromhex("04 13 01 00 00 00") + bytes.fromhex(hex_text)
    with pytest.raises(DecodeError, match=problem):
        parse_records(data)
    lenient = parse_records(data, strict=False)
    assert len(lenient.records) == 1  # the record before the problem is kept
    assert lenient.error is not None and problem in lenient.error


def test_headers() -> None:
    long = bytes.fromhex("78 56 34 12 77 04 14 07 0A 30 00 00") + b"\x2f"
    header, rest = parse_header(0x72, long)
    assert (header.ident, header.manufacturer, header.medium_name) == ("12345678", "ACW", "water")
    assert rest == b"\x2f"
    assert parse_header(0x7A, bytes.fromhex("55 00 00 00"))[0].access_number == 0x55
    assert parse_header(0x78, b"\x01")[1] == b"\x01"
    for ci, data, problem in [
        (0x72, long[:11], "12 bytes"),
        (0x7A, b"\x01", "4 bytes"),
        (0x76, long, "most significant first"),
        (0x73, long, "fixed data structure"),
        (0x51, long, "not a variable data response"),
        (0x7A, bytes.fromhex("55 00 10 05"), "encrypted"),  # configuration word mode 5
    ]:
        with pytest.raises(DecodeError, match=problem):
            parse_header(ci, data)


def test_unit_conversion() -> None:
    assert convert(Decimal("16.119"), Quantity.VOLUME, "L") == Decimal("16119")
    assert convert(Decimal("0.5"), Quantity.VOLUME_FLOW, "L/h") == Decimal(500)
    assert convert(Decimal("0.6"), Quantity.VOLUME_FLOW, "L/min") == Decimal(10)
    assert convert(Decimal(7200), Quantity.OPERATING_TIME, "h") == Decimal(2)
    assert convert(Decimal("1.5"), Quantity.PRESSURE, "kPa") == Decimal(150)
    assert convert(Decimal(1500), Quantity.POWER, "kW") == Decimal("1.5")
    with pytest.raises(KeyError):
        convert(Decimal(1), Quantity.VOLUME, "m3/h")


# --- the simulator's encoders are the decoder's inverse --------------------------------


@given(st.integers(-(10**7) + 1, 10**8 - 1))
def test_bcd_round_trip(value: int) -> None:
    rec = one(record(0x0C, 0x16, encode_bcd(value, 4)).hex())  # VIF 16: 1 m3
    assert rec.value == Decimal(value)


@given(st.integers(-(2**31), 2**31 - 1))
def test_int32_round_trip(value: int) -> None:
    assert one(record(0x04, 0x16, encode_int(value, 4)).hex()).value == Decimal(value)


@given(
    st.datetimes(min_value=dt.datetime(1981, 1, 1), max_value=dt.datetime(2080, 12, 31)),
    st.booleans(),
)
def test_date_round_trip(moment: dt.datetime, summer: bool) -> None:
    moment = moment.replace(second=0, microsecond=0)
    rec = one(record(0x04, 0x6D, encode_type_f(moment, summer_time=summer)).hex())
    assert rec.value == moment and rec.summer_time is summer
    assert one(record(0x02, 0x6C, encode_type_g(moment.date())).hex()).value == moment.date()


# --- nothing but DecodeError, whatever arrives -------------------------------------------


@given(st.binary(max_size=260))
def test_record_parser_raises_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_records(data)
    lenient = parse_records(data, strict=False)  # never raises
    assert len(lenient.records) <= len(data)


@given(st.integers(0, 255), st.binary(max_size=260))
def test_user_data_decoder_raises_only_decode_errors(ci: int, data: bytes) -> None:
    try:
        telegram = decode_user_data(ci, data)
    except DecodeError:
        return
    for rec in telegram.records:
        assert rec.value is not None or rec.error is not None


@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=0, max_size=16))
def test_every_dif_vif_pair_decodes_or_raises_decode_error(dif: int, vif: int, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_records(bytes((dif, vif)) + data)
