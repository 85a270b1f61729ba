"""Faults a simulated device (or the line to it) can be switched into at run time.

A :class:`FaultTable` maps unit ids to a :class:`Fault`. The Modbus servers in
:mod:`swm_edge_hil.servers` and the null-modem relay in :mod:`swm_edge_hil.nullmodem` look
the addressed unit up for every request, so a test can break one device on a shared
RS-485 line while the others keep answering.

Faults are written as short strings, as in a test parameter or on a command line::

    silent              no answer at all (the client times out)
    exception:<code>    every request answered with this Modbus exception code
    garbage             answered with random bytes that form no valid frame
    bad_crc             the correct answer with a corrupted CRC (RTU only)
    late[:<seconds>]    the correct answer, but only after a delay (default 2 s)
    intermittent[:<p>]  the correct answer with probability p (default 0.5), else silence
    wrong_unit[:<id>]   the correct answer, but from unit <id> (default: the next unit id),
                        with a valid CRC
    truncated[:<n>]     the correct answer without its last n bytes (default 3)
    overlong[:<n>]      the correct answer followed by n random bytes (default 4) with no
                        silence in between, so the frame on the wire is longer than valid
    late_echo           the answer is held back past the client's timeout and sent right
                        after the next request on the line (to whichever unit), i.e. the
                        late answer to the previous request arrives during the next one

``wrong_unit``, ``truncated`` and ``overlong`` (:data:`FRAME_KINDS`) rewrite the reply
frame itself; :meth:`Fault.spoil` and :meth:`FaultTable.reply` apply them to a frame, so any
relay or server hook can use them. ``late_echo`` keeps one held frame per table
(:meth:`FaultTable.hold`, :meth:`FaultTable.take_held`): the relay holds the reply and
releases it when it frames the next request.

Where each kind applies:

==========================================  =======================  ===================
kind                                        NullModem relay (RTU)    servers: RTU / TCP
==========================================  =======================  ===================
silent, exception, garbage, late,           yes                      yes / yes
intermittent
bad_crc                                     yes                      yes / no (no CRC)
wrong_unit, truncated, overlong             yes                      yes / no (1)
late_echo                                   yes                      no / no (2)
==========================================  =======================  ===================

(1) they are about RTU framing (a CRC, a frame that ends with a silence); Modbus TCP frames
by the MBAP header's length and matches answers by transaction id.
(2) it needs the next request seen before its answer, which only the relay sits between;
:meth:`swm_edge_hil.nullmodem.NullModem.echo_late` chooses where the held answer goes.
The servers refuse the kinds they cannot apply (``ValueError`` from ``set_fault``).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import StrEnum

from swm_edge_hil.rtu import check_crc, with_crc

__all__ = ["FRAME_KINDS", "Fault", "FaultKind", "FaultTable", "garbage_bytes"]


class FaultKind(StrEnum):
    """The kinds of fault; see the module docstring."""

    SILENT = "silent"
    EXCEPTION = "exception"
    GARBAGE = "garbage"
    BAD_CRC = "bad_crc"
    LATE = "late"
    INTERMITTENT = "intermittent"
    WRONG_UNIT = "wrong_unit"
    TRUNCATED = "truncated"
    OVERLONG = "overlong"
    LATE_ECHO = "late_echo"


#: Kinds that rewrite the reply frame (see :meth:`Fault.spoil`).
FRAME_KINDS = frozenset({FaultKind.WRONG_UNIT, FaultKind.TRUNCATED, FaultKind.OVERLONG})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault with its parameter.

    ``code`` is used by EXCEPTION, ``delay`` (seconds) by LATE, ``probability`` (of an
    answer) by INTERMITTENT, ``unit`` (the id the answer claims, ``None``: the next id) by
    WRONG_UNIT and ``size`` (bytes cut off or appended) by TRUNCATED and OVERLONG.
    """

    kind: FaultKind
    code: int = 4
    delay: float = 2.0
    probability: float = 0.5
    unit: int | None = None
    size: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.code <= 255:
            raise ValueError(f"exception code {self.code} outside 1..255")
        if self.delay < 0:
            raise ValueError(f"negative delay {self.delay}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} outside 0..1")
        if self.unit is not None and not 0 <= self.unit <= 255:
            raise ValueError(f"unit id {self.unit} outside 0..255")
        if self.size < 0:
            raise ValueError(f"negative size {self.size}")
        if self.size == 0 and self.kind in (FaultKind.TRUNCATED, FaultKind.OVERLONG):
            # The kind's default; a frozen dataclass sets it through object.__setattr__.
            default = 3 if self.kind is FaultKind.TRUNCATED else 4
            object.__setattr__(self, "size", default)

    @classmethod
    def parse(cls, text: str) -> Fault:
        """A fault from its string form, e.g. ``"exception:2"`` or ``"late:1.5"``."""
        name, _, arg = text.strip().partition(":")
        try:
            kind = FaultKind(name.strip().lower())
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault {text!r} (known: {known})") from None
        if not arg:
            if kind is FaultKind.EXCEPTION:
                raise ValueError("exception needs a code, e.g. 'exception:2'")
            return cls(kind)
        try:
            if kind is FaultKind.EXCEPTION:
                return cls(kind, code=int(arg, 0))
            if kind is FaultKind.LATE:
                return cls(kind, delay=float(arg))
            if kind is FaultKind.INTERMITTENT:
                return cls(kind, probability=float(arg))
            if kind is FaultKind.WRONG_UNIT:
                return cls(kind, unit=int(arg, 0))
            if kind in (FaultKind.TRUNCATED, FaultKind.OVERLONG):
                size = int(arg, 0)
                if size < 1:
                    raise ValueError(f"size {size} must be at least 1")
                return cls(kind, size=size)
        except ValueError as exc:
            raise ValueError(f"bad fault {text!r}: {exc}") from None
        raise ValueError(f"fault {kind.value!r} takes no argument")

    def __str__(self) -> str:
        if self.kind is FaultKind.EXCEPTION:
            return f"exception:{self.code}"
        if self.kind is FaultKind.LATE:
            return f"late:{self.delay:g}"
        if self.kind is FaultKind.INTERMITTENT:
            return f"intermittent:{self.probability:g}"
        if self.kind is FaultKind.WRONG_UNIT and self.unit is not None:
            return f"wrong_unit:{self.unit}"
        if self.kind in (FaultKind.TRUNCATED, FaultKind.OVERLONG):
            return f"{self.kind.value}:{self.size}"
        return self.kind.value

    def spoil(self, frame: bytes, rng: random.Random) -> bytes:
        """``frame`` (a valid RTU reply) as this fault sends it; unchanged for the kinds
        outside :data:`FRAME_KINDS`.

        * WRONG_UNIT: the same PDU from another unit id, with a valid CRC;
        * TRUNCATED: the first ``len - size`` bytes (at least one), never a valid frame;
        * OVERLONG: the frame followed by ``size`` random bytes, never a valid frame as a
          whole.
        """
        if not frame:
            return frame
        if self.kind is FaultKind.WRONG_UNIT:
            other = self.unit if self.unit is not None else frame[0] % 247 + 1
            return with_crc(bytes((other,)) + frame[1:-2])
        if self.kind is FaultKind.TRUNCATED:
            return _not_a_frame(frame[: max(1, len(frame) - self.size)])
        if self.kind is FaultKind.OVERLONG:
            return frame + _not_a_frame(frame + rng.randbytes(self.size))[len(frame) :]
        return frame


