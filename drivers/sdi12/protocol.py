"""The SDI-12 wire format (version 1.4): commands, responses and the CRC. No I/O.

Everything here is a pure function of its arguments, so the driver, the simulator
(:mod:`swm_edge_hil.sdi12`) and the tests share one reading of the standard.

Reference: SDI-12 Support Group, *SDI-12, A Serial-Digital Interface Standard for
Microprocessor-Based Sensors*, version 1.4. Its worked examples (section 4.4.8.4 for
measurements, section 4.4.12 for the CRC) are recorded with their source in
``shared/reference/devices.json`` (key ``sdi12``) and are the test vectors of this module.

A sensor response is one line: the sensor address, a body, ``<CR><LF>``. Parsers take that
line as it came off the wire and raise only :class:`~swm_edge.driver.ReadError` subclasses:

* :class:`~swm_edge.driver.DeviceTimeout`: nothing arrived at all;
* :class:`~swm_edge.driver.CrcError`: bytes arrived but do not form a line from the asked
  sensor (no ``<CR><LF>`` within the standard's length, control characters or bytes
  beyond ASCII, another sensor's address, a CRC mismatch). Retrying may help: it is line
  trouble;
* :class:`~swm_edge.driver.DecodeError`: a well-formed line from the right sensor whose
  body is not what the command calls for (a malformed value, a wrong-length
  acknowledgement). Retrying does not help: the sensor said it that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from swm_edge.driver import CrcError, DecodeError, DeviceTimeout

__all__ = [
    "ADDRESSES",
    "CHAR_SECONDS",
    "CRLF",
    "MAX_VALUES_CHARS",
    "MAX_VALUES_CHARS_LONG",
    "MAX_VALUE_DIGITS",
    "Ack",
    "Identification",
    "Kind",
    "Measurement",
    "command",
    "crc16",
    "crc_chars",
    "data_command",
    "format_value",
    "frame",
    "parse_ack",
    "parse_address",
    "parse_identification",
    "parse_values",
    "response_size",
]

#: Valid sensor addresses: ``0``-``9`` (the standard ones), ``A``-``Z`` and ``a``-``z``.
ADDRESSES = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: Every response ends with carriage return, line feed.
CRLF = b"\r\n"
#: Seconds per character on the line: 1200 baud, 1 start + 7 data + 1 parity + 1 stop bit.
CHAR_SECONDS = 10 / 1200
#: Longest ``<values>`` part of a ``D`` response to an ``M`` (or ``V``) measurement.
MAX_VALUES_CHARS = 35
#: Longest ``<values>`` part of a ``D`` response to a ``C`` measurement and of an ``R``
#: response.
MAX_VALUES_CHARS_LONG = 75
#: A value is a mandatory sign and at most 7 digits with an optional decimal point.
MAX_VALUE_DIGITS = 7
#: The CRC is sent as three characters between the values and ``<CR><LF>``.
CRC_LENGTH = 3
# Longest identification line body: 2 version + 8 vendor + 6 model + 3 version + 13 optional.
_MAX_IDENT_BODY = 32

_VALUES = re.compile(r"(?:[+-](?:\d+\.?\d*|\.\d+))*")
_VALUE = re.compile(r"[+-](?:\d+\.?\d*|\.\d+)")
_DIGITS = frozenset("0123456789")


class Kind(StrEnum):
    """The three ways of asking a sensor for measurements."""

    #: ``aM!``: ``atttn``, service request when ready, then ``aD0!``...; up to 9 values.
    MEASURE = "M"
    #: ``aC!``: ``atttnn``, no service request (wait ``ttt``), then ``aD0!``...; up to 99.
    CONCURRENT = "C"
    #: ``aR0!``..``aR9!``: the values at once in the response itself, no ``D`` commands.
    CONTINUOUS = "R"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement command, e.g. ``M``, ``M3``, ``C``, ``R0``, with or without CRC.

    ``number`` is the digit after the letter: ``None`` for plain ``M``/``C``, 1-9 for the
    additional measurements ``M1``..``M9``/``C1``..``C9``, 0-9 for ``R0``..``R9``.
    """

    kind: Kind
    number: int | None = None
    crc: bool = False

    def __post_init__(self) -> None:
        if self.kind is Kind.CONTINUOUS:
            ok = self.number is not None and 0 <= self.number <= 9
        else:
            ok = self.number is None or 1 <= self.number <= 9
        if not ok:
            raise ValueError(f"no SDI-12 command {self.kind.value}{self.number}")

    @classmethod
    def parse(cls, name: str, *, crc: bool = False) -> Measurement:
        """``"M"``, ``"M1"``..``"M9"``, ``"C"``, ``"C1"``..``"C9"`` or ``"R0"``..``"R9"``.

        The CRC variant is asked for with ``crc``, not spelled in ``name``: ``MC`` would
        read as a measurement ``M`` named ``C``.

        Raises:
            ValueError: for anything else.
        """
        if not (1 <= len(name) <= 2) or name[0] not in "MCR":
            raise ValueError(f"unknown measurement command {name!r}")
        digit = name[1:]
        if digit and digit not in _DIGITS:
            raise ValueError(f"unknown measurement command {name!r}")
        return cls(Kind(name[0]), int(digit) if digit else None, crc)

    @property
    def name(self) -> str:
        """The command as a user writes it, without address and CRC: ``M``, ``C2``, ``R0``."""
        return self.kind.value + ("" if self.number is None else str(self.number))

    @property
    def body(self) -> str:
        """The command body on the wire: ``M``, ``MC``, ``MC1``, ``CC``, ``RC0``, ..."""
        crc = "C" if self.crc else ""
        return self.kind.value + crc + ("" if self.number is None else str(self.number))

    @property
    def values_limit(self) -> int:
        """Longest ``<values>`` part of one data line answering this measurement."""
        return MAX_VALUES_CHARS if self.kind is Kind.MEASURE else MAX_VALUES_CHARS_LONG

    @property
    def max_count(self) -> int:
        """Most values the measurement can announce: ``n`` is one digit for ``M``, two for
        ``C``; ``R`` announces none, its line length is the limit."""
        if self.kind is Kind.MEASURE:
            return 9
        if self.kind is Kind.CONCURRENT:
            return 99
        return MAX_VALUES_CHARS_LONG // 2  # "+1" per value at the shortest


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to ``aM!``/``aC!``: values are ready within ``seconds``; ``count`` of them."""

    seconds: int
    count: int


@dataclass(frozen=True, slots=True)
class Identification:
    """The answer to ``aI!``: ``allccccccccmmmmmmvvvxxx...``."""

    sdi12_version: str  # "14" for version 1.4
    vendor: str  # 8 characters, trailing blanks removed
    model: str  # 6 characters, trailing blanks removed
    version: str  # 3 characters: the sensor's firmware/hardware version
    extra: str  # up to 13 optional characters, often a serial number


def _check_address(address: str) -> None:
    if len(address) != 1 or address not in ADDRESSES:
        raise ValueError(f"invalid SDI-12 address {address!r} (one of 0-9, A-Z, a-z)")


def command(address: str, body: str) -> bytes:
    """The bytes of command ``body`` to the sensor at ``address``: ``address + body + "!"``.

    ``address`` may be ``"?"`` for the address query ``?!``.
    """
    if address != "?":
        _check_address(address)
    if "!" in body or not body.isascii() or not body.isprintable():
        raise ValueError(f"invalid SDI-12 command body {body!r}")
    return f"{address}{body}!".encode("ascii")


def data_command(address: str, page: int) -> bytes:
    """``aD0!`` .. ``aD9!``: fetch page ``page`` of the last measurement's values."""
    if not 0 <= page <= 9:
        raise ValueError(f"no data page D{page} (D0..D9)")
    return command(address, f"D{page}")


