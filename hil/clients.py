"""Reading points with a real pymodbus client, for tests that check what a simulator serves.

Independent of the agent's transport and driver on purpose: when an agent test fails,
these helpers tell whether the simulator or the agent is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymodbus.exceptions import ModbusException

from swm_edge.modbus.codec import decode, register_count, scale_value
from swm_edge.model import PointSpec, Table

__all__ = ["ExceptionAnswer", "read_point", "read_points", "read_raw"]


class ExceptionAnswer(ModbusException):
    """The device answered with a Modbus exception response; ``code`` is its code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception response, code {code}")
        self.code = code


async def read_raw(client: Any, unit: int, table: Table, address: int, count: int) -> list[int]:
    """Read ``count`` registers (or bits, as 0/1) of ``table`` from a pymodbus async client.

    Raises:
        ExceptionAnswer: the device answered with an exception response.
        pymodbus.exceptions.ModbusException: no (valid) answer, connection lost, ...
    """
    read = {
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
    }[table]
    response = await read(address, count=count, device_id=unit)
    if response.isError():
        raise ExceptionAnswer(int(getattr(response, "exception_code", 0)))
    if table.is_bits:
        return [int(b) for b in response.bits[:count]]
    return list(response.registers)


async def read_point(client: Any, unit: int, point: PointSpec) -> int | float | bool:
    """Read one point and return its engineering value (decoded, then scaled)."""
    count = 1 if point.table.is_bits else register_count(point.type)
    words = await read_raw(client, unit, point.table, point.address, count)
    return scale_value(point, decode(point, words))


async def read_points(
    client: Any, unit: int, points: Iterable[PointSpec]
) -> dict[str, int | float | bool]:
    """Read every point, one request each; see :func:`read_point`."""
    return {p.name: await read_point(client, unit, p) for p in points}