class FaultTable:
    """Faults by unit id, safe to change from any thread while a server or relay runs.

    ``rng`` drives the random parts (intermittent answers, garbage bytes); seed it for
    reproducible runs. Only one thread should draw from it at a time, which holds because
    each table belongs to one server or one relay.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self._faults: dict[int, Fault] = {}
        self._lock = threading.Lock()
        self.rng = random.Random(seed)
        self._held: bytes | None = None

    def set(self, unit: int, fault: Fault | str | None) -> None:
        """Switch ``unit`` into ``fault``; ``None`` makes it healthy again."""
        if fault is None:
            self.clear(unit)
            return
        parsed = Fault.parse(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._faults[unit] = parsed

    def get(self, unit: int) -> Fault | None:
        """The fault of ``unit``, or ``None`` if it is healthy."""
        with self._lock:
            return self._faults.get(unit)

    def clear(self, unit: int | None = None) -> None:
        """Heal ``unit``, or every unit when ``unit`` is ``None``."""
        with self._lock:
            if unit is None:
                self._faults.clear()
            else:
                self._faults.pop(unit, None)

    def snapshot(self) -> dict[int, Fault]:
        """A copy of the current faults by unit id."""
        with self._lock:
            return dict(self._faults)

    def answers(self, fault: Fault) -> bool:
        """Whether an INTERMITTENT unit answers this time (always true for other kinds)."""
        if fault.kind is not FaultKind.INTERMITTENT:
            return True
        return self.rng.random() < fault.probability

    def reply(self, fault: Fault, frame: bytes) -> bytes:
        """The bytes a unit in a frame-rewriting ``fault`` (:data:`FRAME_KINDS`) sends
        instead of the valid reply ``frame``."""
        return fault.spoil(frame, self.rng)

    def hold(self, frame: bytes) -> None:
        """Keep a LATE_ECHO reply back; a frame still held is replaced (it is lost)."""
        with self._lock:
            self._held = frame

    def take_held(self) -> bytes | None:
        """The held LATE_ECHO reply, once; ``None`` when nothing is held."""
        with self._lock:
            held, self._held = self._held, None
            return held


def _not_a_frame(data: bytes) -> bytes:
    """``data``, with its last byte flipped if it happens to end in a valid CRC."""
    if check_crc(data):
        return data[:-1] + bytes((data[-1] ^ 0xFF,))
    return data


def garbage_bytes(rng: random.Random, length: int) -> bytes:
    """``length`` random bytes (at least 4) that are guaranteed not to be a valid RTU frame."""
    data = bytearray(rng.randbytes(max(length, 4)))
    if check_crc(bytes(data)):
        # One in 65536 random strings carries a matching CRC by chance; spoil it.
        data[-1] ^= 0xFF
    return bytes(data)
