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
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import StrEnum

from swm_edge_hil.rtu import check_crc

__all__ = ["Fault", "FaultKind", "FaultTable", "garbage_bytes"]


class FaultKind(StrEnum):
    """The kinds of fault; see the module docstring."""

    SILENT = "silent"
    EXCEPTION = "exception"
    GARBAGE = "garbage"
    BAD_CRC = "bad_crc"
    LATE = "late"
    INTERMITTENT = "intermittent"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault with its parameter.

    ``code`` is used by EXCEPTION, ``delay`` (seconds) by LATE and ``probability`` (of an
    answer) by INTERMITTENT.
    """

    kind: FaultKind
    code: int = 4
    delay: float = 2.0
    probability: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.code <= 255:
            raise ValueError(f"exception code {self.code} outside 1..255")
        if self.delay < 0:
            raise ValueError(f"negative delay {self.delay}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} outside 0..1")

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
        return self.kind.value


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


def garbage_bytes(rng: random.Random, length: int) -> bytes:
    """``length`` random bytes (at least 4) that are guaranteed not to be a valid RTU frame."""
    data = bytearray(rng.randbytes(max(length, 4)))
    if check_crc(bytes(data)):
        # One in 65536 random strings carries a matching CRC by chance; spoil it.
        data[-1] ^= 0xFF
    return bytes(data)
