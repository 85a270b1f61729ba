"""Modbus RTU framing of the four read functions: requests out, answers in. No I/O.

A master on an RS-485 line sends a request and then reads bytes until it can tell what they
are. :func:`read_request` builds the request (Modbus Application Protocol v1.1b3, 6.1-6.4;
Modbus over Serial Line v1.02, 2.5.1: unit, function, address, count, CRC low byte first);
:func:`parse_answer` looks at the bytes received so far and says one of:

* :class:`Pending`: not decided, more bytes may complete the answer; its ``verdict`` says
  what the bytes so far amount to if no more come (nothing, a late answer to another
  request, a frame of another unit, an incomplete frame);
* :class:`Answer`: the expected answer, registers or bits;
* :class:`Refused`: the expected unit's exception response (function | 0x80);
* :class:`Bad`: bytes that cannot be, or cannot contain, the answer (a CRC error, an
  unknown function, bytes after the answer).

RTU has no transaction id, so an answer is recognised by its unit, function and byte count.
Complete frames with a valid CRC that do not match (another unit's answer, or an answer of
the same unit to another request, arriving late) are skipped and parsing goes on after
them: the right answer may follow in the same read. Bytes after the expected answer mean
the frame on the wire was longer than an answer, so it is not trusted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pymodbus.framer.rtu import FramerRTU

from swm_edge.modbus.planner import MAX_READ_BITS, MAX_READ_REGISTERS

__all__ = [
    "READ_FUNCTIONS",
    "Answer",
    "Bad",
    "Expected",
    "Parse",
    "Pending",
    "Refused",
    "Verdict",
    "crc",
    "crc_ok",
    "frame_length",
    "parse_answer",
    "read_request",
]

#: Read coils, read discrete inputs, read holding registers, read input registers.
READ_FUNCTIONS = frozenset({1, 2, 3, 4})
_EXCEPTION_BIT = 0x80
_MAX_UNIT = 247  # 248-255 are reserved (Modbus over Serial Line v1.02, 2.2)
# Answers of these functions carry their byte count in the third byte (the reads).
_COUNTED = frozenset({1, 2, 3, 4})
# Answers of fixed length: the single and multiple writes echo unit, function, address and
# value or quantity; another master's traffic of these kinds is delimited, then skipped.
_FIXED = {5: 8, 6: 8, 15: 8, 16: 8}


def crc(body: bytes) -> bytes:
    """The CRC-16/MODBUS of ``body`` as RTU sends it (low byte first)."""
    # pymodbus' table-driven CRC returns the value with its bytes swapped, so its big-endian
    # form is the wire order.
    return int(FramerRTU.compute_CRC(body)).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    """Whether the last two bytes of ``frame`` are the CRC of the bytes before them."""
    return len(frame) >= 4 and crc(frame[:-2]) == frame[-2:]


def read_request(unit: int, function: int, address: int, count: int) -> bytes:
    """The RTU request of ``function`` (1-4) for ``count`` bits or registers from ``address``.

    Raises:
        ValueError: a unit outside 1..247, another function, an address outside 0..65535,
            or a count the function does not allow (1..2000 bits, 1..125 registers), or
            one that runs past address 65535.
    """
    if not 1 <= unit <= _MAX_UNIT:
        raise ValueError(f"unit id {unit} outside 1..{_MAX_UNIT}")
    if function not in READ_FUNCTIONS:
        raise ValueError(f"function {function} is not a read (1-4)")
    limit = MAX_READ_BITS if function in (1, 2) else MAX_READ_REGISTERS
    if not 1 <= count <= limit:
        raise ValueError(f"count {count} outside 1..{limit} for function {function}")
    if address < 0 or address + count > 0x10000:
        raise ValueError(f"addresses {address}..{address + count - 1} outside 0..65535")
    body = bytes((unit, function)) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    return body + crc(body)


@dataclass(frozen=True, slots=True)
class Expected:
    """The answer a read request asks for: from ``unit``, to ``function``, ``count`` items."""

    unit: int
    function: int
    count: int

    @property
    def data_bytes(self) -> int:
        """The byte count the answer announces: 2 a register, 8 bits a byte."""
        return 2 * self.count if self.function in (3, 4) else (self.count + 7) // 8

    @property
    def length(self) -> int:
        """The whole answer: unit, function, byte count, data, CRC (2)."""
        return 5 + self.data_bytes


class Verdict(enum.Enum):
    """What the bytes received so far amount to if no more arrive (see :class:`Pending`)."""

    #: nothing at all: the device did not answer
    NOTHING = "nothing"
    #: only complete answers of the addressed unit to other requests (late): still no answer
    STALE = "stale"
    #: complete frames, at least one from another unit: an answer from the wrong unit
    WRONG_UNIT = "wrong_unit"
    #: a frame that has not (yet) arrived whole
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class Pending:
    """Undecided: more bytes may complete the answer.

    ``verdict`` and ``detail`` describe the bytes so far for the error the caller raises
    when no more come before its timeout.
    """

    verdict: Verdict
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """The expected answer: ``registers`` (functions 3, 4) or ``bits`` (1, 2; exactly the
    count asked for, the padding of the last byte dropped). ``skipped``: frames of other
    requests skipped before it."""

    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Refused:
    """The expected unit answered with exception ``code``."""

    code: int
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Bad:
    """Bytes that are not, and cannot become, the expected answer; ``reason`` says why."""

    reason: str


#: What :func:`parse_answer` returns.
Parse = Pending | Answer | Refused | Bad


def frame_length(data: bytes) -> int | None:
    """Length of the answer frame at the start of ``data``: ``None`` while its header is
    incomplete, 0 for a function whose answer length this module does not know."""
    if len(data) < 2:
        return None
    function = data[1]
    if function & _EXCEPTION_BIT:
        return 5
    if function in _COUNTED:
        return None if len(data) < 3 else 5 + data[2]
    return _FIXED.get(function, 0)


def parse_answer(data: bytes, expected: Expected) -> Parse:
    """What ``data``, every byte received since the request was sent, holds for
    ``expected``; see the module docstring. Never raises for any ``data``."""
    at = 0
    skipped_own = skipped_other = 0
    while True:
        rest = data[at:]
        if not rest:
            if skipped_other:
                return Pending(
                    Verdict.WRONG_UNIT,
                    f"{skipped_other} valid frame(s) from another unit, none from unit "
                    f"{expected.unit}",
                )
            if skipped_own:
                return Pending(
                    Verdict.STALE,
                    f"{skipped_own} late answer(s) of unit {expected.unit} to another request "
                    "skipped",
                )
            return Pending(Verdict.NOTHING)
        length = frame_length(rest)
        if length == 0:
            return Bad(f"byte {at}: function {rest[1]} is no answer to a read")
        if length is None or len(rest) < length:
            announced = f" of {length}" if length else ""
            return Pending(
                Verdict.INCOMPLETE, f"an incomplete frame ({len(rest)}{announced} bytes)"
            )
        frame = rest[:length]
        if not crc_ok(frame):
            return Bad(f"CRC error in the {length}-byte frame at byte {at}")
        unit, function = frame[0], frame[1]
        ours = unit == expected.unit
        if ours and function == expected.function and length == expected.length:
            found: Answer | Refused = _decode(frame, expected, skipped_own + skipped_other)
        elif ours and function == expected.function | _EXCEPTION_BIT:
            found = Refused(frame[2], skipped_own + skipped_other)
        else:
            if ours:
                skipped_own += 1
            else:
                skipped_other += 1
            at += length
            continue
        extra = len(data) - at - length
        if extra:
            # An answer ends with a silence: bytes right after it mean the frame on the
            # wire was longer (noise, an over-long frame), so its CRC proves nothing.
            return Bad(f"{extra} bytes after a {length}-byte answer (the frame was longer)")
        return found


def _decode(frame: bytes, expected: Expected, skipped: int) -> Answer:
    data = frame[3:-2]
    if expected.function in (3, 4):
        words = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
        return Answer(registers=words, skipped=skipped)
    # Bit i of the answer is bit (i % 8) of byte i // 8 (Application Protocol 6.1).
    bits = tuple(bool(data[i // 8] >> (i % 8) & 1) for i in range(expected.count))
    return Answer(bits=bits, skipped=skipped)
