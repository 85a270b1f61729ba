"""The wired M-Bus link layer (EN 13757-2, FT1.2 framing of IEC 60870-5-2). No I/O.

Every function here is pure, so the driver, the simulator (:mod:`swm_edge_hil.mbus`) and
the tests share one reading of the standard. Four frame formats exist on the wire:

=================  ==========================================  ===========================
single character   ``E5``                                      acknowledgement
short frame        ``10 C A CS 16``                            SND_NKE, REQ_UD2, ...
control frame      ``68 03 03 68 C A CI CS 16``                (rare)
long frame         ``68 L L 68 C A CI data... CS 16``          SND_UD, RSP_UD
=================  ==========================================  ===========================

``L`` counts C, A, CI and the data (3..255), so a long frame is at most 255 + 6 = 261
bytes. ``CS`` is the arithmetic sum, modulo 256, of the bytes from C to the end of the
data. :func:`parse_frame` checks both L fields, the second start byte, the checksum and the
stop byte and raises :class:`~swm_edge.driver.CrcError` for any mismatch: bytes arrived,
but not a frame. It never raises anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from swm_edge.driver import CrcError

__all__ = [
    "ACK",
    "ADDRESS_BROADCAST",
    "ADDRESS_NETWORK",
    "CI_SELECT",
    "C_REQ_UD2",
    "C_RSP_UD",
    "C_SND_NKE",
    "C_SND_UD",
    "FCB",
    "FCV",
    "LONG_START",
    "MAX_FRAME",
    "MAX_L",
    "SHORT_START",
    "STOP",
    "Frame",
    "FrameKind",
    "SecondaryAddress",
    "checksum",
    "frame_size",
    "is_rsp_ud",
    "long_frame",
    "manufacturer_code",
    "manufacturer_letters",
    "parse_frame",
    "req_ud2",
    "select_secondary",
    "short_frame",
    "snd_nke",
]

ACK = 0xE5
SHORT_START = 0x10
LONG_START = 0x68
STOP = 0x16
#: Largest L field; a long frame is ``L + 6`` bytes.
MAX_L = 255
#: Largest frame on the wire (a long frame with L = 255): every read buffer is this big.
MAX_FRAME = MAX_L + 6

# C field (EN 13757-2 5.4): function codes with FCB cleared (FCV is part of the code of the
# functions that use FCB).
C_SND_NKE = 0x40  # link reset; the slave answers E5 and restarts its FCB state
C_SND_UD = 0x53  # send user data (selection, commands); the slave answers E5
C_REQ_UD2 = 0x5B  # request class 2 data; the slave answers RSP_UD
C_RSP_UD = 0x08  # slave -> master user data (plus the ACD 0x20 and DFC 0x10 bits)
#: Frame count bit: toggled by the master for each new request, repeated for a retry.
FCB = 0x20
#: Frame count valid bit: the slave looks at FCB only when it is set.
FCV = 0x10

#: Primary address 253: the slave selected by secondary address (network layer).
ADDRESS_NETWORK = 253
#: Primary address 255: broadcast, no slave answers.
ADDRESS_BROADCAST = 255
#: CI of a SND_UD that selects a slave by its secondary address (EN 13757-3 11.3).
CI_SELECT = 0x52


class FrameKind(StrEnum):
    """The four frame formats."""

    ACK = "ack"
    SHORT = "short"
    CONTROL = "control"
    LONG = "long"


@dataclass(frozen=True, slots=True)
class Frame:
    """One valid frame. ``ci`` is ``None`` for short frames and acks; ``data`` is empty
    except for long frames."""

    kind: FrameKind
    c: int = 0
    a: int = 0
    ci: int | None = None
    data: bytes = b""


def checksum(data: bytes) -> int:
    """The FT1.2 checksum: the sum of ``data`` modulo 256."""
    return sum(data) & 0xFF


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value} is not a byte")
    return value


def short_frame(c: int, a: int) -> bytes:
    """``10 C A CS 16``."""
    body = bytes((_byte("C", c), _byte("A", a)))
    return bytes((SHORT_START, *body, checksum(body), STOP))


def long_frame(c: int, a: int, ci: int, data: bytes = b"") -> bytes:
    """``68 L L 68 C A CI data CS 16`` (a control frame when ``data`` is empty)."""
    if len(data) > MAX_L - 3:
        raise ValueError(f"{len(data)} data bytes do not fit a long frame (at most {MAX_L - 3})")
    body = bytes((_byte("C", c), _byte("A", a), _byte("CI", ci))) + data
    length = len(body)
    return bytes((LONG_START, length, length, LONG_START)) + body + bytes((checksum(body), STOP))


def snd_nke(address: int) -> bytes:
    """SND_NKE: reset the link of the slave at ``address`` (it answers ``E5``)."""
    return short_frame(C_SND_NKE, address)


def req_ud2(address: int, fcb: bool) -> bytes:
    """REQ_UD2 with FCV set and the given frame count bit: the slave answers RSP_UD.

    The slave sends its next telegram when FCB differs from its last request's, and repeats
    the last one when it is the same (so a master can retry a lost answer).
    """
    return short_frame(C_REQ_UD2 | (FCB if fcb else 0), address)


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """A secondary address as used for selection: identification number (8 digits, ``F``
    for a wildcard digit), manufacturer (3 letters), version and medium (``None``: any).
    """

    ident: str
    manufacturer: str | None = None
    version: int | None = None
    medium: int | None = None

    def __post_init__(self) -> None:
        if len(self.ident) != 8 or any(ch not in "0123456789Ff" for ch in self.ident):
            raise ValueError(
                f"secondary address {self.ident!r} must be 8 digits 0-9 (F = any digit)"
            )
        if self.manufacturer is not None:
            manufacturer_code(self.manufacturer)  # validates
        for name, value in (("version", self.version), ("medium", self.medium)):
            if value is not None and not 0 <= value <= 0xFF:
                raise ValueError(f"{name} {value} is not a byte")

    def matches(
        self, ident: str, manufacturer: str | None, version: int | None, medium: int | None
    ) -> bool:
        """Whether a meter with these header fields answers this selection."""
        if len(ident) != 8:
            return False
        for want, have in zip(self.ident.upper(), ident.upper(), strict=True):
            if want != "F" and want != have:
                return False
        if self.manufacturer is not None and self.manufacturer.upper() != manufacturer:
            return False
        if self.version is not None and self.version != version:
            return False
        return self.medium is None or self.medium == medium

    def encode(self) -> bytes:
        """The 8 selection bytes: ident (BCD, least significant byte first, ``F`` nibbles
        as wildcards), manufacturer (``FF FF`` = any), version and medium (``FF`` = any)."""
        digits = self.ident.upper()
        ident = bytes(int(digits[i : i + 2], 16) for i in range(6, -1, -2))
        if self.manufacturer is None:
            man = b"\xff\xff"
        else:
            man = manufacturer_code(self.manufacturer).to_bytes(2, "little")
        version = 0xFF if self.version is None else self.version
        medium = 0xFF if self.medium is None else self.medium
        return ident + man + bytes((version, medium))


def manufacturer_code(letters: str) -> int:
    """The 2-byte manufacturer code of a 3-letter FLAG id (``"ACW"`` -> ``0x0477``)."""
    if len(letters) != 3 or not all("A" <= ch <= "Z" for ch in letters.upper()):
        raise ValueError(f"manufacturer {letters!r} must be 3 letters A-Z")
    up = letters.upper()
    return ((ord(up[0]) - 64) << 10) | ((ord(up[1]) - 64) << 5) | (ord(up[2]) - 64)


def manufacturer_letters(code: int) -> str:
    """The 3-letter FLAG id of a 2-byte manufacturer code (``0x0477`` -> ``"ACW"``); codes
    outside ``AAA``..``ZZZ`` give ``"?"`` for the letters they cannot spell."""
    letters = ((code >> 10) & 0x1F, (code >> 5) & 0x1F, code & 0x1F)
    return "".join(chr(64 + v) if 1 <= v <= 26 else "?" for v in letters)


def select_secondary(address: SecondaryAddress) -> bytes:
    """SND_UD to address 253 with CI 0x52: the matching slave is selected (answers ``E5``),
    every other slave is deselected. Later requests to 253 go to the selected slave.

    The C field is ``73`` (FCB set), as libmbus sends it; slaves ignore FCB here."""
    return long_frame(C_SND_UD | FCB, ADDRESS_NETWORK, CI_SELECT, address.encode())


def frame_size(head: bytes) -> int | None:
    """Total size of the frame that starts with ``head``, or ``None`` when more bytes are
    needed to tell (a long frame's size is known from its first 4 bytes).

    Raises:
        CrcError: ``head`` cannot start a frame (wrong start byte, different L fields, a
            long frame's second start byte missing, an L too small for C, A and CI).
    """
    if not head:
        return None
    start = head[0]
    if start == ACK:
        return 1
    if start == SHORT_START:
        return 5
    if start != LONG_START:
        raise CrcError(f"no frame starts with 0x{start:02X}")
    if len(head) < 4:
        return None
    length, length2, start2 = head[1], head[2], head[3]
    if length != length2:
        raise CrcError(f"the two L fields differ (0x{length:02X}, 0x{length2:02X})")
    if start2 != LONG_START:
        raise CrcError(f"second start byte 0x{start2:02X}, expected 0x68")
    if length < 3:
        raise CrcError(f"L field {length} is too small (C, A and CI need 3)")
    return length + 6


def parse_frame(raw: bytes) -> Frame:
    """Check and split one complete frame.

    Raises:
        CrcError: not exactly one valid frame: truncated, too long, bad start or stop
            byte, L fields that differ or disagree with the length, wrong checksum.
    """
    if len(raw) > MAX_FRAME:
        raise CrcError(f"{len(raw)} bytes are more than the largest frame ({MAX_FRAME})")
    size = frame_size(raw)
    if size is None:
        raise CrcError(f"truncated frame: {len(raw)} bytes ({raw[:8].hex(' ')})")
    if len(raw) < size:
        raise CrcError(f"truncated frame: {len(raw)} of {size} bytes")
    if len(raw) > size:
        raise CrcError(f"frame of {size} bytes followed by {len(raw) - size} more")
    if raw[0] == ACK:
        return Frame(FrameKind.ACK)
    if raw[-1] != STOP:
        raise CrcError(f"stop byte 0x{raw[-1]:02X}, expected 0x16")
    if raw[0] == SHORT_START:
        body, cs = raw[1:3], raw[3]
    else:
        body, cs = raw[4:-2], raw[-2]
    if checksum(body) != cs:
        raise CrcError(f"checksum 0x{cs:02X}, computed 0x{checksum(body):02X}")
    if raw[0] == SHORT_START:
        return Frame(FrameKind.SHORT, c=body[0], a=body[1])
    kind = FrameKind.CONTROL if len(body) == 3 else FrameKind.LONG
    return Frame(kind, c=body[0], a=body[1], ci=body[2], data=bytes(body[3:]))


def is_rsp_ud(frame: Frame) -> bool:
    """Whether ``frame`` is a slave's RSP_UD (any ACD/DFC bits) with user data."""
    return frame.kind in (FrameKind.LONG, FrameKind.CONTROL) and frame.c & 0xCF == C_RSP_UD
