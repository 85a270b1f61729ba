"""The generic Modbus driver: reads any device described by a register map (a device
profile and/or points in the config), over Modbus RTU or TCP.

It is written as a third-party driver would be: it imports only the public driver API
(``swm_edge.driver``) and the pure Modbus codec and planner (``swm_edge.modbus``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from swm_edge.driver import (
    DeviceSpec,
    Driver,
    ModbusTransport,
    PointValue,
    ReadError,
    Reason,
)
from swm_edge.modbus import ReadRequest, decode, plan_reads, scale_value

__all__ = ["ModbusDriver"]


class ModbusDriver(Driver):
    """Plans a device's points into block reads once, then decodes each poll."""

    bus_types: ClassVar[frozenset[str]] = frozenset({"modbus-rtu", "modbus-tcp"})
    profile_dirs: ClassVar[tuple[Path, ...]] = (Path(__file__).parent / "profiles",)

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        self.requests: list[ReadRequest] = plan_reads(
            device.points,
            max_gap=device.max_gap,
            max_registers=device.max_registers,
            max_bits=device.max_bits,
            single_point=device.single_point_reads,
        )
        self.timeout = device.timeout

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """Run every planned request once; a failed request marks only its points bad.

        A timeout or a lost connection ends the poll early: the device is not there, and
        the line's time is worth more to the other devices than further timeouts.
        """
        assert isinstance(transport, ModbusTransport)
        device = self.device
        timeout = self.timeout if self.timeout is not None else 1.0
        values: dict[str, PointValue] = {}
        answered = False
        for i, req in enumerate(self.requests):
            try:
                if req.table.is_bits:
                    data: list[Any] = list(
                        await transport.read_bits(
                            device.unit, req.table, req.address, req.count, timeout=timeout
                        )
                    )
                else:
                    data = list(
                        await transport.read_registers(
                            device.unit, req.table, req.address, req.count, timeout=timeout
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
    return PointValue.good(scale_value(point, raw), point.unit)
