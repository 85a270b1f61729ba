"""The generic Modbus driver: reads any device described by a register map (a device
profile and/or points in the config), over Modbus RTU or TCP.

It is written as a third-party driver would be: it imports only the public driver API
(``swm_edge.driver``) and the pure Modbus codec and planner (``swm_edge.modbus``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, cast

from pydantic import BaseModel

from swm_edge.driver import (
    BusSpec,
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
        for i, req in enumerate(self.requests):
            try:
                if req.table.is_bits:
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
            for point in req.points:
                values[point.name] = _decode_point(req, point, data)
        return values


def _decode_point(req: ReadRequest, point: Any, data: list[Any]) -> PointValue:
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
