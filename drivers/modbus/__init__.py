"""The generic Modbus driver: reads any device described by a register map (a device
profile and/or points in the config), over Modbus RTU or TCP.

It is written as a third-party driver would be: it imports only the public driver API
(``swm_edge.driver``) and the pure Modbus codec and planner (``swm_edge.modbus``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, cast

from pydantic import BaseModel

from swm_edge.driver import (
    BusSpec,
    DataType,
    DeviceSpec,
    Driver,
    ModbusTransport,
    Point,
    PointSpec,
    PointValue,
    ReadError,
    Reason,
)
from swm_edge.modbus import ReadRequest, decode, plan_reads, poll_seconds, scale_value
from swm_edge.modbus.codec import block_structs, register_struct
from swm_edge.modbus.config import ModbusDevice

__all__ = ["ModbusDriver"]


class ModbusDriver(Driver):
    """Plans a device's points into block reads once, then decodes each poll."""

    bus_types: ClassVar[frozenset[str]] = frozenset({"modbus-rtu", "modbus-tcp"})
    profile_dirs: ClassVar[tuple[Path, ...]] = (Path(__file__).parent / "profiles",)

    device_model: ClassVar[type[BaseModel]] = ModbusDevice

    @classmethod
    def points_of(cls, options: BaseModel) -> tuple[Point, ...]:
        assert isinstance(options, ModbusDevice)
        return tuple(p.to_spec() for p in options.points)

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        if bus.type != "modbus-rtu":
            return None
        requests = cls._plan(device)
        return poll_seconds(
            requests,
            baudrate=bus.baudrate,
            parity=bus.parity,
            stopbits=bus.stopbits,
            bytesize=bus.bytesize,
            request_delay=max(device.request_delay, bus.request_delay),
        )

    @staticmethod
    def _plan(device: DeviceSpec) -> list[ReadRequest]:
        opts = device.options
        return plan_reads(
            [p for p in device.points if isinstance(p, PointSpec)],
            max_gap=opts.max_gap,
            max_registers=opts.max_registers,
            max_bits=opts.max_bits,
            single_point=opts.single_point_reads,
        )

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        self.unit: int = device.options.unit
        self.requests: list[ReadRequest] = self._plan(device)
        self._decoders = [_BlockDecoder(req) for req in self.requests]
        self.timeout = device.timeout

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """Run every planned request once; a failed request marks only its points bad.

        A timeout or a lost connection ends the poll early: the device is not there, and
        the line's time is worth more to the other devices than further timeouts.
        """
        # The bus type guarantees a ModbusTransport; a runtime Protocol check per poll would
        # cost more than the rest of a small poll.
        modbus = cast(ModbusTransport, transport)
        timeout = self.timeout if self.timeout is not None else 1.0
        values: dict[str, PointValue] = {}
        answered = False
        for i, (req, decoder) in enumerate(zip(self.requests, self._decoders, strict=True)):
            try:
                if decoder.is_bits:
                    data: list[Any] = list(
                        await modbus.read_bits(
                            self.unit, req.table, req.address, req.count, timeout=timeout
                        )
                    )
                else:
                    data = list(
                        await modbus.read_registers(
                            self.unit, req.table, req.address, req.count, timeout=timeout
                        )
                    )
            except ReadError as exc:
                if exc.retryable and not answered:
                    # Nothing answered yet: the whole device failed; let the core retry.
                    raise
                for point in req.points:
                    values[point.name] = PointValue.bad(exc.reason, point.unit)
                if exc.retryable:
                    for later in self.requests[i + 1 :]:
                        for point in later.points:
                            values[point.name] = PointValue.bad(exc.reason, point.unit)
                    break
                continue
            answered = True
            decoder.decode(data, values)
        return values


# Bound once: the block decoder's loop calls them for every point of every poll.
_good = PointValue.good
_isfinite = math.isfinite


class _BitPoint(NamedTuple):
    """How to read one point of a bit table from its response."""

    name: str
    unit: str | None
    position: int
    point: PointSpec


class _RegisterPoint(NamedTuple):
    """How to read one point of a register table from its response's images."""

    name: str
    unit: str | None
    unpack_from: Callable[[bytes, int], tuple[Any, ...]]
    swapped: bool  # reads the swapped image (see register_struct)
    position: int  # in bytes
    is_bool: bool
    scaled: bool
    scale: float
    offset: float


