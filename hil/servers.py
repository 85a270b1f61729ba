"""Serving simulated devices over Modbus TCP and Modbus RTU, with fault injection.

One server serves one or more :class:`~swm_edge_hil.devices.SimulatedDevice` under their
unit ids, as a multi-drop RS-485 line or a TCP gateway does. Built on pymodbus' simulator
datastore (``SimDevice``): every read goes through an ``action`` hook that copies the
device's current register image into pymodbus' block first, so a reply always carries
what :meth:`SimulatedDevice.values` reports at that moment.

Faults (see :mod:`swm_edge_hil.faults`) are applied per unit id by the server itself:
the outgoing frame passes through pymodbus' ``trace_packet`` hook, which drops it
(``silent``, ``intermittent``), replaces it (``exception``, ``garbage``) or spoils its CRC
(``bad_crc``, RTU only); ``late`` sleeps in the ``action`` hook before the reply is built.
On a virtual RS-485 line the same faults can instead be put on the line itself with
:class:`swm_edge_hil.nullmodem.NullModem`.

Unit ids without a device: on RTU they stay silent, as on a real bus; on TCP they answer
exception 0x0B (gateway target device failed to respond), as a TCP/RTU gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.faults import Fault, FaultKind, FaultTable, garbage_bytes
from swm_edge_hil.rtu import exception_frame

from swm_edge.modbus.codec import register_count
from swm_edge.model import Table

__all__ = ["SimServer", "serve_rtu", "serve_tcp"]

_FC_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
_GATEWAY_NO_RESPONSE = 0x0B
# Order of the four block lists in a non-shared SimDevice.
_BLOCK_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)


class SimServer:
    """A running Modbus server over simulated devices; made by :func:`serve_tcp` or
    :func:`serve_rtu`. Stop it with :meth:`stop` or use it as an async context manager."""

    def __init__(
        self,
        kind: Literal["tcp", "rtu"],
        devices: Mapping[int, SimulatedDevice],
        faults: FaultTable,
    ) -> None:
        self.kind = kind
        self.devices: Mapping[int, SimulatedDevice] = devices
        self.faults = faults
        #: TCP: the address and bound port (both empty/0 for RTU).
        self.host = ""
        self.port = 0
        #: RTU: the serial port (``None`` for TCP).
        self.path: str | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._stopping = asyncio.Event()

    def set_fault(self, unit: int, fault: Fault | str | None) -> None:
        """Switch the device with id ``unit`` into ``fault`` (``None``: healthy again).

        Raises:
            ValueError: ``bad_crc`` on TCP, which has no CRC.
        """
        parsed = Fault.parse(fault) if isinstance(fault, str) else fault
        if self.kind == "tcp" and parsed is not None and parsed.kind is FaultKind.BAD_CRC:
            raise ValueError("bad_crc has no meaning on Modbus TCP (no CRC); use garbage")
        self.faults.set(unit, parsed)

    def info(self) -> dict[str, Any]:
        """Where the server listens and what it serves, JSON-ready."""
        where: dict[str, Any] = (
            {"host": self.host, "port": self.port} if self.kind == "tcp" else {"path": self.path}
        )
        return {
            "transport": self.kind,
            **where,
            "units": {str(u): d.name for u, d in sorted(self.devices.items())},
        }

    async def stop(self) -> None:
        """Stop serving and close every connection; a no-op the second time."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping.set()
        # Let replies held back by a `late` fault go out before the transport closes.
        await asyncio.sleep(0)
        await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SimServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.kind == "tcp" else self.path
        return f"SimServer({self.kind} {where}, units={sorted(self.devices)})"

    # -- pymodbus glue -------------------------------------------------------------------

    def _simdevices(self) -> list[SimDevice]:
        sims = [
            _simdevice(d, _Action(d, self.faults, self._stopping).run)
            for d in self.devices.values()
        ]
        # Catch-all for unknown unit ids: every request fails inside pymodbus, and the
        # outgoing hook turns the answer into silence (RTU) or exception 0x0B (TCP).
        sims.append(SimDevice(id=0, simdata=SimData(0, datatype=SimType.INVALID)))
        return sims

    def _outgoing(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus' trace_packet hook: the place where faults change what is sent."""
        if not sending or len(packet) < 2:
            return packet
        tcp = self.kind == "tcp"
        if tcp and len(packet) < 8:
            return packet
        unit = packet[6] if tcp else packet[0]
        function = packet[7] if tcp else packet[1]
        if unit not in self.devices:
            return _tcp_exception(packet, _GATEWAY_NO_RESPONSE) if tcp else b""
        fault = self.faults.get(unit)
        if fault is None:
            return packet
        kind = fault.kind
        if kind is FaultKind.SILENT:
            return b""
        if kind is FaultKind.EXCEPTION:
            if tcp:
                return _tcp_exception(packet, fault.code)
            return exception_frame(unit, function, fault.code)
        if kind is FaultKind.GARBAGE:
            return garbage_bytes(self.faults.rng, len(packet))
        if kind is FaultKind.BAD_CRC and not tcp:
            return packet[:-1] + bytes((packet[-1] ^ 0xFF,))
        if kind is FaultKind.INTERMITTENT and not self.faults.answers(fault):
            return b""
        return packet


class _Action:
    """pymodbus SimDevice ``action``: runs before every access to the device's registers."""

    def __init__(self, device: SimulatedDevice, faults: FaultTable, stopping: asyncio.Event):
        self.device = device
        self.faults = faults
        self.stopping = stopping

    async def run(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        fault = self.faults.get(self.device.unit)
        if fault is not None and fault.kind is FaultKind.LATE:
            # Waiting on the stop event rather than sleeping, so stopping never leaves
            # a request task behind.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), fault.delay)
        table = _FC_TABLE.get(function_code)
        if table is None:
            return None
        if self.device.span(table) is None:
            return ExcCodes.ILLEGAL_ADDRESS
        image = self.device.image(table)
        if table.is_bits:
            # Bit blocks are packed 16 to a register, bit 0 in the least significant bit.
            for bit_address, bit in image.items():
                index = bit_address // 16 - start_address
                mask = 1 << (bit_address % 16)
                registers[index] = (registers[index] | mask) if bit else (registers[index] & ~mask)
        else:
            for a in range(address, address + count):
                registers[a - start_address] = image.get(a, 0)
        return None


def _simdevice(device: SimulatedDevice, action: Any) -> SimDevice:
    blocks: list[list[SimData]] = []
    for table in _BLOCK_ORDER:
        span = device.span(table)
        bits = table.is_bits
        if span is None:
            # pymodbus needs a block per table; a placeholder the action refuses.
            blocks.append(
                [SimData(0, values=False, datatype=SimType.BITS)]
                if bits
                else [SimData(0, datatype=SimType.INVALID)]
            )
        elif device.gaps_readable:
            first, end = span
            blocks.append([_block(first, end - first, bits)])
        else:
            blocks.append(
                [
                    _block(p.address, 1 if bits else register_count(p.type), bits)
                    for p in sorted(device.points, key=lambda p: p.address)
                    if p.table is table
                ]
            )
    return SimDevice(
        id=device.unit,
        simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
        action=action,
    )


def _block(address: int, count: int, bits: bool) -> SimData:
    if bits:
        return SimData(address, count=count, values=False, datatype=SimType.BITS, readonly=True)
    return SimData(address, count=count, values=0, datatype=SimType.REGISTERS, readonly=True)


def _tcp_exception(packet: bytes, code: int) -> bytes:
    """The MBAP-framed exception answer to the request answered by ``packet``."""
    # Transaction id and protocol id are kept; length 3 = unit + function + code.
    return packet[:4] + b"\x00\x03" + bytes((packet[6], (packet[7] & 0x7F) | 0x80, code))


def _by_unit(devices: SimulatedDevice | Iterable[SimulatedDevice]) -> dict[int, SimulatedDevice]:
    items = [devices] if isinstance(devices, SimulatedDevice) else list(devices)
    by_unit: dict[int, SimulatedDevice] = {}
    for device in items:
        if device.unit in by_unit:
            raise ValueError(f"two devices with unit id {device.unit}")
        by_unit[device.unit] = device
    if not by_unit:
        raise ValueError("nothing to serve")
    return by_unit


async def serve_tcp(
    devices: SimulatedDevice | Iterable[SimulatedDevice],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultTable | None = None,
) -> SimServer:
    """Serve ``devices`` over Modbus TCP on ``host:port`` (port 0: a free one).

    Returns once the server listens; ``.port`` is the bound port. Supports every fault
    but ``bad_crc``.
    """
    sim = SimServer("tcp", _by_unit(devices), faults or FaultTable())
    server = ModbusTcpServer(sim._simdevices(), address=(host, port), trace_packet=sim._outgoing)
    await server.serve_forever(background=True)
    # A listening pymodbus server keeps its asyncio.Server in ``transport``.
    listener: Any = server.transport
    sim.host, sim.port = host, int(listener.sockets[0].getsockname()[1])
    sim._server = server
    return sim


async def serve_rtu(
    devices: SimulatedDevice | Iterable[SimulatedDevice],
    port: str,
    *,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    bytesize: int = 8,
    faults: FaultTable | None = None,
) -> SimServer:
    """Serve ``devices`` over Modbus RTU on the serial port ``port`` (e.g. a null-modem
    ``device_port``). Returns once the port is open.

    Raises:
        RuntimeError: the port cannot be opened.
    """
    sim = SimServer("rtu", _by_unit(devices), faults or FaultTable())
    server = ModbusSerialServer(
        sim._simdevices(),
        framer=FramerType.RTU,
        port=port,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        trace_packet=sim._outgoing,
    )
    await server.serve_forever(background=True)
    sim.path = port
    sim._server = server
    return sim
