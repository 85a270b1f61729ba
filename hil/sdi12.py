"""Simulated SDI-12 sensors on a simulated SDI-12 data line (a pty pair).

::

    agent: SerialTransport -> Sdi12Line.port | pty | relay thread -> sensors by address

:class:`SimulatedSdi12Sensor` is one SDI-12 v1.4 sensor: by default a multi-parameter
water-quality sonde (temperature, pH, conductivity, dissolved oxygen, turbidity, depth)
whose values drift slowly with noise. It answers ``a!``, ``aI!``, ``aM!``/``aMC!`` (with a
service request when the values are ready), ``aC!``/``aCC!``, ``aD0!``..``aD9!`` (values
paged by the standard's 35/75-character limits), ``aR0!``..``aR9!``/``aRC0!``.., and the
additional measurements ``aM1!``.. for the sets it has (``a0000`` for those it has not).

:class:`Sdi12Line` puts any number of sensors (distinct addresses) behind one pty pair: the
agent opens :attr:`Sdi12Line.port`, a thread reads the master side, splits the byte
stream into commands at ``!`` and answers as the addressed sensor would. ``?!`` is answered
by every healthy sensor; with several, the answers collide into a garbled line.

Limits of the imitation, so tests do not read more into it:

* A pty cannot carry a break (the agent's break ioctls are accepted and do nothing), so
  sensors answer commands whether or not a break came first; the driver's break timing is
  not tested here. Likewise there is no 1200-baud pacing and no 15 ms turnaround: answers
  come at once.
* An ``M`` measurement is aborted by the next command to its sensor if its values are not
  ready yet (the standard aborts it on a break, which cannot be seen here); ``aD0!`` then
  gets ``a<CR><LF>``. Concurrent measurements are aborted the same way.

Faults per address (:meth:`Sdi12Line.set_fault`, strings as in ``"slow:2"``):

``silent``          no answer to anything, no service request
``malformed``       data lines (D, R) lose the signs of their values (``0 3.14 2.7``); a
                    requested CRC is computed over the malformed line, so it matches
``bad_crc``         data lines with a CRC carry a wrong one (lines without CRC are intact)
``slow[:<s>]``      measurements take ``s`` seconds (default 2) longer than announced: the
                    service request comes late, and data asked for before it is missing
``wrong_address``   every answer carries another sensor's address
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from swm_edge_drivers.sdi12.protocol import (
    ADDRESSES,
    MAX_VALUES_CHARS,
    MAX_VALUES_CHARS_LONG,
    crc_chars,
    format_value,
)
from swm_edge_hil.pty import PtyDevice

__all__ = [
    "SONDE_PARAMETERS",
    "Parameter",
    "Sdi12Fault",
    "Sdi12Line",
    "SimulatedSdi12Sensor",
]


class Sdi12Fault(StrEnum):
    """Faults of one simulated sensor; see the module docstring."""

    SILENT = "silent"
    MALFORMED = "malformed"
    BAD_CRC = "bad_crc"
    SLOW = "slow"
    WRONG_ADDRESS = "wrong_address"


@dataclass(frozen=True, slots=True)
class Parameter:
    """One measured quantity: a daily-ish sine around ``mean`` plus noise, never below
    ``minimum``, sent with ``decimals`` places."""

    name: str
    unit: str
    mean: float
    amplitude: float
    noise: float
    decimals: int
    period: float = 3600.0
    minimum: float | None = None


#: The multi-parameter sonde: what a river or reservoir station measures.
SONDE_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("temperature", "Cel", 12.0, 2.0, 0.05, 2, period=7200.0),
    Parameter("ph", "pH", 7.2, 0.15, 0.01, 2),
    Parameter("conductivity", "uS/cm", 450.0, 40.0, 1.5, 1, minimum=0.0),
    Parameter("dissolved_oxygen", "mg/L", 8.5, 0.6, 0.05, 2, minimum=0.0),
    Parameter("turbidity", "NTU", 3.0, 1.5, 0.3, 2, minimum=0.0),
    Parameter("depth", "m", 2.4, 0.2, 0.005, 3, period=5400.0, minimum=0.0),
)

_CRLF = "\r\n"
_COMMAND_BUFFER = 64  # bytes kept while waiting for a "!"; commands are a few characters


@dataclass
class _Measurement:
    """A measurement in progress or finished: its values as they will be sent, paged."""

    crc: bool
    pages: list[list[str]]
    ready_at: float
    aborted: bool = False


@dataclass
class _Outgoing:
    """What a sensor sends: ``text`` now, and lines due later (service requests)."""

    text: str | None
    later: list[tuple[float, Callable[[], str | None]]] = field(default_factory=list)


class SimulatedSdi12Sensor:
    """One SDI-12 sensor at ``address``.

    Args:
        address: its address (``0``-``9``, ``A``-``Z``, ``a``-``z``).
        parameters: what ``M``/``C``/``R0`` return, in order.
        additional: measurement sets for ``M1``..``M9``/``C1``..``C9``/``R1``..``R9``.
        ttt: seconds announced in ``atttn``; keep small in tests (a ``C`` measurement makes
            the recorder wait all of it).
        ready_after: seconds the measurement really takes (at most ``ttt``); an ``M``
            measurement sends its service request then.
        values_per_page: most values per data page; the standard's limit is in characters
            (35 after ``M``, 75 after ``C``), some sensors send fewer (the Aqua TROLL 400
            at most 3).
        service_requests: ``False`` makes a non-compliant sensor that never sends one (the
            standard's example d): the recorder has to wait the announced time.
        seed: for the noise, so runs are reproducible.
    """

    def __init__(
        self,
        address: str,
        parameters: Sequence[Parameter] = SONDE_PARAMETERS,
        *,
        additional: Mapping[int, Sequence[Parameter]] | None = None,
        ttt: int = 1,
        ready_after: float = 0.05,
        values_per_page: int | None = None,
        service_requests: bool = True,
        vendor: str = "SWMEDGE",
        model: str = "SONDE6",
        version: str = "100",
        serial: str = "SIM0001",
        seed: int = 0,
    ) -> None:
        if len(address) != 1 or address not in ADDRESSES:
            raise ValueError(f"invalid SDI-12 address {address!r}")
        if not 0 <= ttt <= 999:
            raise ValueError("ttt must be 0..999 seconds")
        self.address = address
        self.sets: dict[int, tuple[Parameter, ...]] = {0: tuple(parameters)}
        for number, params in (additional or {}).items():
            if not 1 <= number <= 9:
                raise ValueError(f"additional measurement {number} outside 1..9")
            self.sets[number] = tuple(params)
        self.ttt = ttt
        self.ready_after = min(ready_after, float(ttt))
        self.values_per_page = values_per_page
        self.service_requests = service_requests
        self.identification = (
            f"14{vendor:<8.8}{model:<6.6}{version:>3.3}{serial[:13]}"  # "allccccccccmmmmmmvvvxxx"
        )
        self.fault: Sdi12Fault | None = None
        self.slow_delay = 2.0
        self._rng = random.Random(seed)
        self._current: _Measurement | None = None
        self._lock = threading.Lock()
        #: The latest value (as sent, i.e. rounded) of each parameter by name, over every
        #: measurement set: what a correct recorder must report.
        self.last_values: dict[str, float] = {}
        #: Commands received (answered or not, e.g. while silent), by body (``M``, ``D0``,
        #: ``CC``, ...).
        self.commands: Counter[str] = Counter()

    # -- values ------------------------------------------------------------------------

    def sample(self, number: int = 0, now: float | None = None) -> tuple[float, ...]:
        """Take measurement set ``number`` now; returns the values as they will be sent."""
        t = time.time() if now is None else now
        params = self.sets[number]
        out = []
        for p in params:
            value = p.mean + p.amplitude * math.sin(2 * math.pi * t / p.period)
            value += self._rng.gauss(0.0, p.noise)
            if p.minimum is not None:
                value = max(value, p.minimum)
            out.append(float(format_value(value, p.decimals)))
        with self._lock:
            self.last_values.update(zip((p.name for p in params), out, strict=True))
        return tuple(out)

    def _texts(self, number: int, values: tuple[float, ...]) -> list[str]:
        return [format_value(v, p.decimals) for p, v in zip(self.sets[number], values, strict=True)]

    def _pages(self, texts: list[str], limit: int) -> list[list[str]]:
        pages: list[list[str]] = [[]]
        for text in texts:
            page = pages[-1]
            full = sum(map(len, page)) + len(text) > limit
            full = full or (self.values_per_page is not None and len(page) >= self.values_per_page)
            if page and full:
                pages.append([])
            pages[-1].append(text)
        return pages

    # -- commands ------------------------------------------------------------------------

    def handle(self, body: str, now: float) -> _Outgoing:
        """The answer to command ``body`` (without address and ``!``) received at ``now``."""
        self.commands[body] += 1
        fault = self.fault
        if fault is Sdi12Fault.SILENT:
            return _Outgoing(None)
        out = self._answer(body, now, fault)
        if out.text is not None:
            out.text = self._spoil(out.text, fault)
        return out

    def _answer(self, body: str, now: float, fault: Sdi12Fault | None) -> _Outgoing:
        a = self.address
        current = self._current
        if current is not None and now < current.ready_at and not body.startswith("D"):
            current.aborted = True  # a new command to this sensor ends the measurement
        if body == "":
            return _Outgoing(a)
        if body == "I":
            return _Outgoing(a + self.identification)
        kind, rest = body[0], body[1:]
        crc = rest.startswith("C") and kind in "MCR"
        if crc:
            rest = rest[1:]
        if kind in "MC" and (rest == "" or (len(rest) == 1 and rest in "123456789")):
            return self._start(kind, int(rest or 0), crc, now, fault)
        if kind == "D" and len(rest) == 1 and rest.isdigit():
            return _Outgoing(self._data(int(rest), now))
        if kind == "R" and len(rest) == 1 and rest.isdigit():
            number = int(rest)
            if number not in self.sets:
                return _Outgoing(self._line(a, crc))  # no continuous measurement there
            texts = self._texts(number, self.sample(number))
            return _Outgoing(self._line(a + "".join(texts[: self._fit(texts)]), crc))
        return _Outgoing(None)  # sensors ignore commands they do not know

    def _fit(self, texts: list[str]) -> int:
        """How many values fit in one 75-character continuous response."""
        used = 0
        for i, text in enumerate(texts):
            used += len(text)
            if used > MAX_VALUES_CHARS_LONG:
                return i
        return len(texts)

    def _start(
        self, kind: str, number: int, crc: bool, now: float, fault: Sdi12Fault | None
    ) -> _Outgoing:
        a = self.address
        if number not in self.sets:
            # As the Aqua TROLL 400 does: no such measurement, zero values.
            return _Outgoing(f"{a}0000" if kind == "M" else f"{a}00000")
        limit = MAX_VALUES_CHARS if kind == "M" else MAX_VALUES_CHARS_LONG
        values = self.sample(number)
        count = min(len(values), 9 if kind == "M" else 99)
        texts = self._texts(number, values)[:count]
        delay = self.ready_after if self.ttt else 0.0
        if fault is Sdi12Fault.SLOW:
            delay = self.ttt + self.slow_delay
        m = _Measurement(crc, self._pages(texts, limit), now + delay)
        self._current = m
        answer = f"{a}{self.ttt:03d}{count}" if kind == "M" else f"{a}{self.ttt:03d}{count:02d}"
        out = _Outgoing(answer)
        if kind == "M" and self.ttt > 0 and self.service_requests:

            def service_request() -> str | None:
                if m.aborted or self._current is not m or self.fault is Sdi12Fault.SILENT:
                    return None
                return self._spoil(a, self.fault)

            out.later.append((m.ready_at, service_request))
        return out

    def _data(self, page: int, now: float) -> str:
        a = self.address
        m = self._current
        if m is None:
            return a
        if m.aborted or now < m.ready_at:
            m.aborted = True
            return self._line(a, m.crc)
        values = "".join(m.pages[page]) if page < len(m.pages) else ""
        return self._line(a + values, m.crc)

    @staticmethod
    def _line(text: str, crc: bool) -> str:
        return text + crc_chars(text.encode("ascii")).decode("ascii") if crc else text

    def _spoil(self, text: str, fault: Sdi12Fault | None) -> str:
        if fault is Sdi12Fault.WRONG_ADDRESS:
            # An address unlikely to be on the line: answering as a real neighbour would
            # also spoil the neighbour's polls, which is another fault.
            return ("z" if self.address != "z" else "y") + text[1:]
        is_data = len(text) > 1 and text[1] in "+-"
        if fault is Sdi12Fault.MALFORMED and is_data:
            crc = _has_crc(text)
            body = text[:-3] if crc else text
            body = body.replace("+", " ").replace("-", " ")
            return self._line(body, crc)
        if fault is Sdi12Fault.BAD_CRC and is_data and _has_crc(text):
            return text[:-1] + chr(ord(text[-1]) ^ 0x01)
        return text


def _has_crc(text: str) -> bool:
    """Whether ``text`` ends in a CRC that matches it. Exact for data lines: their last
    characters without CRC are digits, signs or points, never CRC characters (0x40-0x7F)."""
    return len(text) > 3 and crc_chars(text[:-3].encode("ascii")).decode("ascii") == text[-3:]


class Sdi12Line(PtyDevice):
    """Simulated SDI-12 sensors behind one pty pair.

    Args:
        sensors: the sensors on the line (distinct addresses).
        echo: pass every command back before the answer, as single-wire adapters do.
        link: if given, a symlink to the agent side is made at this path and :attr:`port`
            is that path.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        sensors: Iterable[SimulatedSdi12Sensor],
        *,
        echo: bool = False,
        link: str | Path | None = None,
    ) -> None:
        self.sensors: dict[str, SimulatedSdi12Sensor] = {}
        for sensor in sensors:
            if sensor.address in self.sensors:
                raise ValueError(f"two sensors at address {sensor.address!r}")
            self.sensors[sensor.address] = sensor
        self.echo = echo
        super().__init__(link=link, name="sdi12-line")
        self._buf = bytearray()
        self._due: list[tuple[float, int, Callable[[], str | None]]] = []
        self._seq = itertools.count()
        self._due_lock = threading.Lock()
        #: The last chunks on the line: ``("to_sensor" | "to_agent", bytes)``.
        self.trace: deque[tuple[str, bytes]] = deque(maxlen=256)

    def set_fault(self, address: str, fault: Sdi12Fault | str | None) -> None:
        """Switch the sensor at ``address`` into ``fault`` (e.g. ``"slow:1.5"``); ``None``
        heals it."""
        sensor = self.sensors[address]
        if fault is None:
            sensor.fault = None
            return
        name, _, arg = str(fault).partition(":")
        kind = Sdi12Fault(name)
        if arg:
            if kind is not Sdi12Fault.SLOW:
                raise ValueError(f"fault {kind.value!r} takes no argument")
            sensor.slow_delay = float(arg)
        sensor.fault = kind

    # -- the reader thread (PtyDevice hooks) ---------------------------------------------

    def on_bytes(self, data: bytes, now: float) -> None:
        """Answer every complete command received so far."""
        self.trace.append(("to_sensor", data))
        self._received(data, now)

    def on_idle(self, now: float) -> float | None:
        """Send the service requests that are due; wait until the next one."""
        self._send_due()
        with self._due_lock:
            return max(0.0, self._due[0][0] - time.monotonic()) if self._due else None

    def _received(self, data: bytes, now: float) -> None:
        self._buf += data
        while (end := self._buf.find(b"!")) >= 0:
            raw = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            if self.echo:
                self._write(raw)
            # NULs and line ends are what a break or a terminal leave behind, not commands.
            text = raw.decode("ascii", "replace").lstrip("\0\r\n ")
            self._command(text[:-1], now)
        if len(self._buf) > _COMMAND_BUFFER:
            del self._buf[:-_COMMAND_BUFFER]

    def _command(self, text: str, now: float) -> None:
        if not text:
            return
        address, body = text[0], text[1:]
        if address == "?" and body == "":
            answers = [s.handle("", now).text for s in self.sensors.values()]
            heard = [a for a in answers if a is not None]
            if len(heard) == 1:
                self._write((heard[0] + _CRLF).encode("ascii"))
            elif heard:
                self._write(b"\x1f?" + _CRLF.encode("ascii"))  # colliding answers
            return
        sensor = self.sensors.get(address)
        if sensor is None:
            return
        out = sensor.handle(body, now)
        if out.text is not None:
            self._write((out.text + _CRLF).encode("ascii"))
        with self._due_lock:
            for at, line in out.later:
                heapq.heappush(self._due, (at, next(self._seq), line))

    def _send_due(self) -> None:
        now = time.monotonic()
        while True:
            with self._due_lock:
                if not self._due or self._due[0][0] > now:
                    return
                _, _, line = heapq.heappop(self._due)
            text = line()
            if text is not None:
                self._write((text + _CRLF).encode("ascii"))

    def _write(self, data: bytes) -> None:
        self.trace.append(("to_agent", data))
        self.write(data)