class _BlockDecoder:
    """Decodes the response to one planned request, all its points at once.

    Everything that depends only on the plan (each point's offset, struct, image and
    scaling) is worked out once here. Per poll, a register response is packed to bytes
    once and every point is unpacked from it. A response the fast path cannot take as it
    is (short, or holding a word that is not a 16-bit register, or a bit that is not a
    ``bool``) goes through :func:`_decode_point`, the reference, so its points get the same
    values and reasons either way.
    """

    __slots__ = ("_bits", "_plain", "_registers", "_request", "_swapped", "is_bits")

    def __init__(self, request: ReadRequest) -> None:
        self._request = request
        self.is_bits: bool = request.table.is_bits
        self._bits: tuple[_BitPoint, ...] = ()
        self._registers: tuple[_RegisterPoint, ...] = ()
        self._plain, swapped = block_structs(request.count)
        self._swapped: struct.Struct | None = None
        if self.is_bits:
            self._bits = tuple(
                _BitPoint(p.name, p.unit, request.offset(p), p) for p in request.points
            )
            return
        self._registers = tuple(_register_point(request, p) for p in request.points)
        # Most devices need no swapped image: pack it only when some point reads it.
        if any(r.swapped for r in self._registers):
            self._swapped = swapped

    def decode(self, data: Sequence[Any], values: dict[str, PointValue]) -> None:
        """Put the value of every point of the request, read from ``data``, into ``values``."""
        count = self._request.count
        if len(data) < count:
            self._decode_each(data, values)
        elif self.is_bits:
            self._decode_bits(data, values)
        else:
            # Words past ``count`` (from a stack that pads) belong to no point.
            self._decode_registers(data if len(data) == count else data[:count], values)

    def _decode_bits(self, data: Sequence[Any], values: dict[str, PointValue]) -> None:
        for name, unit, position, point in self._bits:
            bit = data[position]
            if bit is True or bit is False:
                values[name] = _good(bit, unit)
            else:
                values[name] = _decode_point(self._request, point, data)

    def _decode_registers(self, data: Sequence[Any], values: dict[str, PointValue]) -> None:
        try:
            plain = self._plain.pack(*data)
            swapped = plain if self._swapped is None else self._swapped.pack(*data)
        except struct.error:
            self._decode_each(data, values)
            return
        for (
            name,
            unit,
            unpack_from,
            from_swapped,
            position,
            is_bool,
            scaled,
            scale,
            offset,
        ) in self._registers:
            raw = unpack_from(swapped if from_swapped else plain, position)[0]
            if is_bool:
                value = raw != 0
            elif scaled:
                value = raw * scale + offset
            else:
                value = raw
            # NaN/inf, as read or from scaling, is no measurement: see _decode_point.
            if isinstance(value, float) and not _isfinite(value):
                values[name] = PointValue.bad(Reason.DECODE, unit)
            else:
                values[name] = _good(value, unit)

    def _decode_each(self, data: Sequence[Any], values: dict[str, PointValue]) -> None:
        for point in self._request.points:
            values[point.name] = _decode_point(self._request, point, data)


def _register_point(request: ReadRequest, point: PointSpec) -> _RegisterPoint:
    unpacker, swapped = register_struct(point)
    return _RegisterPoint(
        point.name,
        point.unit,
        unpacker.unpack_from,
        swapped,
        2 * request.offset(point),
        point.type is DataType.BOOL,
        not (point.scale == 1 and point.offset == 0),  # as scale_value decides
        point.scale,
        point.offset,
    )


def _decode_point(req: ReadRequest, point: Any, data: Sequence[Any]) -> PointValue:
    """One point the generic way: the reference for :class:`_BlockDecoder`."""
    try:
        raw = decode(point, req.slice(point, data))
    except ReadError as exc:
        return PointValue.bad(exc.reason, point.unit)
    if isinstance(raw, float) and not math.isfinite(raw):
        # NaN/inf is how many devices flag an inactive channel or an over-range; it is
        # not a measurement and JSON cannot carry it.
        return PointValue.bad(Reason.DECODE, point.unit)
    value = scale_value(point, raw)
    if isinstance(value, float) and not math.isfinite(value):
        return PointValue.bad(Reason.DECODE, point.unit)  # scaling overflowed: no measurement
    return PointValue.good(value, point.unit)
