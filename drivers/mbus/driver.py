"""The wired M-Bus driver: one poll of one meter over the bus's serial port.

A poll is, with primary addressing::

    SND_NKE(a) -> E5            (unless reset: false)
    REQ_UD2(a, FCB=1) -> RSP_UD
    REQ_UD2(a, FCB=0) -> RSP_UD  while a telegram ends with DIF 1F, up to max_telegrams

and with secondary addressing the selection comes first and the requests go to 253::

    SND_NKE(253) -> E5 or nothing   (deselects everyone; unless reset: false)
    SND_UD(253, CI 52, id/manufacturer/version/medium) -> E5
    REQ_UD2(253, FCB=1) -> RSP_UD ...

Failures map to the core's reasons: nothing within the timeout is ``timeout``
(:class:`~swm_edge.driver.DeviceTimeout`); bytes that do not form a valid frame (checksum,
L fields, stop byte, truncation, garbage, an answer from another meter) are ``crc``
(:class:`~swm_edge.driver.CrcError`); a valid frame whose contents cannot be used is
``decode`` (:class:`~swm_edge.driver.DecodeError`). When the first answer already fails the
whole poll raises, so the core retries and backs off; when a later telegram of a
multi-telegram reply fails, the points found so far are good and the rest carry its reason.
A point whose record is absent, or whose value is invalid (e.g. an ``FF FF`` date), is bad
with ``decode``.

It imports only the public driver API and its own pure modules, as a third-party driver
would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel
from swm_edge_drivers.mbus.config import MbusDevice, MbusPoint, time_zone
from swm_edge_drivers.mbus.frames import (
    ADDRESS_NETWORK,
    MAX_FRAME,
    Frame,
    FrameKind,
    frame_size,
    is_rsp_ud,
    parse_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)
from swm_edge_drivers.mbus.records import (
    Function,
    Quantity,
    Record,
    Telegram,
    convert,
    decode_user_data,
)

from swm_edge.driver import (
    BusSpec,
    CrcError,
    DecodeError,
    DeviceSpec,
    DeviceTimeout,
    Driver,
    Point,
    PointValue,
    ReadError,
    Reason,
    SerialTransport,
)

__all__ = ["ANSWER_DELAY_SECONDS", "DEFAULT_TIMEOUT", "MbusDriver", "point_values"]

log = logging.getLogger(__name__)

#: Answer timeout when the device spec has none (the agent fills in the bus timeout).
DEFAULT_TIMEOUT = 1.0
#: Planning figure for a slave's turnaround in :meth:`MbusDriver.estimate_seconds`.
#: EN 13757-2 lets a slave answer 11 bit times to 330 bit times + 50 ms after a request.
ANSWER_DELAY_SECONDS = 0.05
# After a broken frame, bytes still arriving belong to it: they are read and dropped until
# the line has been quiet this long (or a bounded amount has been dropped).
_DRAIN_QUIET = 0.05
_DRAIN_MAX_BYTES = 4 * MAX_FRAME
# Bytes of the selection SND_UD: 68 L L 68 C A CI + 8 address bytes + CS 16.
_SELECT_BYTES = 17
_SHORT_BYTES = 5
# Quantities published as integers (counters, codes, bit fields); the rest are floats.
_INTEGER_QUANTITIES = frozenset(
    {
        Quantity.ERROR_FLAGS,
        Quantity.FABRICATION_NO,
        Quantity.HARDWARE_VERSION,
        Quantity.FIRMWARE_VERSION,
        Quantity.SOFTWARE_VERSION,
        Quantity.STATUS,
        Quantity.ACCESS_NUMBER,
    }
)


class MbusDriver(Driver):
    """Reads a wired M-Bus meter by primary or secondary address; see the module doc."""

    bus_types: ClassVar[frozenset[str]] = frozenset({"mbus"})
    device_model: ClassVar[type[BaseModel]] = MbusDevice
    discovers_points: ClassVar[bool] = True

    @classmethod
    def points_of(cls, options: BaseModel) -> tuple[Point, ...]:
        assert isinstance(options, MbusDevice)
        return tuple(options.points)

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        """Wire time of one poll: the frames of the reset, the selection and one REQ_UD2
        with its answer counted at the largest frame size (261 bytes), each byte
        ``1 + bytesize + parity + stopbits`` bits (11 for 8E1), plus
        :data:`ANSWER_DELAY_SECONDS` and the request delay per request.

        The answer's size is not known before the meter sends it, so the figure is an
        upper bound for a single-telegram meter; each further telegram of a
        multi-telegram meter costs up to the same again.
        """
        opts = device.options
        if bus.type != "mbus" or bus.baudrate <= 0 or not isinstance(opts, MbusDevice):
            return None
        bits = 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits
        char = bits / bus.baudrate
        exchanges: list[tuple[int, int]] = []  # (request bytes, answer bytes)
        if opts.reset:
            exchanges.append((_SHORT_BYTES, 1))
        if opts.selection is not None:
            exchanges.append((_SELECT_BYTES, 1))
        exchanges.append((_SHORT_BYTES, MAX_FRAME))
        pause = max(device.request_delay, bus.request_delay)
        return sum(
            (sent + answer) * char + ANSWER_DELAY_SECONDS + pause for sent, answer in exchanges
        )

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        opts = device.options
        if not isinstance(opts, MbusDevice):
            raise TypeError(f"device {device.id!r}: options must be an MbusDevice, not {opts!r}")
        self.options: MbusDevice = opts
        self.points: tuple[MbusPoint, ...] = opts.points
        self.timeout = device.timeout if device.timeout is not None else DEFAULT_TIMEOUT
        self.zone = time_zone(opts.timezone)
        # Without a reset before each poll the frame count bit carries on from poll to poll.
        self._fcb = False

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """One poll: reset, select, read every telegram, and pick the points' records
        (without configured points: every record, see :func:`auto_points`)."""
        if not isinstance(transport, SerialTransport):
            raise TypeError("the M-Bus driver needs a SerialTransport (a bus of type mbus)")
        telegrams, failure = await self._poll(transport)
        points = self.points
        if not points:
            if not telegrams:
                raise failure or DecodeError("no telegram")
            points = auto_points(telegrams)
        return point_values(points, telegrams, self.zone, failure)

    # --- link layer ---------------------------------------------------------------------

    async def _send(self, t: SerialTransport, frame: bytes) -> None:
        # Anything queued now is stale (a late answer, line noise) and would be taken as
        # the start of this request's answer.
        await t.reset_input()
        await t.write(frame)

    async def _read_exact(self, t: SerialTransport, size: int) -> bytes:
        """``size`` bytes, or fewer when the line goes quiet for a whole timeout; at a slow
        baud rate a long frame takes longer than the timeout, so this waits as long as
        bytes keep coming."""
        buf = bytearray()
        while len(buf) < size:
            chunk = await t.read(size - len(buf), timeout=self.timeout)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def _drain(self, t: SerialTransport) -> None:
        dropped = 0
        while dropped < _DRAIN_MAX_BYTES:
            chunk = await t.read(MAX_FRAME, timeout=_DRAIN_QUIET)
            if not chunk:
                break
            dropped += len(chunk)
        await t.reset_input()

    async def _receive(self, t: SerialTransport, what: str) -> Frame:
        """One frame: an ack, a short or a long frame.

        Raises:
            DeviceTimeout: nothing arrived.
            CrcError: bytes arrived that are not one valid frame.
        """
        first = await t.read(1, timeout=self.timeout)
        if not first:
            raise DeviceTimeout(f"no answer to {what} within {self.timeout:g} s")
        try:
            head = first
            size = frame_size(head)
            if size is None:
                head += await self._read_exact(t, 3)
                size = frame_size(head)
                if size is None:
                    raise CrcError(f"answer to {what} broke off after {len(head)} bytes")
            raw = head + await self._read_exact(t, size - len(head))
            return parse_frame(raw)
        except CrcError as exc:
            await self._drain(t)
            raise CrcError(f"answer to {what}: {exc}") from None

    async def _ack(self, t: SerialTransport, what: str) -> None:
        frame = await self._receive(t, what)
        if frame.kind is not FrameKind.ACK:
            raise CrcError(f"answer to {what} is a {frame.kind} frame, not E5")

    async def _poll(self, t: SerialTransport) -> tuple[list[Telegram], ReadError | None]:
        opts = self.options
        selection = opts.selection
        if selection is not None:
            address = ADDRESS_NETWORK
            if opts.reset:
                await self._send(t, snd_nke(ADDRESS_NETWORK))
                # Only a slave that was selected answers; silence is as good as E5.
                with contextlib.suppress(DeviceTimeout, CrcError):
                    await self._ack(t, "SND_NKE to 253")
            await self._send(t, select_secondary(selection))
            await self._ack(t, f"the selection of {selection.ident}")
        else:
            assert opts.address is not None
            address = opts.address
            if opts.reset:
                await self._send(t, snd_nke(address))
                await self._ack(t, f"SND_NKE to {address}")
        # After SND_NKE (or a selection) the first request has FCB set; each next one
        # toggles it, which asks the slave for its next telegram.
        fcb = True if opts.reset else not self._fcb
        telegrams: list[Telegram] = []
        for _ in range(opts.max_telegrams):
            try:
                self._fcb = fcb
                telegrams.append(await self._request(t, address, fcb))
            except ReadError as exc:
                if not telegrams:
                    raise
                log.debug("%s: telegram %d failed: %s", self.device.id, len(telegrams) + 1, exc)
                return telegrams, exc
            if not telegrams[-1].more:
                break
            fcb = not fcb
        else:
            log.debug(
                "%s: still more records after %d telegrams (max_telegrams)",
                self.device.id,
                len(telegrams),
            )
        return telegrams, None

    async def _request(self, t: SerialTransport, address: int, fcb: bool) -> Telegram:
        await self._send(t, req_ud2(address, fcb))
        frame = await self._receive(t, f"REQ_UD2 to {address}")
        if frame.kind is FrameKind.ACK or not is_rsp_ud(frame) or frame.ci is None:
            raise DecodeError(
                f"answer to REQ_UD2 is a {frame.kind} frame with C=0x{frame.c:02X}, not RSP_UD"
            )
        if address != ADDRESS_NETWORK and frame.a != address:
            raise CrcError(f"RSP_UD from address {frame.a}, asked {address}")
        telegram = decode_user_data(frame.ci, frame.data)
        selection = self.options.selection
        header = telegram.header
        if (
            selection is not None
            and header.ident is not None
            and not selection.matches(
                header.ident, header.manufacturer, header.version, header.medium
            )
        ):
            raise CrcError(
                f"RSP_UD from meter {header.ident} ({header.manufacturer}), "
                f"selected {selection.ident}"
            )
        if telegram.error is not None:
            log.debug("%s: records cut short: %s", self.device.id, telegram.error)
        return telegram


_FUNCTION_SUFFIX = {
    Function.INSTANTANEOUS: "",
    Function.MAXIMUM: "_max",
    Function.MINIMUM: "_min",
    Function.ERROR: "_error",
}


def auto_points(telegrams: Sequence[Telegram]) -> tuple[MbusPoint, ...]:
    """A point for every record of the telegrams, for a device configured without points.

    Named by quantity, with ``_storageN``, ``_tariffN``, ``_subunitN`` when non-zero, the
    function (``_max``, ``_min``, ``_error``) and unapplied VIF extensions (``_x3b``), in
    the quantity's base unit (canonical: m3, m3/h, Cel, ...). Records no quantity fits
    (manufacturer-specific, plain text) are left out; a name seen twice gets ``_2``, ``_3``.
    """
    points: list[MbusPoint] = []
    seen: dict[str, int] = {}
    for telegram in telegrams:
        for record in telegram.records:
            if record.quantity is None or record.quantity.in_header:
                continue
            name = record.quantity.value
            for label, number in (
                ("storage", record.storage),
                ("tariff", record.tariff),
                ("subunit", record.subunit),
            ):
                if number:
                    name += f"_{label}{number}"
            name += _FUNCTION_SUFFIX[record.function]
            name += "".join(f"_x{code:02x}" for code in record.extensions)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name += f"_{seen[name]}"
            points.append(
                MbusPoint(
                    name=name,
                    quantity=record.quantity,
                    storage=record.storage,
                    tariff=record.tariff,
                    subunit=record.subunit,
                    function=record.function,
                    vife=record.extensions,
                )
            )
    return tuple(points)


def point_values(
    points: Iterable[MbusPoint],
    telegrams: Sequence[Telegram],
    zone: dt.tzinfo = dt.UTC,
    failure: ReadError | None = None,
) -> dict[str, PointValue]:
    """Each point's value from the decoded telegrams of one poll.

    Args:
        zone: time zone of the meter's clock, for date and time records.
        failure: why the telegrams stopped early, if they did: the reason of the points
            whose record is missing (else ``decode``).
    """
    return {p.name: _point_value(p, telegrams, zone, failure) for p in points}


def _point_value(
    point: MbusPoint, telegrams: Sequence[Telegram], zone: dt.tzinfo, failure: ReadError | None
) -> PointValue:
    unit = point.unit
    if point.quantity.in_header:
        if not telegrams:
            return PointValue.bad(failure.reason if failure else Reason.DECODE, unit)
        header = telegrams[0].header
        raw = header.status if point.quantity is Quantity.STATUS else header.access_number
        if raw is None:
            return PointValue.bad(Reason.DECODE, unit)
        return PointValue.good(raw, unit)
    record = _find(point, telegrams)
    if record is None:
        # Absent: perhaps in a telegram that failed, else the meter does not send it.
        return PointValue.bad(failure.reason if failure else Reason.DECODE, unit)
    value = record.value
    if point.quantity in (Quantity.DATE, Quantity.DATETIME):
        if not isinstance(value, dt.date):
            return PointValue.bad(Reason.DECODE, unit)
        return PointValue.good(_unix_seconds(value, record.summer_time, zone), unit)
    if not isinstance(value, Decimal) or not value.is_finite():
        return PointValue.bad(Reason.DECODE, unit)
    assert unit is not None  # filled in by MbusPoint
    converted = convert(value, point.quantity, unit)
    if point.quantity in _INTEGER_QUANTITIES:
        if converted != converted.to_integral_value():
            return PointValue.bad(Reason.DECODE, unit)
        return PointValue.good(int(converted), unit)
    return PointValue.good(float(converted), unit)


def _find(point: MbusPoint, telegrams: Sequence[Telegram]) -> Record | None:
    """The first record the point selects, in telegram order."""
    vife = tuple(code & 0x7F for code in point.vife)
    for telegram in telegrams:
        for record in telegram.records:
            if (
                record.quantity is point.quantity
                and record.function is point.function
                and record.storage == point.storage
                and record.tariff == point.tariff
                and record.subunit == point.subunit
                and record.extensions == vife
            ):
                return record
    return None


def _unix_seconds(value: dt.date, summer_time: bool, zone: dt.tzinfo) -> int:
    """A meter's local date (midnight) or date and time as Unix seconds.

    The summer-time flag picks the first of the two instants of an ambiguous local time
    (the hour repeated when clocks go back).
    """
    if isinstance(value, dt.datetime):
        local = value
    else:
        local = dt.datetime(value.year, value.month, value.day)
    aware = local.replace(tzinfo=zone, fold=0 if summer_time else 1)
    return int(aware.timestamp())
