"""Simulated wired M-Bus meters behind a pty pair, with fault injection.

::

    agent (pyserial) <-> port (pty slave) | pty master <-> simulator thread <-> meters

:class:`MbusSimulator` opens a pty pair with :func:`os.openpty`; the agent opens
:attr:`MbusSimulator.port` (optionally a stable symlink) as it would a USB M-Bus level
converter, and a thread answers on the master side as the meters on the bus would:

* ``SND_NKE`` to a primary address: ``E5``, and that meter starts again at its first
  telegram; to 253: the selected meter is deselected (and answers ``E5``); to 255: all
  meters reset, nobody answers;
* ``SND_UD`` to 253 with CI ``52``: selection by identification number with ``F``
  wildcards, manufacturer, version and medium (``FF``: any). One match answers ``E5``
  (selection also restarts its telegrams); several matches collide (garbage);
* ``REQ_UD2`` to a primary address or to 253 (the selected meter): a ``RSP_UD`` long
  frame. A meter with several telegrams ends all but its last with DIF ``1F``; a toggled
  FCB asks for the next telegram (after the last: the first), the same FCB repeats the
  last one, as EN 13757-2 has it.

A :class:`SimMeter` builds its records like the real water meters in
``shared/reference/devices.json`` (the layout of the Itron BM +m, ``ACW``, and the OMS
example frame): fabrication number, volume (litres, 32-bit), volume flow, date and time
(type F), error flags, due-date volume and date (storage 1), a tariff and a subunit
register, operating time and firmware version; optionally flow and return temperatures.
Its volume rises with its flow as time is :meth:`advanced <SimMeter.advance>` (or with
the wall clock, ``live=True``). :meth:`SimMeter.from_frame` replays a real telegram's
records instead.

Faults (:class:`MbusFault`), per meter, apply to its ``RSP_UD`` frames only (``silent``
also to its ``E5``): ``silent``, ``bad_checksum``, ``truncated`` (half the frame),
``garbage`` (random bytes that start no frame), ``bad_length`` (the two L fields
differ), ``bad_stop`` and ``bad_records`` (a valid frame whose first record uses a
reserved DIF, so no record can be read).

Needs no root and no socat. Run the module for a quick manual test::

    python -m swm_edge_hil.mbus --link /tmp/mbus0
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from swm_edge_drivers.mbus.frames import (
    ACK,
    ADDRESS_BROADCAST,
    ADDRESS_NETWORK,
    C_REQ_UD2,
    C_RSP_UD,
    C_SND_NKE,
    C_SND_UD,
    CI_SELECT,
    FCB,
    LONG_START,
    MAX_FRAME,
    SHORT_START,
    Frame,
    FrameKind,
    frame_size,
    long_frame,
    manufacturer_code,
    manufacturer_letters,
    parse_frame,
)
from swm_edge_hil.pty import PtyDevice

from swm_edge.driver import CrcError

__all__ = [
    "MbusFault",
    "MbusSimulator",
    "SimMeter",
    "encode_bcd",
    "encode_int",
    "encode_type_f",
    "encode_type_g",
    "record",
]

# REQ_UD1 (class 1 data: alarms); meters without alarms answer E5.
_C_REQ_UD1 = 0x5A
_CI_RSP_UD = 0x72
# A collision of several slaves' E5 on the bus, as a master sees it: no valid frame.
_COLLISION = b"\xfd\xe5"
# Starting bytes a garbage answer must not have, so it never looks like a frame.
_START_BYTES = frozenset({ACK, SHORT_START, LONG_START})


class MbusFault(StrEnum):
    """What a faulty meter does to its RSP_UD answers; see the module docstring."""

    SILENT = "silent"
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATED = "truncated"
    GARBAGE = "garbage"
    BAD_LENGTH = "bad_length"
    BAD_STOP = "bad_stop"
    BAD_RECORDS = "bad_records"


# --- record encoders (the inverse of swm_edge_drivers.mbus.records) ----------------------


def encode_bcd(value: int, size: int) -> bytes:
    """``value`` as ``2 * size`` BCD digits, least significant byte first; a negative
    value has ``F`` as its first digit."""
    digits = f"{abs(value):0{2 * size}d}"
    if len(digits) > 2 * size or (value < 0 and digits[0] != "0"):
        raise ValueError(f"{value} does not fit {2 * size} BCD digits")
    if value < 0:
        digits = "F" + digits[1:]
    return bytes.fromhex(digits)[::-1]


def encode_int(value: int, size: int, *, signed: bool = True) -> bytes:
    """``value`` as a little-endian integer of ``size`` bytes."""
    return value.to_bytes(size, "little", signed=signed)


def _year_bits(year: int) -> int:
    if not 1981 <= year <= 2080:
        raise ValueError(f"year {year} is outside the two-digit range 1981..2080")
    return year % 100


def encode_type_f(moment: dt.datetime, *, summer_time: bool = False) -> bytes:
    """Date and time type F (4 bytes, to the minute)."""
    y = _year_bits(moment.year)
    return bytes(
        (
            moment.minute,
            moment.hour | (0x80 if summer_time else 0),
            moment.day | ((y & 0x07) << 5),
            moment.month | ((y & 0x78) << 1),
        )
    )


def encode_type_g(day: dt.date) -> bytes:
    """Date type G (2 bytes)."""
    y = _year_bits(day.year)
    return bytes((day.day | ((y & 0x07) << 5), day.month | ((y & 0x78) << 1)))


def record(
    dif: int, vif: int, data: bytes, *, dife: Sequence[int] = (), vife: Sequence[int] = ()
) -> bytes:
    """One data record: DIF, DIFEs, VIF, VIFEs, data (extension bits as given)."""
    return bytes((dif, *dife, vif, *vife)) + data


# --- meters -----------------------------------------------------------------------------


@dataclass
class SimMeter:
    """One simulated meter. ``primary`` is its primary address (``None``: reachable only
    by secondary address); ``ident`` its 8-digit identification number.

    With ``records`` (one bytes object of user data per telegram) it replays those;
    otherwise it builds the water-meter layout of the module docstring from its state,
    split over ``telegrams`` telegrams.
    """

    ident: str
    primary: int | None = None
    manufacturer: str = "ACW"
    version: int = 0x14
    medium: int = 0x07
    volume_l: float = 54_321.0
    flow_lh: float = 500.0
    due_volume_l: int = 41_000
    due_date: dt.date = dt.date(2024, 12, 31)
    tariff2_volume_l: int = 1_234
    second_register_l: int = 777
    operating_days: int = 521
    firmware: int = 2
    flow_temperature: float | None = None
    return_temperature: float | None = None
    error_flags: int = 0
    status: int = 0
    clock: dt.datetime = dt.datetime(2025, 3, 13, 11, 11)
    telegrams: int = 1
    records: list[bytes] | None = None
    fault: MbusFault | None = None
    #: Telegram numbers (0-based) the fault applies to; ``None``: all of them.
    faulty_telegrams: frozenset[int] | None = None
    # Link state (touched by the simulator thread).
    access_number: int = 0
    selected: bool = False
    last_fcb: bool | None = None
    index: int = 0
    #: Requests this meter answered or ignored, for tests: "nke", "select", "req_ud2".
    seen: collections.Counter[str] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        if len(self.ident) != 8 or not self.ident.isdigit():
            raise ValueError(f"ident {self.ident!r} must be 8 digits")
        manufacturer_code(self.manufacturer)
        if self.primary is not None and not 0 <= self.primary <= 250:
            raise ValueError(f"primary address {self.primary} is outside 0..250")
        if self.telegrams < 1:
            raise ValueError("a meter has at least one telegram")

    @classmethod
    def from_frame(cls, frame: bytes, *, primary: int | None = None) -> SimMeter:
        """A meter that answers with the header and records of a real RSP_UD long frame
        (CI 0x72), e.g. one of ``shared/reference/devices.json``."""
        parsed = parse_frame(frame)
        if parsed.ci != _CI_RSP_UD or len(parsed.data) < 12:
            raise ValueError("not a RSP_UD with a long header (CI 0x72)")
        head = parsed.data
        return cls(
            ident=head[0:4][::-1].hex().upper(),
            primary=parsed.a if primary is None else primary,
            manufacturer=manufacturer_letters(int.from_bytes(head[4:6], "little")),
            version=head[6],
            medium=head[7],
            access_number=head[8],
            status=head[9],
            records=[bytes(head[12:])],
        )

    @property
    def selection_fields(self) -> tuple[str, str, int, int]:
        """Identification, manufacturer, version and medium, as a selection compares them."""
        return self.ident.upper(), self.manufacturer.upper(), self.version, self.medium

    @property
    def mute(self) -> bool:
        """Whether the meter answers nothing at all, not even ``E5``."""
        return self.fault is MbusFault.SILENT and self.faulty_telegrams is None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: the volume rises by the flow, the clock moves on."""
        self.volume_l += self.flow_lh * seconds / 3600.0
        self.clock += dt.timedelta(seconds=seconds)

    def reset_link(self) -> None:
        """SND_NKE (or a selection): start again with the first telegram."""
        self.last_fcb = None
        self.index = 0

    def _layout(self) -> list[bytes]:
        """The records of the water-meter layout, in telegram order."""
        out = [
            record(0x0C, 0x78, encode_bcd(int(self.ident), 4)),  # fabrication number
            record(0x04, 0x13, encode_int(int(self.volume_l), 4)),  # volume, 1 L
            record(0x02, 0x3B, encode_int(round(self.flow_lh), 2)),  # flow, 1 L/h
            record(0x04, 0x6D, encode_type_f(self.clock)),  # date and time
            record(0x01, 0xFD, encode_int(self.error_flags, 1, signed=False), vife=(0x17,)),
        ]
        if self.flow_temperature is not None:
            out.append(record(0x02, 0x5A, encode_int(round(self.flow_temperature * 10), 2)))
        if self.return_temperature is not None:
            out.append(record(0x02, 0x5E, encode_int(round(self.return_temperature * 10), 2)))
        out += [
            record(0x44, 0x13, encode_int(self.due_volume_l, 4)),  # storage 1 volume
            record(0x42, 0x6C, encode_type_g(self.due_date)),  # storage 1 date
            record(0x8C, 0x13, encode_bcd(self.tariff2_volume_l, 4), dife=(0x10,)),  # tariff 1
            record(0x84, 0x13, encode_int(self.second_register_l, 4), dife=(0x40,)),  # subunit 1
            record(0x02, 0x27, encode_int(self.operating_days, 2)),  # operating time, days
            record(0x09, 0xFD, encode_bcd(self.firmware, 1), vife=(0x0E,)),  # firmware
        ]
        return out

    def user_data(self) -> list[bytes]:
        """The records of every telegram (``1F`` ends all but the last)."""
        if self.records is not None:
            blocks = list(self.records)
        else:
            layout = self._layout()
            per = -(-len(layout) // self.telegrams)
            blocks = [b"".join(layout[i : i + per]) for i in range(0, len(layout), per)]
        return [block + (b"\x1f" if i < len(blocks) - 1 else b"") for i, block in enumerate(blocks)]

    def rsp_ud(self, index: int, address: int) -> bytes:
        """The RSP_UD long frame of telegram ``index`` sent from ``address``."""
        blocks = self.user_data()
        body = blocks[index % len(blocks)]
        self.access_number = (self.access_number + 1) & 0xFF
        header = (
            encode_bcd(int(self.ident), 4)
            + manufacturer_code(self.manufacturer).to_bytes(2, "little")
            + bytes((self.version, self.medium, self.access_number, self.status, 0, 0))
        )
        return long_frame(C_RSP_UD, address, _CI_RSP_UD, header + body)


def _matches(selection: bytes, meter: SimMeter) -> bool:
    ident = selection[0:4][::-1].hex().upper()
    man = int.from_bytes(selection[4:6], "little")
    version, medium = selection[6], selection[7]
    want_ident, want_man, want_version, want_medium = meter.selection_fields
    for digit, have in zip(ident, want_ident, strict=True):
        if digit != "F" and digit != have:
            return False
    if man != 0xFFFF and man != manufacturer_code(want_man):
        return False
    if version != 0xFF and version != want_version:
        return False
    return medium == 0xFF or medium == want_medium


# --- the bus ------------------------------------------------------------------------------


class MbusSimulator(PtyDevice):
    """Meters on one M-Bus line behind a pty; see the module docstring.

    Args:
        meters: the meters on the bus.
        link: if given, a symlink to the agent's side is kept there and is :attr:`port`.
        baudrate: if given, answers are paced to this line speed (``char_bits`` bits per
            byte; 11 for 8E1); default: as fast as the pty goes.
        live: advance every meter by the wall-clock time between requests.
        seed: seed of the random garbage.
    """

    def __init__(
        self,
        meters: Iterable[SimMeter],
        *,
        link: str | Path | None = None,
        baudrate: float | None = None,
        char_bits: int = 11,
        live: bool = False,
        seed: int = 0,
    ) -> None:
        self.meters = list(meters)
        primaries = [m.primary for m in self.meters if m.primary is not None]
        if len(primaries) != len(set(primaries)):
            raise ValueError(f"two meters share a primary address: {sorted(primaries)}")
        super().__init__(link=link, name="mbus-sim")
        self._char_time = char_bits / baudrate if baudrate else 0.0
        self._live = live
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._last_tick = time.monotonic()
        #: The last frames received from the master (raw bytes), newest last, for tests.
        self.requests: collections.deque[bytes] = collections.deque(maxlen=256)

    def meter(self, key: int | str) -> SimMeter:
        """The meter with this primary address (int) or identification number (str)."""
        for m in self.meters:
            if (isinstance(key, int) and m.primary == key) or (
                isinstance(key, str) and m.ident.upper() == key.upper()
            ):
                return m
        raise KeyError(f"no meter {key!r}")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for every meter (volumes rise, clocks move on)."""
        with self._lock:
            for m in self.meters:
                m.advance(seconds)

    def set_fault(self, key: int | str, fault: MbusFault | str | None) -> None:
        """Break (or, with ``None``, heal) the meter with this primary address or ident."""
        with self._lock:
            self.meter(key).fault = MbusFault(fault) if fault is not None else None

    # -- the reader thread (PtyDevice hooks) ---------------------------------------------

    def on_bytes(self, data: bytes, now: float) -> None:
        """Answer every complete master frame received so far."""
        self._buf += data
        with self._lock:
            self._frames()

    def _frames(self) -> None:
        """Take every complete master frame off the buffer and answer it."""
        while self._buf:
            try:
                size = frame_size(bytes(self._buf[:4]))
            except CrcError:
                del self._buf[0]  # noise: resynchronise on the next start byte
                continue
            if size is None or len(self._buf) < size:
                if len(self._buf) > 2 * MAX_FRAME:
                    self._buf.clear()  # bounded, whatever arrives
                return
            raw = bytes(self._buf[:size])
            del self._buf[:size]
            self.requests.append(raw)
            try:
                frame = parse_frame(raw)
            except CrcError:
                continue  # a slave ignores a frame it cannot check
            answer = self._answer(frame)
            if answer:
                self._send(answer)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._live:
            for m in self.meters:
                m.advance(now - self._last_tick)
        self._last_tick = now

    def _answer(self, frame: Frame) -> bytes | None:
        self._tick()
        if frame.kind is FrameKind.ACK:
            return None
        code, fcb = frame.c & ~FCB, bool(frame.c & FCB)
        if frame.kind is FrameKind.SHORT and code == C_SND_NKE:
            return self._nke(frame.a)
        if frame.kind is FrameKind.SHORT and code == (C_REQ_UD2 & ~FCB):
            return self._req_ud2(frame.a, fcb)
        if frame.kind is FrameKind.SHORT and code == _C_REQ_UD1:
            target = self._target(frame.a)
            return bytes((ACK,)) if target and not target.mute else None
        if frame.kind is FrameKind.LONG and code == C_SND_UD & ~FCB:
            if frame.a == ADDRESS_NETWORK and frame.ci == CI_SELECT and len(frame.data) == 8:
                return self._select(frame.data)
            target = self._target(frame.a)
            return bytes((ACK,)) if target and not target.mute else None
        return None

    def _target(self, address: int) -> SimMeter | None:
        if address == ADDRESS_NETWORK:
            chosen = [m for m in self.meters if m.selected]
            return chosen[0] if len(chosen) == 1 else None
        for m in self.meters:
            if m.primary == address:
                return m
        return None

    def _nke(self, address: int) -> bytes | None:
        if address == ADDRESS_BROADCAST:
            for m in self.meters:
                m.reset_link()
            return None
        if address == ADDRESS_NETWORK:
            chosen = [m for m in self.meters if m.selected]
            for m in chosen:
                m.selected = False
                m.reset_link()
                m.seen["nke"] += 1
            answering = [m for m in chosen if not m.mute]
            return bytes((ACK,)) if answering else None
        target = self._target(address)
        if target is None:
            return None
        target.seen["nke"] += 1
        target.reset_link()
        return None if target.mute else bytes((ACK,))

    def _select(self, selection: bytes) -> bytes | None:
        matched = []
        for m in self.meters:
            m.selected = _matches(selection, m)
            if m.selected:
                m.seen["select"] += 1
                m.reset_link()
                matched.append(m)
        answering = [m for m in matched if not m.mute]
        if not answering:
            return None
        return bytes((ACK,)) if len(answering) == 1 else _COLLISION

    def _req_ud2(self, address: int, fcb: bool) -> bytes | None:
        target = self._target(address)
        if target is None:
            return None
        target.seen["req_ud2"] += 1
        if target.last_fcb is not None and fcb != target.last_fcb:
            target.index = (target.index + 1) % len(target.user_data())
        target.last_fcb = fcb
        fault = target.fault
        if target.faulty_telegrams is not None and target.index not in target.faulty_telegrams:
            fault = None
        if fault is MbusFault.SILENT:
            return None
        sender = target.primary if target.primary is not None else 0
        return self._break(target.rsp_ud(target.index, sender), fault)

    def _break(self, frame: bytes, fault: MbusFault | None) -> bytes:
        if fault is None:
            return frame
        out = bytearray(frame)
        if fault is MbusFault.BAD_CHECKSUM:
            out[-2] = (out[-2] + 1) & 0xFF
        elif fault is MbusFault.TRUNCATED:
            del out[len(out) // 2 :]
        elif fault is MbusFault.GARBAGE:
            size = self._random.randint(5, 40)
            out = bytearray(self._random.randrange(256) for _ in range(size))
            while out[0] in _START_BYTES:
                out[0] = self._random.randrange(256)
        elif fault is MbusFault.BAD_LENGTH:
            out[2] = (out[2] + 1) & 0xFF
        elif fault is MbusFault.BAD_STOP:
            out[-1] = 0x17
        elif fault is MbusFault.BAD_RECORDS:
            # A reserved DIF (3F) as the first record: nothing after the header is
            # readable; the checksum is made right again, so the frame itself is valid.
            body = bytes(out[4:-2])
            body = body[:15] + b"\x3f" + body[15:]
            body = body[: MAX_FRAME - 6]
            out = bytearray(long_frame(body[0], body[1], body[2], body[3:]))
        return bytes(out)

    def _send(self, data: bytes) -> None:
        step = 16 if self._char_time else len(data)
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            if self._char_time:
                time.sleep(len(chunk) * self._char_time)
            if not self.write(chunk):
                return  # the answer is lost, as on a line


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m swm_edge_hil.mbus",
        description="Simulated M-Bus water meters behind a pty (primary 1, 2; secondary).",
    )
    parser.add_argument("--link", default=None, help="stable symlink for the agent's port")
    parser.add_argument("--line-speed", type=float, default=None, help="pace answers (baud)")
    args = parser.parse_args(argv)
    meters = [
        SimMeter("11490378", primary=1),
        SimMeter("12345678", primary=2, telegrams=2, flow_temperature=41.5),
        SimMeter("87654321", primary=None, manufacturer="EFE", medium=0x06),
    ]
    # SIGTERM ends the process through the with-block, so the link is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with MbusSimulator(meters, link=args.link, baudrate=args.line_speed, live=True) as sim:
        print(sim.port, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    _main()
