"""Real published M-Bus telegrams decode to their documented values.

Every vector below is copied from ``shared/reference/devices.json`` (key
``mbus_telegrams``), which records where each telegram and its decoding were published;
the ``source`` of each vector repeats that citation. Expected values are the published
decodings quoted as printed (libmbus' ``.norm.xml`` strings, wmbusmeters' JSON fields);
where we read a record differently from the source, the vector says so and why.

Wired telegrams go through the whole stack (long frame -> header -> records -> points);
wireless ones (wM-Bus, link layer not ours) only through the record decoder: their
plain-text data records are coded exactly as on the wire bus.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from swm_edge_drivers.mbus.config import MbusPoint, time_zone
from swm_edge_drivers.mbus.driver import point_values
from swm_edge_drivers.mbus.frames import FrameKind, is_rsp_ud, parse_frame
from swm_edge_drivers.mbus.records import (
    Function,
    Quantity,
    Telegram,
    decode_user_data,
)

from swm_edge.driver import CrcError
from swm_edge.testing import unavailable

LIBMBUS = (
    "rscada/libmbus (git snapshot f09d613bf98d0d10ed99240470bd4a2d3be9873f), test/test-frames/"
)
WMBUSMETERS = "wmbusmeters/wmbusmeters (git snapshot 4dedd717d3af8043ffa3e94f69476656ccd17bc2), "

INST, MAX = "Instantaneous value", "Maximum value"


@dataclass(frozen=True)
class LibmbusVector:
    """A libmbus test frame: hex, its ``.norm.xml`` slave info and records.

    ``records`` rows: (function, storage, libmbus quantity, libmbus value string, our
    quantity, the VIF extensions we keep); the final "Manufacturer specific" record of
    libmbus is our ``manufacturer_data``.
    """

    name: str
    hex: str
    slave: dict[str, str]
    records: list[tuple[str, int, str, str, Quantity | None, tuple[int, ...]]]
    manufacturer_data: str = ""
    tariff_subunit: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{LIBMBUS}{self.name}.hex and {self.name}.norm.xml"


LIBMBUS_VECTORS = [
    LibmbusVector(
        "itron_cyble_m-bus_v1.4_cold_water",
        "68 56 56 68 08 08 72 80 03 02 10 77 04 14 16 A1 00 00 00 0C 78 80 03 02 10 0D 7C 08 44 49"
        " 20 2E 74 73 75 63 0A 20 20 20 20 20 20 20 20 20 20 04 6D 27 0F 79 1A 02 7C 09 65 6D 69"
        " 74 20 2E 74 61 62 D2 0F 04 15 B7 11 00 00 04 95 7F 00 00 00 00 44 15 B7 11 00 00 0F 00"
        " 04 1F 0D 16",
        {
            "Id": "10020380",
            "Manufacturer": "ACW",
            "Version": "20",
            "Medium": "Cold water",
            "AccessNumber": "161",
            "Status": "00",
            "Signature": "0000",
        },
        [
            (INST, 0, "Fabrication No", "10020380.000000", Quantity.FABRICATION_NO, ()),
            (INST, 0, "cust. ID", "          ", None, ()),
            (INST, 0, "Time point (date & time)", "2011-10-25T15:39:00Z", Quantity.DATETIME, ()),
            (INST, 0, "bat. time", "4050.000000", None, ()),
            (INST, 0, "Volume", "453.500000", Quantity.VOLUME, ()),
            # VIF 95 + VIFE 7F: manufacturer-specific extension (devices.json: "meaning
            # uncertain"); we keep 0x7F so a plain volume point does not pick it.
            (INST, 0, "Volume", "0.000000", Quantity.VOLUME, (0x7F,)),
            (INST, 1, "Volume", "453.500000", Quantity.VOLUME, ()),
        ],
        manufacturer_data="00 04 1F",
    ),
    LibmbusVector(
        "itron_cyble_m-bus_v1.4_water",
        "68 56 56 68 08 01 72 71 00 00 12 77 04 14 07 0A 30 00 00 0C 78 71 00 00 12 0D 7C 08 44 49"
        " 20 2E 74 73 75 63 0A 45 4C 42 59 43 20 54 53 45 54 04 6D 2B 0D 98 11 02 7C 09 65 6D 69"
        " 74 20 2E 74 61 62 F2 10 04 14 3D 30 00 00 04 94 7F 14 00 00 00 44 14 00 00 00 00 0F 10"
        " 01 1F 2F 16",
        {
            "Id": "12000071",
            "Manufacturer": "ACW",
            "Version": "20",
            "Medium": "Water",
            "AccessNumber": "10",
            "Status": "30",
            "Signature": "0000",
        },
        [
            (INST, 0, "Fabrication No", "12000071.000000", Quantity.FABRICATION_NO, ()),
            (INST, 0, "cust. ID", "TEST CYBLE", None, ()),
            (INST, 0, "Time point (date & time)", "2012-01-24T13:43:00Z", Quantity.DATETIME, ()),
            (INST, 0, "bat. time", "4338.000000", None, ()),
            (INST, 0, "Volume", "123.490000", Quantity.VOLUME, ()),
            (INST, 0, "Volume", "0.200000", Quantity.VOLUME, (0x7F,)),
            (INST, 1, "Volume", "0.000000", Quantity.VOLUME, ()),
        ],
        # The trailing 1F is inside the manufacturer data (after DIF 0F), not a DIF:
        # this telegram announces no further telegram.
        manufacturer_data="10 01 1F",
    ),
    LibmbusVector(
        "GWF-MTKcoder",
        "68 1B 1B 68 08 01 72 07 20 18 00 E6 1E 35 07 4C 00 00 00 0C 78 07 20 18 00 0C 16 69 02"
        " 00 00 96 16",
        {
            "Id": "182007",
            "Manufacturer": "GWF",
            "Version": "53",
            "Medium": "Water",
            "AccessNumber": "76",
            "Status": "00",
            "Signature": "0000",
        },
        [
            (INST, 0, "Fabrication No", "182007.000000", Quantity.FABRICATION_NO, ()),
            (INST, 0, "Volume", "269.000000", Quantity.VOLUME, ()),
        ],
    ),
    LibmbusVector(
        "els_falcon",
        "68 4A 4A 68 08 01 72 45 23 11 70 93 15 0A 07 02 00 00 00 0C 13 67 45 23 01 04 6D 3A 0D E6"
        " 02 42 6C E1 01 4C 13 51 69 45 00 42 EC 7E 01 11 12 3B 39 17 42 6C 01 11 02 3B F9 17 0F"
        " 0E 42 20 01 01 01 00 05 08 5E 01 20 3D 12 08 3D 12 08 00 C0 16",
        {
            "Id": "70112345",
            "Manufacturer": "ELS",
            "Version": "10",
            "Medium": "Water",
            "AccessNumber": "2",
            "Status": "00",
            "Signature": "0000",
        },
        [
            (INST, 0, "Volume", "1234.567000", Quantity.VOLUME, ()),
            (INST, 0, "Time point (date & time)", "2007-02-06T13:58:00Z", Quantity.DATETIME, ()),
            (INST, 1, "Time point (date)", "2007-01-01", Quantity.DATE, ()),
            (INST, 1, "Volume", "456.951000", Quantity.VOLUME, ()),
            # VIF EC + VIFE 7E ("future value"): kept as an extension.
            (INST, 1, "Time point (date)", "2008-01-01", Quantity.DATE, (0x7E,)),
            (MAX, 0, "Volume flow", "5.945000", Quantity.VOLUME_FLOW, ()),
            (INST, 1, "Time point (date)", "2008-01-01", Quantity.DATE, ()),
            (INST, 0, "Volume flow", "6.137000", Quantity.VOLUME_FLOW, ()),
        ],
        manufacturer_data="0E 42 20 01 01 01 00 05 08 5E 01 20 3D 12 08 3D 12 08 00",
    ),
    LibmbusVector(
        "oms_frame2",
        "68 29 29 68 08 FD 72 44 22 75 92 24 23 29 07 1F 00 00 00 0C 13 27 04 85 02 0B 3B 27 01 00"
        " 4C 13 19 54 44 01 42 6C FF 0C 02 FD 17 00 00 99 16",
        {
            "Id": "92752244",
            "Manufacturer": "HYD",
            "Version": "41",
            "Medium": "Water",
            "AccessNumber": "31",
            "Status": "00",
            "Signature": "0000",
        },
        [
            (INST, 0, "Volume", "2850.427000", Quantity.VOLUME, ()),
            (INST, 0, "Volume flow", "0.127000", Quantity.VOLUME_FLOW, ()),
            (INST, 1, "Volume", "1445.419000", Quantity.VOLUME, ()),
            (INST, 1, "Time point (date)", "2007-12-31", Quantity.DATE, ()),
            (INST, 0, "Error flags", "0.000000", Quantity.ERROR_FLAGS, ()),
        ],
    ),
    LibmbusVector(
        "ACW_Itron-BM-plus-m",
        "68 3C 3C 68 08 08 72 78 03 49 11 77 04 0E 16 0A 00 00 00 0C 78 78 03 49 11 04 13 31 D4 00"
        " 00 42 6C 00 00 44 13 00 00 00 00 04 6D 0B 0B CD 13 02 27 00 00 09 FD 0E 02 09 FD 0F 06"
        " 0F 00 01 75 13 D3 16",
        {
            "Id": "11490378",
            "Manufacturer": "ACW",
            "Version": "14",
            "Medium": "Cold water",
            "AccessNumber": "10",
            "Status": "00",
            "Signature": "0000",
        },
        [
            (INST, 0, "Fabrication No", "11490378.000000", Quantity.FABRICATION_NO, ()),
            (INST, 0, "Volume", "54.321000", Quantity.VOLUME, ()),
            # 42 6C 00 00: day 0, month 0. libmbus prints "2000-00-00"; it is no date, so
            # our value is None (devices.json: "useful invalid-date test").
            (INST, 1, "Time point (date)", "2000-00-00", Quantity.DATE, ()),
            (INST, 1, "Volume", "0.000000", Quantity.VOLUME, ()),
            (INST, 0, "Time point (date & time)", "2014-03-13T11:11:00Z", Quantity.DATETIME, ()),
            (INST, 0, "Operating time", "0.000000", Quantity.OPERATING_TIME, ()),
            (INST, 0, "Firmware version", "2.000000", Quantity.FIRMWARE_VERSION, ()),
            (INST, 0, "Software version", "6.000000", Quantity.SOFTWARE_VERSION, ()),
        ],
        manufacturer_data="00 01 75 13",
    ),
    LibmbusVector(
        "EFE_Engelmann-WaterStar",
        "68 51 51 68 08 0B 72 54 02 99 04 C5 14 00 06 0C 27 00 00 04 78 2E 25 4C 00 04 6D 0A 0C CD"
        " 13 04 13 4C 01 00 00 44 13 4B 01 00 00 84 01 13 4C 01 00 00 42 6C BF 1C 02 6C DF 1C 04"
        " 3B 00 00 00 00 14 3B 16 08 00 00 02 23 A7 04 01 FD 17 00 04 90 28 08 00 00 00 3F 16",
        {
            "Id": "4990254",
            "Manufacturer": "EFE",
            "Version": "0",
            "Medium": "Warm water (30-90°C)",
            "AccessNumber": "12",
            "Status": "27",
            "Signature": "0000",
        },
        [
            (INST, 0, "Fabrication No", "4990254.000000", Quantity.FABRICATION_NO, ()),
            (INST, 0, "Time point (date & time)", "2014-03-13T12:10:00Z", Quantity.DATETIME, ()),
            (INST, 0, "Volume", "0.332000", Quantity.VOLUME, ()),
            (INST, 1, "Volume", "0.331000", Quantity.VOLUME, ()),
            (INST, 2, "Volume", "0.332000", Quantity.VOLUME, ()),  # DIF 84 + DIFE 01
            (INST, 1, "Time point (date)", "2013-12-31", Quantity.DATE, ()),
            (INST, 0, "Time point (date)", "2014-12-31", Quantity.DATE, ()),
            (INST, 0, "Volume flow", "0.000000", Quantity.VOLUME_FLOW, ()),
            (MAX, 0, "Volume flow", "2.070000", Quantity.VOLUME_FLOW, ()),
            (INST, 0, "On time", "102902400.000000", Quantity.ON_TIME, ()),
            (INST, 0, "Error flags", "0.000000", Quantity.ERROR_FLAGS, ()),
            # VIF 90 + VIFE 28 (devices.json: "meaning uncertain"): kept as an extension.
            (INST, 0, "Volume", "0.000008", Quantity.VOLUME, (0x28,)),
        ],
        tariff_subunit={4: (0, 0)},
    ),
]

# libmbus' medium names -> the header's medium code (EN 13757-3 table 3).
MEDIUM_CODES = {"Water": 0x07, "Cold water": 0x16, "Warm water (30-90°C)": 0x06}
FUNCTIONS = {INST: Function.INSTANTANEOUS, MAX: Function.MAXIMUM}


def documented(text: str) -> Decimal | dt.datetime | dt.date | str | None:
    """A libmbus value string as the value our decoder gives."""
    if text == "2000-00-00":
        return None  # libmbus' rendering of the invalid date 00 00
    if m := re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z", text):
        return dt.datetime(*(int(g) for g in m.groups()))
    if m := re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", text):
        return dt.date(*(int(g) for g in m.groups()))
    if re.fullmatch(r"-?\d+\.\d+", text):
        return Decimal(text)
    return text


def wired(hex_text: str) -> Telegram:
    frame = parse_frame(bytes.fromhex(hex_text))
    assert frame.kind is FrameKind.LONG and is_rsp_ud(frame) and frame.ci is not None
    return decode_user_data(frame.ci, frame.data)


@pytest.mark.parametrize("vector", LIBMBUS_VECTORS, ids=lambda v: v.name)
def test_libmbus_telegram_decodes_to_its_documented_values(vector: LibmbusVector) -> None:
    telegram = wired(vector.hex)  # source: vector.source
    header = telegram.header
    slave = vector.slave
    assert header.ident is not None and int(header.ident) == int(slave["Id"])
    assert header.manufacturer == slave["Manufacturer"]
    assert header.version == int(slave["Version"])
    assert header.medium == MEDIUM_CODES[slave["Medium"]]
    assert header.access_number == int(slave["AccessNumber"])
    assert header.status == int(slave["Status"], 16)  # libmbus prints the status in hex
    assert header.signature == int(slave["Signature"], 16)
    assert telegram.error is None and not telegram.more
    assert telegram.manufacturer_data.hex(" ").upper() == vector.manufacturer_data
    assert len(telegram.records) == len(vector.records)
    for k, (rec, row) in enumerate(zip(telegram.records, vector.records, strict=True)):
        function, storage, label, text, quantity, extensions = row
        assert rec.function is FUNCTIONS[function], (k, label)
        assert rec.storage == storage, (k, label)
        assert (rec.tariff, rec.subunit) == vector.tariff_subunit.get(k, (0, 0)), (k, label)
        assert rec.quantity is quantity, (k, label)
        assert rec.extensions == extensions, (k, label)
        want = documented(text)
        if want is None:
            assert rec.value is None and rec.error is not None, (k, label)
        elif label.startswith(("cust.", "bat.")):
            # Plain-text VIF: the unit's name is the text; the value is text or a number.
            assert rec.description == f"plain text {label!r}"
            assert rec.value == (want if isinstance(want, str) else Decimal(text)), k
        else:
            assert rec.value == want, (k, label, rec.value, want)


@pytest.mark.parametrize("vector", LIBMBUS_VECTORS, ids=lambda v: v.name)
def test_every_single_byte_corruption_of_a_real_frame_is_a_crc_error(
    vector: LibmbusVector,
) -> None:
    # source: vector.source. Flipping any bit pattern of any one byte changes either a
    # start/stop byte, an L field or the checksum's sum, so the frame must be refused.
    raw = bytes.fromhex(vector.hex)
    for i in range(len(raw)):
        for delta in (0x01, 0x80, 0xFF):
            broken = bytearray(raw)
            broken[i] ^= delta
            with pytest.raises(CrcError):
                parse_frame(bytes(broken))
    for cut in range(len(raw)):
        with pytest.raises(CrcError):
            parse_frame(raw[:cut])
    with pytest.raises(CrcError):
        parse_frame(raw + b"\x16")


# --- wmbusmeters vectors: expectations as points -----------------------------------------

# wmbusmeters' JSON fields -> the point that selects the same record.
FIELD_POINTS: dict[str, dict[str, Any]] = {
    "total_m3": {"quantity": "volume"},
    "target_m3": {"quantity": "volume", "storage": 1},
    "due_m3": {"quantity": "volume", "storage": 1},
    "volume_flow_m3h": {"quantity": "volume_flow"},
    "max_flow_m3h": {"quantity": "volume_flow"},
    "meter_datetime": {"quantity": "datetime"},
    "device_datetime": {"quantity": "datetime"},
    "target_date": {"quantity": "date", "storage": 1},
    "due_date": {"quantity": "date", "storage": 1},
    "error_date": {"quantity": "date", "function": "error"},
    "operating_time_h": {"quantity": "operating_time", "unit": "h"},
    "fabrication_no": {"quantity": "fabrication_no"},
}


def expected_point_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name.endswith("datetime"):
        fmt = "%Y-%m-%d %H:%M:%S" if value.count(":") == 2 else "%Y-%m-%d %H:%M"
        return calendar.timegm(dt.datetime.strptime(value, fmt).timetuple())
    if name.endswith("date"):
        return calendar.timegm(dt.datetime.strptime(value, "%Y-%m-%d").timetuple())
    if name == "fabrication_no":
        return int(value)
    return value


@dataclass(frozen=True)
class WmbusVector:
    """A wmbusmeters driver test: hex and the JSON it must print (the fields we map)."""

    id: str
    source: str
    hex: str
    wired: bool
    expected: dict[str, Any]
    header: dict[str, int] = field(default_factory=dict)


WMBUS_VECTORS = [
    WmbusVector(
        "aptmbusna:00683775",
        WMBUSMETERS + "drivers/src/aptmbusna.xmq (test block; args 'W aptmbusna 00683775 NOKEY')",
        "685656680800727537680001061507CCE800000C7875376800046D1DB458340413F73E0000023B0D0044138501"
        "0000426C41340227090203FD171C030004FF0A0404000002FF0B000003FF0C1300B20F00042C1B1B0001020000"
        "3716",
        True,
        {
            "fabrication_no": "00683775",
            "meter_datetime": "2026-04-24 20:29",
            "operating_time_h": 12504,
            "target_date": "2026-04-01",
            "target_m3": 0.389,
            "total_m3": 16.119,
            "volume_flow_m3h": 0.013,
        },
        # frame description in devices.json: manufacturer APA, medium water, status 0xE8
        {"medium": 0x07, "status": 0xE8},
    ),
    WmbusVector(
        "aptmbusna:00345157",
        WMBUSMETERS + "drivers/src/aptmbusna.xmq (second test)",
        "68565668086C7257513400010615072EF800000C7857513400046D0BAB5934041307590000023B000044"
        "13A2560000426C41340227CB0803FD175E0B0004FF0A0404010002FF0B000003FF0C9700B90F0004351BFF"
        "0001020100A716",
        True,
        {
            "fabrication_no": "00345157",
            "meter_datetime": "2026-04-25 11:11",
            "operating_time_h": 54024,
            "target_date": "2026-04-01",
            "target_m3": 22.178,
            "total_m3": 22.791,
            "volume_flow_m3h": 0,
        },
        {"medium": 0x07},
    ),
    WmbusVector(
        "iperl:33225544",
        WMBUSMETERS + "drivers/src/iperl.xmq ('Test iPerl T1 telegram not encrypted, which has "
        "no 2f2f markers.')",
        "1844AE4C4455223368077A55000000041389E20100023B0000",
        False,
        {"total_m3": 123.529, "max_flow_m3h": 0},
    ),
    WmbusVector(
        "iperl:12345699",
        WMBUSMETERS + "drivers/src/iperl.xmq ('Test iPerl T1 telegram, that after decryption, "
        "has 2f2f markers.')",
        "1E44AE4C9956341268077A360010002F2F0413181E0000023B00002F2F2F2F",
        False,
        {"total_m3": 7.704, "max_flow_m3h": 0},
    ),
    WmbusVector(
        "itron:20310959",
        WMBUSMETERS + "drivers/src/itron.xmq (args 'AnyWater itron 20310959 NOKEY')",
        "384497265909312000077a930000a0041360B50100066d101295f427004413ac570100426cdf2c047f0000"
        "060c027f6c2a0e79000000000000",
        False,
        {
            "meter_datetime": "2023-07-20 21:18:16",  # date type I (with seconds)
            "target_date": "2022-12-31",
            "target_m3": 87.98,
            "total_m3": 111.968,
        },
    ),
    WmbusVector(
        "lse_07_17:09993623",
        WMBUSMETERS + "drivers/src/lse_07_17.xmq (args 'Water2 lse_07_17 09993623 NOKEY')",
        "2d44653223369909d8077a80000000046d130aed2B0c13233332004c1351762700426cdf2c326cffff02BB56"
        "0000",
        False,
        {
            "device_datetime": "2023-11-13 10:19",
            "due_date": "2022-12-31",
            "due_m3": 277.651,
            "error_date": None,  # 32 6C FF FF: an invalid date in the error-state record
            "total_m3": 323.323,
        },
    ),
]


def wireless(hex_text: str) -> Telegram:
    """The application layer of a wM-Bus frame as wmbusmeters prints it (L C M A CI ...,
    link-layer CRCs removed): CI at byte 10, the short header and records after it."""
    raw = bytes.fromhex(hex_text)
    assert raw[0] == len(raw) - 1, "L field of the wireless frame"
    return decode_user_data(raw[10], raw[11:])


@pytest.mark.parametrize("vector", WMBUS_VECTORS, ids=lambda v: v.id)
def test_wmbusmeters_telegram_gives_its_documented_fields(vector: WmbusVector) -> None:
    telegram = wired(vector.hex) if vector.wired else wireless(vector.hex)  # vector.source
    assert telegram.error is None
    for key, value in vector.header.items():
        assert getattr(telegram.header, key) == value, key
    if vector.wired:
        assert telegram.header.ident == vector.id.split(":")[1]
    points = [MbusPoint.model_validate({"name": n, **FIELD_POINTS[n]}) for n in vector.expected]
    values = point_values(points, [telegram])
    for name, want in vector.expected.items():
        got = values[name]
        expected = expected_point_value(name, want)
        if expected is None:
            assert got.quality == "bad" and got.error == "decode", name
        else:
            assert got.quality == "good", (name, got)
            assert got.value == pytest.approx(expected, abs=1e-9), (name, got.value, expected)


def test_itron_date_type_i_carries_seconds_and_the_summer_time_flag() -> None:
    # wmbusmeters:itron:20310959 (source above): 06 6D 10 12 95 F4 27 00.
    rec = next(r for r in wireless(WMBUS_VECTORS[4].hex).records if r.quantity is Quantity.DATETIME)
    assert rec.value == dt.datetime(2023, 7, 20, 21, 18, 16)
    assert rec.summer_time  # bit 7 of the hour byte (0x95), in July


def test_manufacturer_specific_records_are_kept_raw() -> None:
    # wmbusmeters:itron:20310959 prints them as "WOOTA_C060000" and "WOOTB_2A6C".
    raw = [
        r.data[::-1].hex().upper().lstrip("0")
        for r in wireless(WMBUS_VECTORS[4].hex).records
        if r.description == "manufacturer specific"
    ]
    assert raw == ["C060000", "2A6C"]


def test_lse_flow_record_with_an_unknown_vife_is_not_a_plain_flow() -> None:
    # wmbusmeters:lse_07_17:09993623: 02 BB 56 00 00, VIF 3B (flow) + VIFE 56.
    telegram = wireless(WMBUS_VECTORS[5].hex)
    flows = [r for r in telegram.records if r.quantity is Quantity.VOLUME_FLOW]
    assert [r.extensions for r in flows] == [(0x56,)]
    point = MbusPoint(name="flow", quantity=Quantity.VOLUME_FLOW)
    assert point_values([point], [telegram])["flow"].error == "decode"
    named = MbusPoint(name="flow", quantity=Quantity.VOLUME_FLOW, vife=(0x56,))
    assert point_values([named], [telegram])["flow"].value == 0.0


def test_plain_volume_point_skips_the_manufacturer_extended_record() -> None:
    # libmbus itron_cyble_m-bus_v1.4_water: volume 123.49 (VIF 14), then VIF 94 + VIFE 7F.
    telegram = wired(LIBMBUS_VECTORS[1].hex)
    points = [
        MbusPoint(name="v", quantity=Quantity.VOLUME),
        MbusPoint(name="v_l", quantity=Quantity.VOLUME, unit="L"),
        MbusPoint(name="v_mfr", quantity=Quantity.VOLUME, vife=(0x7F,)),
        MbusPoint(name="v_due", quantity=Quantity.VOLUME, storage=1),
        MbusPoint(name="fab", quantity=Quantity.FABRICATION_NO),
        MbusPoint(name="status", quantity=Quantity.STATUS),
        MbusPoint(name="acc", quantity=Quantity.ACCESS_NUMBER),
        MbusPoint(name="t", quantity=Quantity.DATETIME),
    ]
    values = {k: v.value for k, v in point_values(points, [telegram]).items()}
    assert values == {
        "v": 123.49,
        "v_l": 123490.0,
        "v_mfr": 0.2,
        "v_due": 0.0,
        "fab": 12000071,
        "status": 0x30,
        "acc": 10,
        "t": calendar.timegm((2012, 1, 24, 13, 43, 0)),
    }


def test_dates_follow_the_configured_time_zone() -> None:
    # libmbus els_falcon: 2007-02-06 13:58 local time of the meter.
    telegram = wired(LIBMBUS_VECTORS[3].hex)
    point = MbusPoint(name="t", quantity=Quantity.DATETIME)
    utc = point_values([point], [telegram])["t"].value
    berlin = point_values([point], [telegram], zone=time_zone("Europe/Berlin"))["t"].value
    assert utc == calendar.timegm((2007, 2, 6, 13, 58, 0))
    assert isinstance(utc, int) and isinstance(berlin, int)
    assert utc - berlin == 3600  # CET is UTC+1 in February


def test_records_of_a_failed_telegram_carry_its_reason() -> None:
    telegram = wired(LIBMBUS_VECTORS[2].hex)
    points = [
        MbusPoint(name="v", quantity=Quantity.VOLUME),
        MbusPoint(name="flow", quantity=Quantity.VOLUME_FLOW),
    ]
    values = point_values(points, [telegram], failure=CrcError("telegram 2"))
    assert values["v"].value == 269.0
    assert values["flow"].error == "crc"


def test_vectors_cover_every_telegram_of_the_reference_data() -> None:
    """Every M-Bus telegram in shared/reference/devices.json has a vector here."""
    path = Path(__file__).resolve().parents[3] / "shared" / "reference" / "devices.json"
    if not path.exists():
        unavailable(f"{path} is not beside the repository")
    reference = json.loads(path.read_text(encoding="utf-8"))["mbus_telegrams"]
    ours = {"".join(v.hex.split()).upper() for v in LIBMBUS_VECTORS}
    ours |= {v.hex.upper() for v in WMBUS_VECTORS}
    for entry in reference:
        assert "".join(entry["hex"].split()).upper() in ours, entry["id"]
    assert len(reference) == len(ours)