def response_size(body_chars: int, *, crc: bool = False) -> int:
    """Longest response line, in bytes, for a body of at most ``body_chars`` characters:
    address, body, CRC if asked for, ``<CR><LF>``."""
    return 1 + body_chars + (CRC_LENGTH if crc else 0) + len(CRLF)


def crc16(data: bytes) -> int:
    """The SDI-12 CRC-16 (standard section 4.4.12): polynomial 0xA001 (reflected 0x8005),
    initial value 0, over every character from the address to the last value."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_chars(data: bytes) -> bytes:
    """The three CRC characters of ``data``: the 16 bits in groups of 4, 6 and 6 bits (most
    significant first), each OR-ed with 0x40: characters 0x40-0x7F, never a sign or digit,
    so they cannot be mistaken for part of a value."""
    crc = crc16(data)
    return bytes((0x40 | (crc >> 12), 0x40 | ((crc >> 6) & 0x3F), 0x40 | (crc & 0x3F)))


def frame(raw: bytes, sent: bytes = b"") -> bytes:
    """The response line in ``raw`` (what was read up to ``<CR><LF>``), without the line end.

    ``sent`` is the command just written: adapters that drive the single data wire hear
    their own command and pass it on before the response, so a leading copy of it is
    dropped. (A response never contains ``!``, so this cannot eat a real answer.) Leading
    NUL bytes, which some UARTs report for the break that preceded the command, are
    dropped too.

    Raises:
        DeviceTimeout: nothing (but the echo) arrived.
        CrcError: no ``<CR><LF>`` ending, or control characters or bytes beyond ASCII.
    """
    data = raw.lstrip(b"\x00")
    if sent and data.startswith(sent):
        data = data[len(sent) :]
    if not data:
        raise DeviceTimeout("no response")
    if not data.endswith(CRLF):
        raise CrcError(f"response not terminated by CR LF: {data[:90]!r}")
    line = data[: -len(CRLF)]
    if not _printable(line):
        raise CrcError(f"not a response line: {data[:90]!r}")
    return line


def _printable(line: bytes) -> bool:
    # 0x7F (DEL) is allowed: it is a valid CRC character (0x40 | 0x3F).
    return bool(line) and all(0x20 <= b <= 0x7F for b in line)


def _from(line: bytes, address: str) -> str:
    """The body of ``line`` after checking it comes from ``address``."""
    if not _printable(line):
        raise CrcError(f"not a response line: {line[:90]!r}")
    text = line.decode("ascii")
    if text[:1] != address:
        raise CrcError(f"response from address {text[:1]!r}, expected {address!r}: {text!r}")
    return text[1:]


def parse_address(line: bytes) -> str:
    """The answer to ``?!`` (or ``a!``): the address alone.

    Raises:
        DecodeError: the line is not one address character.
    """
    text = line.decode("ascii", "replace")
    if len(text) != 1 or text not in ADDRESSES:  # one byte: nothing else can pass
        raise DecodeError(f"not an address: {text!r}")
    return text


def parse_ack(line: bytes, address: str, measurement: Measurement) -> Ack:
    """The answer to ``aM!`` (``atttn``) or ``aC!`` (``atttnn``), CRC variants alike.

    Raises:
        CrcError: the line is from another address.
        DecodeError: not three digits of seconds and one (``M``) or two (``C``) digits
            of count.
    """
    if measurement.kind is Kind.CONTINUOUS:
        raise ValueError("R commands are answered with values, not an acknowledgement")
    body = _from(line, address)
    digits = 4 if measurement.kind is Kind.MEASURE else 5
    if len(body) != digits or not set(body) <= _DIGITS:
        raise DecodeError(
            f"{measurement.name} acknowledgement must be {address} + {digits} digits, "
            f"got {line.decode('ascii')!r}"
        )
    return Ack(seconds=int(body[:3]), count=int(body[3:]))


def parse_values(
    line: bytes, address: str, *, crc: bool = False, limit: int = MAX_VALUES_CHARS_LONG
) -> tuple[float, ...]:
    """The values of a ``aD<n>!`` or ``aR<n>!`` response: ``a<values>[<CRC>]``.

    Each value is a sign (``+`` or ``-``, mandatory: it also separates the values) and at
    most 7 digits with an optional decimal point, e.g. ``+3.14``, ``-0.00045``, ``+12354``.
    No values (``a<CR><LF>``) is valid: the sensor has nothing (more) to report. Values
    are returned as floats.

    Raises:
        CrcError: another address, or (``crc``) a CRC that does not match.
        DecodeError: values not in that form, or more than ``limit`` characters of them.
    """
    text = _from(line, address)
    if crc:
        if len(text) < CRC_LENGTH:
            raise CrcError(f"response too short to carry a CRC: {line!r}")
        text, received = text[:-CRC_LENGTH], text[-CRC_LENGTH:]
        expected = crc_chars(line[:-CRC_LENGTH]).decode("ascii")
        if received != expected:
            raise CrcError(f"CRC {received!r} does not match {expected!r} in {line!r}")
    if len(text) > limit:
        raise DecodeError(f"{len(text)} characters of values, at most {limit} allowed: {line!r}")
    if not _VALUES.fullmatch(text):
        raise DecodeError(f"malformed values {text!r} (each needs a sign and digits)")
    values = []
    for token in _VALUE.findall(text):
        if sum(c in _DIGITS for c in token) > MAX_VALUE_DIGITS:
            raise DecodeError(f"value {token!r} has more than {MAX_VALUE_DIGITS} digits")
        values.append(float(token))
    return tuple(values)


def parse_identification(line: bytes, address: str) -> Identification:
    """The answer to ``aI!``.

    Raises:
        CrcError: the line is from another address.
        DecodeError: shorter than the 19 fixed characters, or longer than 32.
    """
    body = _from(line, address)
    if not 19 <= len(body) <= _MAX_IDENT_BODY or not body[:2].isdigit():
        raise DecodeError(f"not an identification: {line.decode('ascii')!r}")
    return Identification(
        sdi12_version=body[:2],
        vendor=body[2:10].rstrip(),
        model=body[10:16].rstrip(),
        version=body[16:19],
        extra=body[19:],
    )


def format_value(value: float, decimals: int) -> str:
    """``value`` as SDI-12 writes it (sign always, ``decimals`` places, at most 7 digits),
    the inverse of :func:`parse_values` for one value; for simulators and tests.

    Raises:
        ValueError: the value does not fit in 7 digits with that many decimals.
    """
    text = f"{value:+.{decimals}f}" if decimals > 0 else f"{round(value):+d}"
    if sum(c in _DIGITS for c in text) > MAX_VALUE_DIGITS:
        raise ValueError(f"{value} does not fit in {MAX_VALUE_DIGITS} digits")
    return text
