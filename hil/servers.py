"""Serving simulated devices over Modbus TCP and Modbus RTU, with fault injection.

One server serves one or more :class:`~swm_edge_hil.devices.SimulatedDevice` under their
unit ids, as a multi-drop RS-485 line or a TCP gateway does. Built on pymodbus' simulator
datastore (``SimDevice``): every read goes through an ``action`` hook that copies the
device's current register image into pymodbus' block first, so a reply always carries
what :meth:`SimulatedDevice.values` reports at that moment.

Faults (see :mod:`swm_edge_hil.faults`) are applied per unit id by the server itself:
the outgoing frame passes through pymodbus' ``trace_packet`` hook, which drops it
(``silent``, ``intermittent``), replaces it (``exception``, ``garbage``), spoils its CRC
(``bad_crc``, RTU only) or rewrites it (``wrong_unit``, ``truncated``, ``overlong``, RTU
only); ``late`` sleeps in the ``action`` hook before the reply is built. ``late_echo``
needs a relay that sees the next request before its answer: put it on the line with
:class:`swm_edge_hil.nullmodem.NullModem`, which applies every kind.

Unit ids without a device: on RTU they stay silent, as on a real bus; on TCP they answer
exception 0x0B (gateway target device failed to respond), as a TCP/RTU gateway does.

Read Device Identification (function 43/14) answers with each device's own vendor and model
(:attr:`SimulatedDevice.vendor`, :attr:`SimulatedDevice.model`; a profile's manufacturer
and model by default); a device without a vendor answers exception 1, as devices that do
not implement the function do. pymodbus itself knows only one identity per server, so the
``trace_pdu`` hook fills in the addressed device's objects.

On a virtual line (:class:`~swm_edge_hil.nullmodem.NullModem`) :func:`serve_rtu` can be
given the agent's end of the line (``agent_port``): it then answers only while the agent's
port is set to the server's baud rate, as a device on a real line hears only framing errors
from a master at another speed. The speed is read from the agent's pty, so it is whatever
the agent really set. Parity cannot be checked that way: the Linux pty driver forces 8 data
bits without parity whatever the agent asks for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import termios
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from pymodbus.constants import DeviceInformation, ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.faults import FRAME_KINDS, Fault, FaultKind, FaultTable, garbage_bytes
from swm_edge_hil.rtu import exception_frame

from swm_edge.modbus.codec import register_count
from swm_edge.model import Table

__all__ = ["SimServer", "serve_rtu", "serve_tcp"]

_FC_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
_GATEWAY_NO_RESPONSE = 0x0B
_READ_DEVICE_ID = 0x2B
# Read Device Identification objects (Modbus Application Protocol v1.1b3, 6.21).
_VENDOR_NAME, _PRODUCT_CODE, _REVISION, _MODEL_NAME = 0x00, 0x01, 0x02, 0x05
# The last object id each stream read code returns (basic, regular, extended).
_LAST_OBJECT = {
    DeviceInformation.BASIC: 0x02,
    DeviceInformation.REGULAR: 0x06,
    DeviceInformation.EXTENDED: 0xFF,
}
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
        #: Counters: ``wrong_speed`` answers withheld because the agent's port was set to
        #: another baud rate (see :func:`serve_rtu`'s ``agent_port``).
        self.stats: collections.Counter[str] = collections.Counter()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._stopping = asyncio.Event()
        # RTU with agent_port: a descriptor of the agent's pty (only its termios are read)
        # and the speed constant the agent's port must have for an answer to get through.
        self._agent_fd: int | None = None
        self._speed: int | None = None

    def set_fault(self, unit: int, fault: Fault | str | None) -> None:
        """Switch the device with id ``unit`` into ``fault`` (``None``: healthy again).

        Raises:
            ValueError: a kind this server cannot apply: ``late_echo`` (the relay's), and on
                TCP the kinds that are about RTU framing (``bad_crc``, ``wrong_unit``,
                ``truncated``, ``overlong``).
        """
        parsed = Fault.parse(fault) if isinstance(fault, str) else fault
        kind = parsed.kind if parsed is not None else None
        if kind is FaultKind.LATE_ECHO:
            raise ValueError("late_echo is applied on the line: use NullModem.set_fault")
        if self.kind == "tcp" and (kind is FaultKind.BAD_CRC or kind in FRAME_KINDS):
            raise ValueError(
                f"{kind} is about RTU framing (CRC, frame length), not Modbus TCP; use garbage"
            )
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
        fd, self._agent_fd = self._agent_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

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

    def _identify(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus' trace_pdu hook: answers Read Device Identification (43/14, stream
        access) with the addressed device's own objects."""
        if not sending or not isinstance(pdu, ReadDeviceInformationResponse):
            return pdu
        device = self.devices.get(pdu.dev_id)
        if device is None:
            return pdu  # _outgoing makes it silence (RTU) or exception 0x0B (TCP)
        if device.vendor is None:
            return ExceptionResponse(
                _READ_DEVICE_ID,
                ExcCodes.ILLEGAL_FUNCTION,
                device_id=pdu.dev_id,
                transaction=pdu.transaction_id,
            )
        last = _LAST_OBJECT.get(pdu.read_code)
        if last is None:
            return pdu  # individual access (read code 4): pymodbus' own answer
        objects = {
            _VENDOR_NAME: device.vendor,
            _PRODUCT_CODE: device.name,
            _REVISION: "1.0",
            _MODEL_NAME: device.model or "",
        }
        pdu.information = {
            oid: text.encode("ascii", "replace")
            for oid, text in objects.items()
            if oid <= last and text
        }
        return pdu

    def _agent_at_speed(self) -> bool:
        """Whether the agent's port is set to the server's baud rate (always true without
        ``agent_port``, or when the agent's pty cannot be asked)."""
        if self._agent_fd is None:
            return True
        try:
            speed = termios.tcgetattr(self._agent_fd)[5]  # output speed
        except (OSError, termios.error):
            return True
        return bool(speed == self._speed)

    def _outgoing(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus' trace_packet hook: the place where faults change what is sent."""
        if not sending or len(packet) < 2:
            return packet
        tcp = self.kind == "tcp"
        if not tcp and not self._agent_at_speed():
            # The request reached a device at another speed as garbage: no answer.
            self.stats["wrong_speed"] += 1
            return b""
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
        if kind in FRAME_KINDS and not tcp:
            return self.faults.reply(fault, packet)
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

    Returns once the server listens; ``.port`` is the bound port. Supports the faults
    that make sense without RTU framing: not ``bad_crc``, ``wrong_unit``, ``truncated``,
    ``overlong`` or ``late_echo``.
    """
    sim = SimServer("tcp", _by_unit(devices), faults or FaultTable())
    server = ModbusTcpServer(
        sim._simdevices(),
        address=(host, port),
        trace_packet=sim._outgoing,
        trace_pdu=sim._identify,
    )
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
    agent_port: str | None = None,
) -> SimServer:
    """Serve ``devices`` over Modbus RTU on the serial port ``port`` (e.g. a null-modem
    ``device_port``). Returns once the port is open.

    Args:
        agent_port: the agent's end of a virtual line (e.g. ``NullModem.agent_port``): if
            given, the devices answer only while the agent's port is set to ``baudrate``
            (see the module docstring; parity is not checked). Counted in ``stats``.

    Raises:
        RuntimeError: the port cannot be opened.
        ValueError: ``baudrate`` is not a speed the system knows (with ``agent_port``).
        OSError: ``agent_port`` cannot be opened.
    """
    sim = SimServer("rtu", _by_unit(devices), faults or FaultTable())
    if agent_port is not None:
        speed = getattr(termios, f"B{baudrate}", None)
        if not isinstance(speed, int):
            raise ValueError(f"no termios speed for {baudrate} baud")
        sim._speed = speed
        # Read-only and never read from: the descriptor is only asked for its termios.
        sim._agent_fd = os.open(agent_port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    server = ModbusSerialServer(
        sim._simdevices(),
        framer=FramerType.RTU,
        port=port,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        trace_packet=sim._outgoing,
        trace_pdu=sim._identify,
    )
    try:
        await server.serve_forever(background=True)
    except BaseException:
        if sim._agent_fd is not None:
            os.close(sim._agent_fd)
        raise
    sim.path = port
    sim._server = server
    return sim
