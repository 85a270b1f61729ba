"""Coalescing a device's points into as few Modbus read requests as its limits allow.

On a 9600-baud RS-485 line every transaction costs tens of milliseconds of framing,
silence and device turnaround (see :mod:`swm_edge.modbus.timing`), so reading a few
unused registers between two points is usually far cheaper than a second request.
``max_gap`` bounds that waste; ``max_registers``/``max_bits`` are the device's (or the
protocol's) per-request limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from swm_edge.driver import DecodeError
from swm_edge.modbus.codec import register_count
from swm_edge.model import PointSpec, Table

__all__ = ["MAX_READ_BITS", "MAX_READ_REGISTERS", "ReadRequest", "plan_reads"]

_T = TypeVar("_T")

#: Protocol limits per request (Modbus Application Protocol v1.1b3, 6.1-6.4):
#: functions 03/04 read at most 125 registers, functions 01/02 at most 2000 bits.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000

_ADDRESS_SPACE = 0x10000
_TABLE_ORDER = (Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE)


def _width(point: PointSpec) -> int:
    """Registers (or bits, in a bit table) one point occupies."""
    return 1 if point.table.is_bits else register_count(point.type)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read transaction: ``count`` registers or bits of ``table`` from ``address``.

    ``points`` are the points planned into this request, in address order; each lies
    wholly inside it.
    """

    table: Table
    address: int
    count: int
    points: tuple[PointSpec, ...]

    def offset(self, point: PointSpec) -> int:
        """Where ``point``'s first register (or its bit) lies in this request's response.

        Raises:
            ValueError: ``point`` does not lie inside this request.
        """
        start = point.address - self.address
        if point.table is not self.table or start < 0 or start + _width(point) > self.count:
            raise ValueError(
                f"{point.name} ({point.table} {point.address}) is outside the request "
                f"{self.table} {self.address}+{self.count}"
            )
        return start

    def slice(self, point: PointSpec, data: Sequence[_T]) -> Sequence[_T]:
        """The words (or the one bit) of ``point`` in this request's response ``data``.

        ``data`` may be longer than ``count``: some stacks pad bit responses to whole bytes.

        Raises:
            ValueError: ``point`` does not lie inside this request.
            DecodeError: ``data`` is too short to hold the point.
        """
        start = self.offset(point)
        end = start + _width(point)
        if len(data) < end:
            raise DecodeError(
                f"response to {self.table} {self.address}+{self.count} holds {len(data)} "
                f"values, {point.name} needs {end}"
            )
        return data[start:end]


def plan_reads(
    points: Sequence[PointSpec],
    *,
    max_gap: int = 10,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    single_point: bool = False,
) -> list[ReadRequest]:
    """Group ``points`` into read requests, ordered by table (holding, input, coil,
    discrete) then address.

    Points are taken by address; a point joins the current request when at most
    ``max_gap`` unread registers (or bits) lie between the request and the point and the
    request still fits ``max_registers`` (register tables) or ``max_bits`` (bit tables).
    Points that share registers, e.g. one register read both as int16 and as bool, go into
    one request where they fit. A point is never split over two requests. With
    ``single_point`` every point gets a request of its own, for devices that refuse block
    reads. The result depends only on the points, not on their order in ``points``.

    Requests of one table never overlap, except where overlapping points end up in
    different requests (they exceed the limit together, or ``single_point``).

    Raises:
        ValueError: a limit is outside 1..protocol maximum or ``max_gap`` is negative, a
            point is wider than the limit, or a point lies outside addresses 0..65535.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_registers <= MAX_READ_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_READ_REGISTERS}, got {max_registers}")
    if not 1 <= max_bits <= MAX_READ_BITS:
        raise ValueError(f"max_bits must be 1..{MAX_READ_BITS}, got {max_bits}")

    requests: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        limit = max_bits if table.is_bits else max_registers
        mine = [p for p in points if p.table is table]
        for p in mine:
            _check_fits(p, limit)
        mine.sort(key=_sort_key)
        requests.extend(_coalesce(table, mine, limit, max_gap, single_point))
    return requests


def _sort_key(p: PointSpec) -> tuple[int, int, str, str, str, bool, float, float, str]:
    # Every field breaks ties, so the plan does not depend on the order points came in.
    return (
        p.address,
        _width(p),
        p.name,
        p.type,
        p.word_order,
        p.byte_swap,
        p.scale,
        p.offset,
        p.unit or "",
    )


def _check_fits(point: PointSpec, limit: int) -> None:
    width = _width(point)
    if point.address < 0 or point.address + width > _ADDRESS_SPACE:
        raise ValueError(
            f"{point.name}: {point.table} {point.address}..{point.address + width - 1} "
            "is outside addresses 0..65535"
        )
    if width > limit:
        raise ValueError(
            f"{point.name}: {point.type} needs {width} registers, the device reads at most {limit}"
        )


def _coalesce(
    table: Table, points: list[PointSpec], limit: int, max_gap: int, single_point: bool
) -> list[ReadRequest]:
    out: list[ReadRequest] = []
    group: list[PointSpec] = []
    start = end = 0  # span [start, end) of the group being built

    def flush() -> None:
        if group:
            out.append(ReadRequest(table, start, end - start, tuple(group)))

    for p in points:
        p_end = p.address + _width(p)
        joins = (
            bool(group)
            and not single_point
            and p.address - end <= max_gap
            and max(end, p_end) - start <= limit
        )
        if joins:
            group.append(p)
            end = max(end, p_end)
        else:
            flush()
            group = [p]
            start, end = p.address, p_end
    flush()
    return out
