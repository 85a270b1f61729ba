"""The M-Bus application layer (EN 13757-3): the telegram header and the variable data
records of a RSP_UD. No I/O.

A data record is a DIB (DIF + up to 10 DIFEs: data field coding, function, storage
number, tariff, subunit), a VIB (VIF + up to 10 VIFEs: quantity, unit and decimal
exponent) and the data. :func:`parse_records` turns the user data after the header into
:class:`Record` objects whose ``value`` is already scaled to the base unit of its
:class:`Quantity` (``m3``, ``m3/h``, ``Cel``, ...), as an exact :class:`~decimal.Decimal`:
BCD and integer readings stay exact (``16119 * 10^-3`` is ``16.119``, not
``16.118999...``).

What is decoded:

* data field types: no data, 8/16/24/32/48/64-bit signed integers (type B), 32-bit real,
  2/4/6/8/12-digit BCD (a leading ``F`` nibble means negative, as libmbus reads it),
  variable length (LVAR: text, BCD, binary) and the special functions (manufacturer data
  ``0F``, ``1F`` = more records follow in the next telegram, idle filler ``2F``);
* date types G (date), F (date and time to the minute), I (date and time to the second);
  invalid dates (the IV bit, day 0, month 0 or 15, ``FF FF``) give ``value = None``;
* VIFs of the primary table with their exponents, the ``FD`` and ``FB`` extension tables
  (error flags, versions, large energy and volume units), plain-text VIFs and
  manufacturer-specific VIFs (kept raw);
* combinable VIFEs: the multiplicative corrections (``70``-``77``: 10^(n-6), ``7D``: 10^3)
  are applied to the value; every other VIFE (limit values, "per" units, forward or
  backward flow, manufacturer-specific ``7F``...) changes what the value means, so it is
  kept in :attr:`Record.extensions` and a point selects such a record only by naming it.

Errors: a record structure that cannot be followed (truncated, too many extension bytes,
a reserved DIF or LVAR) stops the parse; a value that cannot be read (a non-BCD digit, an
invalid date, NaN) makes only that record's ``value`` ``None`` with a reason in
``error``. Only :class:`~swm_edge.driver.DecodeError` is ever raised.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from swm_edge_drivers.mbus.frames import manufacturer_letters

from swm_edge.driver import DecodeError

__all__ = [
    "BASE_UNITS",
    "MEDIUM_NAMES",
    "UNIT_FACTORS",
    "Function",
    "Header",
    "Quantity",
    "Record",
    "Records",
    "Telegram",
    "convert",
    "decode_user_data",
    "parse_header",
    "parse_records",
]

#: EN 13757-3 allows at most 10 DIFEs and 10 VIFEs per record.
MAX_EXTENSIONS = 10
# CI fields of a variable data response (slave -> master), with the header size after CI.
CI_LONG_HEADER = 0x72  # 12-byte header: ident, manufacturer, version, medium, acc, status, sig
CI_SHORT_HEADER = 0x7A  # 4-byte header: acc, status, signature (configuration word)
CI_NO_HEADER = 0x78
_CI_UNSUPPORTED = {
    0x76: "variable data with the bytes most significant first (mode 2)",
    0x73: "the obsolete fixed data structure",
    0x77: "the obsolete fixed data structure (mode 2)",
}


class Function(StrEnum):
    """The function field of a DIF (bits 4-5)."""

    INSTANTANEOUS = "instantaneous"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    ERROR = "error"  # value during error state


_FUNCTIONS = (Function.INSTANTANEOUS, Function.MAXIMUM, Function.MINIMUM, Function.ERROR)


class Quantity(StrEnum):
    """What a point can select. Records carry the first ones; ``status`` and
    ``access_number`` come from the telegram header."""

    VOLUME = "volume"
    VOLUME_FLOW = "volume_flow"
    FLOW_TEMPERATURE = "flow_temperature"
    RETURN_TEMPERATURE = "return_temperature"
    EXTERNAL_TEMPERATURE = "external_temperature"
    PRESSURE = "pressure"
    ENERGY = "energy"
    POWER = "power"
    ON_TIME = "on_time"
    OPERATING_TIME = "operating_time"
    DATETIME = "datetime"
    DATE = "date"
    ERROR_FLAGS = "error_flags"
    FABRICATION_NO = "fabrication_no"
    HARDWARE_VERSION = "hardware_version"
    FIRMWARE_VERSION = "firmware_version"
    SOFTWARE_VERSION = "software_version"
    STATUS = "status"
    ACCESS_NUMBER = "access_number"

    @property
    def in_header(self) -> bool:
        """Whether the quantity comes from the telegram header rather than a record."""
        return self in (Quantity.STATUS, Quantity.ACCESS_NUMBER)


#: The unit a record's value has, per quantity (date/time values become Unix seconds).
BASE_UNITS: dict[Quantity, str] = {
    Quantity.VOLUME: "m3",
    Quantity.VOLUME_FLOW: "m3/h",
    Quantity.FLOW_TEMPERATURE: "Cel",
    Quantity.RETURN_TEMPERATURE: "Cel",
    Quantity.EXTERNAL_TEMPERATURE: "Cel",
    Quantity.PRESSURE: "bar",
    Quantity.ENERGY: "kWh",
    Quantity.POWER: "W",
    Quantity.ON_TIME: "s",
    Quantity.OPERATING_TIME: "s",
    Quantity.DATETIME: "s",
    Quantity.DATE: "s",
    Quantity.ERROR_FLAGS: "1",
    Quantity.FABRICATION_NO: "1",
    Quantity.HARDWARE_VERSION: "1",
    Quantity.FIRMWARE_VERSION: "1",
    Quantity.SOFTWARE_VERSION: "1",
    Quantity.STATUS: "1",
    Quantity.ACCESS_NUMBER: "1",
}

_D = Decimal
_ONE = Decimal(1)
_DURATION = {"s": _D(1), "ms": _D("0.001"), "min": _D(60), "h": _D(3600), "d": _D(86400)}
#: Per quantity: the canonical units a point may ask for, and how many base units one of
#: them is (value in unit = value in base unit / factor).
UNIT_FACTORS: dict[Quantity, dict[str, Decimal]] = {
    Quantity.VOLUME: {"m3": _D(1), "L": _D("0.001"), "mL": _D("0.000001")},
    Quantity.VOLUME_FLOW: {
        "m3/h": _D(1),
        "m3/min": _D(60),
        "m3/s": _D(3600),
        "m3/d": _D(1) / _D(24),
        "L/h": _D("0.001"),
        "L/min": _D("0.06"),
        "L/s": _D("3.6"),
        "L/d": _D("0.001") / _D(24),
    },
    Quantity.PRESSURE: {
        "bar": _D(1),
        "mbar": _D("0.001"),
        "Pa": _D("0.00001"),
        "kPa": _D("0.01"),
        "MPa": _D(10),
    },
    Quantity.POWER: {"W": _D(1), "kW": _D(1000)},
    Quantity.ON_TIME: _DURATION,
    Quantity.OPERATING_TIME: _DURATION,
}
for _q, _unit in BASE_UNITS.items():
    UNIT_FACTORS.setdefault(_q, {_unit: _D(1)})

#: Medium codes of the header (EN 13757-3 table 3), for logs and tests.
MEDIUM_NAMES: dict[int, str] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat (outlet)",
    0x05: "steam",
    0x06: "warm water (30-90 Cel)",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling load meter (outlet)",
    0x0B: "cooling load meter (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat / cooling load meter",
    0x0E: "bus / system component",
    0x0F: "unknown",
    0x15: "hot water (>= 90 Cel)",
    0x16: "cold water",
    0x17: "dual register (hot/cold) water",
    0x18: "pressure",
    0x19: "A/D converter",
}


def convert(value: Decimal, quantity: Quantity, unit: str) -> Decimal:
    """``value`` (in the quantity's base unit) in ``unit``.

    Raises:
        KeyError: ``unit`` is not one of ``UNIT_FACTORS[quantity]`` (the config model
            rejects such points before a driver runs).
    """
    factor = UNIT_FACTORS[quantity][unit]
    return value if factor == 1 else value / factor


Value = Decimal | str | bytes | dt.datetime | dt.date | None


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded data record.

    ``value`` is a :class:`~decimal.Decimal` in ``unit`` (the base unit of ``quantity``)
    for numbers, a naive :class:`~datetime.datetime` / :class:`~datetime.date` (the meter's
    local time: M-Bus carries no time zone) for date records, text for text data, raw
    bytes for manufacturer-specific data, or ``None`` with the reason in ``error``.
    """

    dif: int
    dife: tuple[int, ...]
    vif: int
    vife: tuple[int, ...]
    function: Function
    storage: int
    tariff: int
    subunit: int
    quantity: Quantity | None
    description: str
    unit: str | None
    value: Value
    #: VIFEs (bit 7 cleared) that qualify the value and were not applied to it.
    extensions: tuple[int, ...] = ()
    data: bytes = b""
    #: The summer-time flag of a type F or I date and time.
    summer_time: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Records:
    """The records of one telegram's user data."""

    records: tuple[Record, ...]
    #: A DIF 0x1F was found: the slave has more records in its next telegram.
    more: bool
    #: Bytes after a DIF 0x0F or 0x1F (manufacturer specific), without the DIF.
    manufacturer_data: bytes = b""
    #: Why parsing stopped early (``None``: every byte was read); ``records`` are those
    #: before the problem.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """The fields before the records; absent ones are ``None`` (short or no header)."""

    ident: str | None
    manufacturer: str | None
    version: int | None
    medium: int | None
    access_number: int | None
    status: int | None
    signature: int | None

    @property
    def medium_name(self) -> str | None:
        """The medium in words, e.g. ``"cold water"``."""
        if self.medium is None:
            return None
        return MEDIUM_NAMES.get(self.medium, f"reserved (0x{self.medium:02X})")


@dataclass(frozen=True, slots=True)
class Telegram:
    """A decoded RSP_UD: header and records."""

    ci: int
    header: Header
    records: tuple[Record, ...]
    more: bool
    manufacturer_data: bytes = b""
    #: Why the records stopped early, if they did (see :attr:`Records.error`).
    error: str | None = None


# --- header -----------------------------------------------------------------------------


def _bcd_ident(data: bytes) -> str:
    # Identification numbers are BCD, least significant byte first; a non-BCD digit
    # (some meters, and wildcard selections) is kept as its hex digit.
    return data[::-1].hex().upper()


def parse_header(ci: int, data: bytes) -> tuple[Header, bytes]:
    """The header of a variable data response with this CI, and the bytes after it.

    Raises:
        DecodeError: the CI is not a variable data response, the header is cut short, or
            the telegram is encrypted (configuration word with a mode other than 0).
    """
    if ci in _CI_UNSUPPORTED:
        raise DecodeError(f"CI 0x{ci:02X} is {_CI_UNSUPPORTED[ci]}, which is not supported")
    if ci == CI_LONG_HEADER:
        if len(data) < 12:
            raise DecodeError(f"long header needs 12 bytes, got {len(data)}")
        signature = int.from_bytes(data[10:12], "little")
        header = Header(
            ident=_bcd_ident(data[0:4]),
            manufacturer=manufacturer_letters(int.from_bytes(data[4:6], "little")),
            version=data[6],
            medium=data[7],
            access_number=data[8],
            status=data[9],
            signature=signature,
        )
        rest = data[12:]
    elif ci == CI_SHORT_HEADER:
        if len(data) < 4:
            raise DecodeError(f"short header needs 4 bytes, got {len(data)}")
        signature = int.from_bytes(data[2:4], "little")
        header = Header(None, None, None, None, data[0], data[1], signature)
        rest = data[4:]
    elif ci == CI_NO_HEADER:
        header = Header(None, None, None, None, None, None, None)
        rest = data
    else:
        raise DecodeError(f"CI 0x{ci:02X} is not a variable data response")
    if header.signature is not None:
        # The signature field is the OMS configuration word: bits 8-12 are the security
        # mode. Encrypted records would decode to nonsense, so refuse them.
        mode = (header.signature >> 8) & 0x1F
        if mode:
            raise DecodeError(f"the records are encrypted (security mode {mode})")
    return header, rest


# --- value information ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Vif:
    """What a VIF (and its table byte) means."""

    quantity: Quantity | None
    description: str
    exponent: int = 0
    factor: Decimal = _ONE
    signed: bool = True
    kind: str = "number"  # "number", "date", "datetime", "raw"


_HOURS = (_D(1), _D(60), _D(3600), _D(86400))
_KWH_PER_J = _D(1) / _D(3_600_000)
_W_PER_J_H = _D(1) / _D(3600)


def _primary_vif(code: int) -> _Vif:
    """EN 13757-3 table 10 (primary VIFs), ``code`` without the extension bit."""
    n3, n2 = code & 0x07, code & 0x03
    if code <= 0x07:
        return _Vif(Quantity.ENERGY, "energy", n3 - 6)  # 10^(n-3) Wh, in kWh
    if code <= 0x0F:
        return _Vif(Quantity.ENERGY, "energy", n3, _KWH_PER_J)  # 10^n J
    if code <= 0x17:
        return _Vif(Quantity.VOLUME, "volume", n3 - 6)
    if code <= 0x1F:
        return _Vif(None, "mass (kg)", n3 - 3)
    if code <= 0x23:
        return _Vif(Quantity.ON_TIME, "on time", 0, _HOURS[n2])
    if code <= 0x27:
        return _Vif(Quantity.OPERATING_TIME, "operating time", 0, _HOURS[n2])
    if code <= 0x2F:
        return _Vif(Quantity.POWER, "power", n3 - 3)
    if code <= 0x37:
        return _Vif(Quantity.POWER, "power", n3, _W_PER_J_H)  # 10^n J/h
    if code <= 0x3F:
        return _Vif(Quantity.VOLUME_FLOW, "volume flow", n3 - 6)
    if code <= 0x47:
        return _Vif(Quantity.VOLUME_FLOW, "volume flow", n3 - 7, _D(60))  # m3/min
    if code <= 0x4F:
        return _Vif(Quantity.VOLUME_FLOW, "volume flow", n3 - 9, _D(3600))  # m3/s
    if code <= 0x57:
        return _Vif(None, "mass flow (kg/h)", n3 - 3)
    if code <= 0x5B:
        return _Vif(Quantity.FLOW_TEMPERATURE, "flow temperature", n2 - 3)
    if code <= 0x5F:
        return _Vif(Quantity.RETURN_TEMPERATURE, "return temperature", n2 - 3)
    if code <= 0x63:
        return _Vif(None, "temperature difference (K)", n2 - 3)
    if code <= 0x67:
        return _Vif(Quantity.EXTERNAL_TEMPERATURE, "external temperature", n2 - 3)
    if code <= 0x6B:
        return _Vif(Quantity.PRESSURE, "pressure", n2 - 3)
    if code == 0x6C:
        return _Vif(Quantity.DATE, "date", kind="date")
    if code == 0x6D:
        return _Vif(Quantity.DATETIME, "date and time", kind="datetime")
    if code == 0x6E:
        return _Vif(None, "units for heat cost allocator")
    if 0x70 <= code <= 0x73:
        return _Vif(None, "averaging duration", 0, _HOURS[n2])
    if 0x74 <= code <= 0x77:
        return _Vif(None, "actuality duration", 0, _HOURS[n2])
    if code == 0x78:
        return _Vif(Quantity.FABRICATION_NO, "fabrication number", signed=False)
    if code == 0x79:
        return _Vif(None, "enhanced identification", signed=False)
    if code == 0x7A:
        return _Vif(None, "bus address", signed=False)
    if code == 0x7E:
        return _Vif(None, "any VIF (readout selection)", kind="raw")
    if code == 0x7F:
        return _Vif(None, "manufacturer specific", signed=False, kind="raw")
    return _Vif(None, f"reserved VIF 0x{code:02X}", kind="raw")


# Extension table FD (EN 13757-3 table 12), the entries with a name we report.
_FD_NAMES: dict[int, str] = {
    0x08: "access number",
    0x09: "medium",
    0x0A: "manufacturer",
    0x0B: "parameter set identification",
    0x0C: "model / version",
    0x10: "customer location",
    0x11: "customer",
    0x16: "password",
    0x18: "error mask",
    0x1A: "digital output",
    0x1B: "digital input",
    0x1C: "baud rate",
    0x1D: "response delay time",
    0x1E: "retry",
    0x60: "reset counter",
    0x61: "cumulation counter",
}


def _fd_vif(code: int) -> _Vif:
    if code == 0x0D:
        return _Vif(Quantity.HARDWARE_VERSION, "hardware version", signed=False)
    if code == 0x0E:
        return _Vif(Quantity.FIRMWARE_VERSION, "firmware version", signed=False)
    if code == 0x0F:
        return _Vif(Quantity.SOFTWARE_VERSION, "software version", signed=False)
    if code == 0x17:
        return _Vif(Quantity.ERROR_FLAGS, "error flags", signed=False)
    if code <= 0x03:
        return _Vif(None, "credit (currency units)", (code & 0x03) - 3)
    if code <= 0x07:
        return _Vif(None, "debit (currency units)", (code & 0x03) - 3)
    if 0x40 <= code <= 0x4F:
        return _Vif(None, "voltage (V)", (code & 0x0F) - 9)
    if 0x50 <= code <= 0x5F:
        return _Vif(None, "current (A)", (code & 0x0F) - 12)
    name = _FD_NAMES.get(code)
    if name is not None:
        return _Vif(None, name, signed=False)
    return _Vif(None, f"extension FD 0x{code:02X}", signed=False, kind="raw")


def _fb_vif(code: int) -> _Vif:
    """Extension table FB (EN 13757-3 table 14): large and non-metric units."""
    n = code & 0x01
    if code <= 0x01:
        return _Vif(Quantity.ENERGY, "energy", n + 2)  # 10^(n-1) MWh
    if 0x08 <= code <= 0x09:
        return _Vif(Quantity.ENERGY, "energy", n - 1, _D(10**9) * _KWH_PER_J)  # 10^(n-1) GJ
    if 0x10 <= code <= 0x11:
        return _Vif(Quantity.VOLUME, "volume", n + 2)
    if 0x18 <= code <= 0x19:
        return _Vif(None, "mass (t)", n + 2)
    if 0x28 <= code <= 0x29:
        return _Vif(Quantity.POWER, "power", n + 5)  # 10^(n-1) MW
    if 0x30 <= code <= 0x31:
        return _Vif(Quantity.POWER, "power", n - 1, _D(10**9) * _W_PER_J_H)  # 10^(n-1) GJ/h
    return _Vif(None, f"extension FB 0x{code:02X}", kind="raw")


# --- data fields ------------------------------------------------------------------------

# DIF data field (low nibble) -> data length in bytes; 0x0D (variable) and 0x0F (special)
# are handled apart.
_DATA_LENGTHS = {
    0x0: 0,
    0x1: 1,
    0x2: 2,
    0x3: 3,
    0x4: 4,
    0x5: 4,
    0x6: 6,
    0x7: 8,
    0x8: 0,
    0x9: 1,
    0xA: 2,
    0xB: 3,
    0xC: 4,
    0xE: 6,
}
_BCD_TYPES = frozenset({0x9, 0xA, 0xB, 0xC, 0xE})
_INT_TYPES = frozenset({0x1, 0x2, 0x3, 0x4, 0x6, 0x7})


class _BadValue(Exception):
    """A value that cannot be read; the record stays, with ``value = None``."""


def _bcd(data: bytes) -> int:
    digits = data[::-1].hex().upper()
    negative = digits.startswith("F")
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        raise _BadValue(f"BCD {data[::-1].hex().upper()} has a non-decimal digit")
    value = int(digits) if digits else 0
    return -value if negative else value


@dataclass(frozen=True, slots=True)
class _Field:
    """A data field as read: the number or text it holds."""

    number: int | float | None = None
    text: str | None = None
    raw: bytes = b""
    #: Why ``number`` could not be read (a non-BCD digit).
    error: str | None = None


def _read_lvar(lvar: int, data: bytes) -> _Field:
    # EN 13757-3 table 5: 00-BF text, C0-C9 positive BCD, D0-D9 negative BCD,
    # E0-EF binary of (LVAR-E0) bytes, F0-F4 binary of 4*(LVAR-EC) bytes, F5/F6 48/64 bytes.
    if lvar <= 0xBF:
        # Text is sent last character first.
        return _Field(text=data[::-1].decode("latin-1"), raw=data)
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        try:
            value = _bcd(data)
        except _BadValue as exc:
            return _Field(raw=data, error=str(exc))
        return _Field(number=-value if lvar >= 0xD0 else value, raw=data)
    return _Field(number=int.from_bytes(data, "little"), raw=data)


def _lvar_length(lvar: int) -> int:
    if lvar <= 0xBF:
        return lvar
    if 0xC0 <= lvar <= 0xC9:
        return lvar - 0xC0
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    raise DecodeError(f"reserved LVAR 0x{lvar:02X}")


def _read_fixed(dtype: int, data: bytes, signed: bool) -> _Field:
    if dtype in _INT_TYPES:
        return _Field(number=int.from_bytes(data, "little", signed=signed), raw=data)
    if dtype == 0x5:
        return _Field(number=struct.unpack("<f", data)[0], raw=data)
    if dtype in _BCD_TYPES:
        try:
            return _Field(number=_bcd(data), raw=data)
        except _BadValue as exc:
            return _Field(raw=data, error=str(exc))
    return _Field(raw=data)  # no data / selection for readout


# --- dates ------------------------------------------------------------------------------


def _year(y: int, hundred: int = 0) -> int:
    # Two-digit years: 81..99 are 19xx and 00..80 are 20xx (libmbus' reading); the
    # "hundred year" bits of type F, when set, count centuries from 1900.
    if hundred:
        return 1900 + 100 * hundred + y
    return 1900 + y if y >= 81 else 2000 + y


def _type_g(data: bytes) -> dt.date:
    b0, b1 = data[0], data[1]
    day, month = b0 & 0x1F, b1 & 0x0F
    y = ((b0 & 0xE0) >> 5) | ((b1 & 0xF0) >> 1)
    try:
        return dt.date(_year(y), month, day)
    except ValueError:
        raise _BadValue(f"invalid date (type G {data.hex().upper()})") from None


def _type_f(data: bytes) -> tuple[dt.datetime, bool]:
    b0, b1, b2, b3 = data[0], data[1], data[2], data[3]
    if b0 & 0x80:
        raise _BadValue(f"date and time flagged invalid (type F {data.hex().upper()})")
    minute, hour = b0 & 0x3F, b1 & 0x1F
    day, month = b2 & 0x1F, b3 & 0x0F
    y = ((b2 & 0xE0) >> 5) | ((b3 & 0xF0) >> 1)
    try:
        return dt.datetime(_year(y, (b1 & 0x60) >> 5), month, day, hour, minute), bool(b1 & 0x80)
    except ValueError:
        raise _BadValue(f"invalid date and time (type F {data.hex().upper()})") from None


def _type_i(data: bytes) -> tuple[dt.datetime, bool]:
    # Type I (EN 13757-3:2013 annex A) is type F one byte later, with the seconds first.
    b0, b1, b2, b3, b4 = data[0], data[1], data[2], data[3], data[4]
    if b1 & 0x80:
        raise _BadValue(f"date and time flagged invalid (type I {data.hex().upper()})")
    second, minute, hour = b0 & 0x3F, b1 & 0x3F, b2 & 0x1F
    day, month = b3 & 0x1F, b4 & 0x0F
    y = ((b3 & 0xE0) >> 5) | ((b4 & 0xF0) >> 1)
    try:
        return dt.datetime(_year(y), month, day, hour, minute, second), bool(b2 & 0x80)
    except ValueError:
        raise _BadValue(f"invalid date and time (type I {data.hex().upper()})") from None


# --- records ----------------------------------------------------------------------------


class _Cursor:
    """Reads ``data`` front to back; running past the end is a :class:`DecodeError`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise DecodeError(f"{what} missing at byte {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(
                f"{what} needs {n} bytes at byte {self.pos}, {len(self.data) - self.pos} left"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def _extensions(cur: _Cursor, first: int, what: str) -> tuple[int, ...]:
    """The extension bytes after ``first`` (a DIF or VIF) while bit 7 is set."""
    out: list[int] = []
    last = first
    while last & 0x80:
        if len(out) == MAX_EXTENSIONS:
            raise DecodeError(f"more than {MAX_EXTENSIONS} {what}s at byte {cur.pos}")
        last = cur.byte(what)
        out.append(last)
    return tuple(out)


def _fold_vifes(vifes: tuple[int, ...], vif: _Vif) -> tuple[int, tuple[int, ...]]:
    """Apply the multiplicative-correction VIFEs to the exponent; return the others."""
    exponent = vif.exponent
    rest: list[int] = []
    manufacturer = False
    for vife in vifes:
        code = vife & 0x7F
        if manufacturer or vif.kind != "number":
            rest.append(code)
        elif 0x70 <= code <= 0x77:
            exponent += (code & 0x07) - 6
        elif code == 0x7D:
            exponent += 3
        else:
            # 0x7F: "next VIFEs and data of this block are manufacturer specific".
            manufacturer = code == 0x7F
            rest.append(code)
    return exponent, tuple(rest)


def _scaled(number: int | float, exponent: int, factor: Decimal) -> Decimal:
    if isinstance(number, float) and not math.isfinite(number):
        raise _BadValue(f"real value {number} is not a number")
    # Decimal(float) is exact, so a real keeps its binary value; integers stay exact.
    value = Decimal(number).scaleb(exponent)
    return value if factor == 1 else value * factor


def _value(vif: _Vif, dtype: int, fld: _Field, exponent: int) -> tuple[Value, bool]:
    """The record's value and its summer-time flag."""
    if vif.kind == "date":
        if dtype != 0x2:
            raise _BadValue(f"a date in data field type 0x{dtype:X} is not type G")
        return _type_g(fld.raw), False
    if vif.kind == "datetime":
        if dtype == 0x4:
            return _type_f(fld.raw)
        if dtype == 0x6:
            return _type_i(fld.raw)
        if dtype == 0x3:
            raise _BadValue("a time of day without a date (type J) is not a point in time")
        raise _BadValue(f"a date and time in data field type 0x{dtype:X} is not type F or I")
    if fld.text is not None:
        return fld.text, False
    if vif.kind == "raw":
        return fld.raw, False
    if fld.error is not None:
        raise _BadValue(fld.error)
    if fld.number is None:
        raise _BadValue("the record carries no data")
    return _scaled(fld.number, exponent, vif.factor), False


def _one_record(cur: _Cursor, dif: int) -> Record:
    dife = _extensions(cur, dif, "DIFE")
    storage = (dif >> 6) & 0x01
    tariff = subunit = 0
    for i, ext in enumerate(dife):
        storage |= (ext & 0x0F) << (1 + 4 * i)
        tariff |= ((ext >> 4) & 0x03) << (2 * i)
        subunit |= ((ext >> 6) & 0x01) << i
    function = _FUNCTIONS[(dif >> 4) & 0x03]

    vif_byte = cur.byte("VIF")
    code = vif_byte & 0x7F
    text_unit: str | None = None
    if code == 0x7C:
        # Plain-text VIF: a length byte and the unit's name, last character first; any
        # VIFEs follow the text (libmbus' reading of EN 13757-3 6.5).
        size = cur.byte("plain-text VIF length")
        text_unit = cur.take(size, "plain-text VIF")[::-1].decode("latin-1")
    vife = _extensions(cur, vif_byte, "VIFE")
    qualifiers = vife
    if code == 0x7C:
        info = _Vif(None, f"plain text {text_unit!r}")
    elif code in (0x7B, 0x7D):
        if not vife:
            raise DecodeError(f"VIF 0x{vif_byte:02X} without its extension byte")
        table = _fb_vif if code == 0x7B else _fd_vif
        info = table(vife[0] & 0x7F)
        qualifiers = vife[1:]
    else:
        info = _primary_vif(code)
    exponent, extensions = _fold_vifes(qualifiers, info)

    dtype = dif & 0x0F
    if dtype == 0x0D:
        lvar = cur.byte("LVAR")
        data = cur.take(_lvar_length(lvar), "variable-length data")
        fld = _read_lvar(lvar, data)
    else:
        data = cur.take(_DATA_LENGTHS[dtype], f"data field type 0x{dtype:X}")
        fld = _read_fixed(dtype, data, info.signed)
    value: Value
    error: str | None = None
    summer = False
    try:
        value, summer = _value(info, dtype, fld, exponent)
    except _BadValue as exc:
        value, error = None, str(exc)
    # Dates have no unit yet: they become Unix seconds only with a time zone, in the driver.
    dated = info.quantity in (Quantity.DATE, Quantity.DATETIME)
    unit = BASE_UNITS[info.quantity] if info.quantity is not None and not dated else None
    return Record(
        dif=dif,
        dife=dife,
        vif=vif_byte,
        vife=vife,
        function=function,
        storage=storage,
        tariff=tariff,
        subunit=subunit,
        quantity=info.quantity,
        description=info.description,
        unit=unit,
        value=value,
        extensions=extensions,
        data=data,
        summer_time=summer,
        error=error,
    )


def parse_records(data: bytes, *, strict: bool = True) -> Records:
    """The data records in ``data`` (the user data after the header).

    Args:
        strict: raise on a structure that cannot be followed; otherwise return the
            records before it, with the reason in :attr:`Records.error`.

    Raises:
        DecodeError: (``strict`` only) a record is truncated or uses a reserved coding.
    """
    cur = _Cursor(data)
    records: list[Record] = []
    more = False
    manufacturer = b""
    try:
        while cur.more():
            start = cur.pos
            dif = cur.byte("DIF")
            if dif == 0x2F or dif == 0x7F:
                continue  # idle filler; global readout request (no data)
            if dif in (0x0F, 0x1F):
                more = dif == 0x1F
                manufacturer = cur.rest()
                break
            if dif & 0x0F == 0x0F:
                raise DecodeError(f"reserved DIF 0x{dif:02X} at byte {start}")
            records.append(_one_record(cur, dif))
    except DecodeError as exc:
        if strict:
            raise
        return Records(tuple(records), more, manufacturer, f"record {len(records)}: {exc}")
    return Records(tuple(records), more, manufacturer)


def decode_user_data(ci: int, data: bytes) -> Telegram:
    """Header and records of a RSP_UD's CI field and the data after it.

    A record structure that cannot be followed ends the records early (see
    :attr:`Telegram.error`); the records before it are kept.

    Raises:
        DecodeError: the CI is not a variable data response, or the header is cut short
            or announces encryption.
    """
    header, rest = parse_header(ci, data)
    parsed = parse_records(rest, strict=False)
    return Telegram(
        ci=ci,
        header=header,
        records=parsed.records,
        more=parsed.more,
        manufacturer_data=parsed.manufacturer_data,
        error=parsed.error,
    )
