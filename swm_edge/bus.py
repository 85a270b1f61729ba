"""Buses: each owns one physical line or connection.

A bus opens its line with backoff, serialises every request on it (an RS-485 line is
half-duplex; one TCP connection carries one transaction at a time with our stacks), keeps
the per-line pause between requests, and hands drivers a transport: a
:class:`~swm_edge.driver.ModbusTransport` on Modbus buses, a
:class:`~swm_edge.driver.SerialTransport` on raw serial buses (M-Bus, SDI-12).
When the line fails (USB adapter unplugged, TCP reset) the bus closes it and reopens it in
the background with exponential backoff and jitter; meanwhile reads fail fast with
``connection`` so devices get bad readings instead of waiting.

Modbus RTU is framed by swm-edge itself (:class:`RtuLine`, ``backend: native``, decision
0006); pymodbus (:class:`PymodbusLine`) is the Modbus TCP client and an RTU alternative,
as is minimalmodbus (:class:`MinimalmodbusLine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import termios
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import tenacity

from swm_edge.driver import (
    ConnectionLost,
    CrcError,
    DecodeError,
    DeviceException,
    DeviceTimeout,
    ModbusTransport,
    ReadError,
    SerialTransport,
)
from swm_edge.lograte import FailureLog
from swm_edge.modbus.rtu import (
    Answer,
    Bad,
    Expected,
    Parse,
    Pending,
    Refused,
    Verdict,
    parse_answer,
    read_request,
)
from swm_edge.modbus.timing import silent_interval
from swm_edge.model import BusSpec, Table

log = logging.getLogger(__name__)

T = TypeVar("T")

# After a timeout on a serial line a late answer may still be on its way; waiting this
# long (and discarding what arrives) keeps it from being taken as the next answer.
SERIAL_QUIET_AFTER_TIMEOUT = 0.05

# What opening or using a serial port raises: pyserial's SerialException is an OSError, but
# a setting the port refuses surfaces as termios.error (e.g. parity on a pty), and a bad
# setting as ValueError.
SERIAL_ERRORS = (OSError, termios.error, ValueError)

# Bus types whose line is a raw serial port handed to the driver as a SerialTransport.
SERIAL_BUS_TYPES = frozenset({"mbus", "sdi12", "serial"})


class Line(ABC):
    """One physical line or connection, opened and closed by its :class:`Bus`."""

    def __init__(self, spec: BusSpec) -> None:
        self.spec = spec

    @abstractmethod
    async def open(self) -> None:
        """Open the line; raise :class:`ConnectionLost` when it cannot be opened."""

    @abstractmethod
    async def close(self) -> None:
        """Close the line; safe to call twice."""

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether the line is usable right now."""


class ModbusLine(Line):
    """A Modbus stack bound to one line. Raises only :class:`ReadError` subclasses."""

    @abstractmethod
    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        """Read registers (function 3 or 4)."""

    @abstractmethod
    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        """Read bits (function 1 or 2)."""


# Bytes of an RTU answer kept to check what came with it (the longest answer is 256).
_RX_TAIL_MAX = 512


class PymodbusLine(ModbusLine):
    """pymodbus' asyncio client: Modbus TCP, or RTU over a serial port with
    ``backend: pymodbus`` (the RTU default is :class:`RtuLine`)."""

    def __init__(self, spec: BusSpec) -> None:
        super().__init__(spec)
        self._client: Any = None
        self._rx_bytes = 0
        self._rx_tail = bytearray()  # the last bytes that arrived (bounded)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # Counting what arrived tells a silent device (timeout) from one whose answer
        # was unusable (bad CRC, garbage), which pymodbus' framer drops without a word.
        if not sending:
            self._rx_bytes += len(data)
            self._rx_tail += data
            del self._rx_tail[:-_RX_TAIL_MAX]
        return data

    def _answer_is_last(self, unit: int, answer_bytes: int) -> bool:
        """Whether the bytes that arrived end with one whole, valid answer from ``unit``:
        extra bytes before it (a late frame of another request, skipped by pymodbus) are
        harmless; extra bytes after it mean the frame on the wire was not that answer."""
        from pymodbus.framer.rtu import FramerRTU

        tail = bytes(self._rx_tail[-answer_bytes:])
        if len(tail) < answer_bytes or tail[0] != unit:
            return False
        return FramerRTU.compute_CRC(tail[:-2]) == int.from_bytes(tail[-2:], "big")

    def _make_client(self) -> Any:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        common: dict[str, Any] = {
            "timeout": self.spec.timeout,
            "retries": 0,  # the scheduler owns retries
            "reconnect_delay": 0,  # the bus owns reconnects (with jitter)
            "trace_packet": self._trace_packet,
        }
        if self.spec.type == "modbus-tcp":
            return AsyncModbusTcpClient(self.spec.host or "", port=self.spec.tcp_port, **common)
        return AsyncModbusSerialClient(
            self.spec.port or "",
            baudrate=self.spec.baudrate,
            parity=self.spec.parity,
            stopbits=self.spec.stopbits,
            bytesize=self.spec.bytesize,
            **common,
        )

    async def open(self) -> None:
        await self.close()
        if self.spec.type == "modbus-rtu" and not os.path.exists(self.spec.port or ""):
            raise ConnectionLost(f"serial port {self.spec.port} is not present")
        client = self._make_client()
        try:
            ok = await client.connect()
        except Exception as exc:  # pymodbus surfaces OS and serial errors untyped here
            client.close()
            raise ConnectionLost(f"cannot open {self._where()}: {exc}") from exc
        if not ok:
            client.close()
            raise ConnectionLost(f"cannot open {self._where()}")
        self._client = client

    def _where(self) -> str:
        if self.spec.type == "modbus-tcp":
            return f"{self.spec.host}:{self.spec.tcp_port}"
        return str(self.spec.port)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def is_open(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _call(
        self,
        fn: Callable[..., Any],
        address: int,
        count: int,
        unit: int,
        timeout: float,
        *,
        answer_bytes: int | None = None,
    ) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException

        client = self._client
        if client is None or not client.connected:
            raise ConnectionLost(f"{self._where()} is not open")
        # One transaction at a time per line (the bus lock), so setting the stack's
        # timeout per request is safe and gives each device its own timeout.
        client.ctx.comm_params.timeout_connect = timeout
        self._rx_bytes = 0
        self._rx_tail.clear()
        try:
            response = await fn(address, count=count, device_id=unit)
        except ConnectionException as exc:
            raise ConnectionLost(str(exc)) from exc
        except ModbusException as exc:
            if not client.connected:
                raise ConnectionLost(str(exc)) from exc
            if "device id" in str(exc):
                raise CrcError(f"answer from the wrong unit: {exc}") from exc
            if self._rx_bytes:
                raise CrcError(f"{self._rx_bytes} bytes arrived but no valid frame") from exc
            raise DeviceTimeout(f"no answer from unit {unit} within {timeout:g} s") from exc
        except (TimeoutError, OSError) as exc:
            raise ConnectionLost(str(exc)) from exc
        if response.isError():
            raise DeviceException(int(response.exception_code))
        if (
            answer_bytes is not None
            and self.spec.type == "modbus-rtu"
            and self._rx_bytes > answer_bytes
            and not self._answer_is_last(unit, answer_bytes)
        ):
            # pymodbus checks the CRC over the length the header announces and drops the
            # rest unseen: bytes after the answer mean the frame on the wire was longer
            # than an answer (noise, an over-long frame), so it is not trusted.
            raise CrcError(
                f"{self._rx_bytes} bytes arrived for a {answer_bytes}-byte answer (extra bytes "
                "after it on the line)"
            )
        return response

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        client = self._client
        fn = (
            (
                client.read_holding_registers
                if table is Table.HOLDING
                else client.read_input_registers
            )
            if client is not None
            else None
        )
        if fn is None:
            raise ConnectionLost(f"{self._where()} is not open")
        # RTU answer: unit, function, byte count, 2 bytes a register, CRC (2)
        response = await self._call(fn, address, count, unit, timeout, answer_bytes=5 + 2 * count)
        words = list(response.registers)
        if len(words) != count:
            raise DecodeError(f"asked for {count} registers, got {len(words)}")
        return words

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        client = self._client
        if client is None:
            raise ConnectionLost(f"{self._where()} is not open")
        fn = client.read_coils if table is Table.COIL else client.read_discrete_inputs
        response = await self._call(
            fn, address, count, unit, timeout, answer_bytes=5 + (count + 7) // 8
        )
        bits = [bool(b) for b in response.bits]
        if len(bits) < count:
            raise DecodeError(f"asked for {count} bits, got {len(bits)}")
        return bits[:count]


# minimalmodbus reports exception responses by message; map them back to their codes.
_MINIMALMODBUS_CODES = {
    "illegal function": 1,
    "illegal data address": 2,
    "illegal data value": 3,
    "device failure": 4,
    "device busy": 6,
    "negative acknowledge": 7,
    "memory parity": 8,
    "gateway path": 10,
    "gateway target": 11,
}


def _minimalmodbus_exception_code(message: str) -> int:
    lower = message.lower()
    for text, code in _MINIMALMODBUS_CODES.items():
        if text in lower:
            return code
    tail = lower.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 4


def _serial_port(spec: BusSpec, *, timeout: float, exclusive: bool = False) -> Any:
    """Open ``spec``'s serial port (blocking: call it in the line's worker thread).

    Raises :class:`ConnectionLost` when the device node is missing (adapter unplugged);
    pyserial's own errors (:data:`SERIAL_ERRORS`) pass through.
    """
    import serial

    port = spec.port or ""
    if not os.path.exists(port):
        raise ConnectionLost(f"serial port {port} is not present")
    return serial.Serial(
        port,
        baudrate=spec.baudrate,
        parity=spec.parity,
        stopbits=spec.stopbits,
        bytesize=spec.bytesize,
        timeout=timeout,
        exclusive=exclusive or None,
    )


class MinimalmodbusLine(ModbusLine):
    """minimalmodbus (synchronous RTU) run in one worker thread per line."""

    def __init__(self, spec: BusSpec) -> None:
        super().__init__(spec)
        self._serial: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bus-{spec.id}")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def open(self) -> None:
        await self.close()
        try:
            self._serial = await self._run(
                lambda: _serial_port(self.spec, timeout=self.spec.timeout)
            )
        except SERIAL_ERRORS as exc:
            raise ConnectionLost(f"cannot open {self.spec.port}: {exc}") from exc

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(OSError):
                await self._run(ser.close)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and bool(self._serial.is_open)

    def _instrument(self, unit: int, timeout: float) -> Any:
        import minimalmodbus

        inst = minimalmodbus.Instrument(self._serial, unit, close_port_after_each_call=False)
        inst.serial.timeout = timeout
        inst.clear_buffers_before_each_transaction = True
        return inst

    async def _call(self, fn: Callable[[Any], T], unit: int, timeout: float) -> T:
        import minimalmodbus
        import serial

        if not self.is_open:
            raise ConnectionLost(f"{self.spec.port} is not open")

        def _do() -> T:
            return fn(self._instrument(unit, timeout))

        try:
            return await self._run(_do)
        except minimalmodbus.NoResponseError as exc:
            raise DeviceTimeout(f"no answer from unit {unit} within {timeout:g} s") from exc
        except minimalmodbus.InvalidResponseError as exc:
            raise CrcError(str(exc)) from exc
        except minimalmodbus.SlaveReportedException as exc:
            raise DeviceException(_minimalmodbus_exception_code(str(exc)), str(exc)) from exc
        except (serial.SerialException, OSError) as exc:
            raise ConnectionLost(str(exc)) from exc

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        code = 3 if table is Table.HOLDING else 4
        words = await self._call(
            lambda inst: inst.read_registers(address, count, functioncode=code), unit, timeout
        )
        return [int(w) for w in words]

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        code = 1 if table is Table.COIL else 2
        bits = await self._call(
            lambda inst: inst.read_bits(address, count, functioncode=code), unit, timeout
        )
        return [bool(b) for b in bits]

    def shutdown(self) -> None:
        """Stop the worker thread (after :meth:`close`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _check_read(function: int, address: int, count: int) -> tuple[int, int]:
    """Address and count of the check request of a suspect exchange: the same read with
    another answer length, so an answer to it can never pass for the real request's.

    Registers: one fewer (a part of the block, no new address) or, for one register, two.
    Bits: eight fewer or more, so the answer's byte count differs too.
    """
    if function in (3, 4):
        return address, count - 1 if count > 1 else 2
    return address, count - 8 if count > 8 else count + 8


class RtuLine(ModbusLine):
    """Modbus RTU framed by swm-edge itself (:mod:`swm_edge.modbus.rtu`) over pyserial.

    Every exchange runs whole in one worker thread per line (as the other serial lines
    here): flush what is queued on input (a late answer to an earlier request), write the
    request, then read until :func:`~swm_edge.modbus.rtu.parse_answer` decides and the line
    has been silent for t3.5 after it (the end of an RTU frame; bytes in that silence make
    the frame over-long), or until the timeout. A thread rather than the loop's add_reader:
    pyserial is blocking, an exchange needs a dozen waits of a few milliseconds that a
    thread does without event-loop round trips, and the worker serialises use of the port
    even when a cancelled poll leaves its exchange running to its (bounded) end.

    Stale answers (RTU has no transaction id): after unit U timed out or gave a CRC error,
    U is *suspect*, and the next exchange with U first sends a check request (the same
    read with another answer length, see :func:`_check_read`), takes whatever comes until
    the line is quiet (or the timeout: then that is the exchange's timeout, no second
    request), waits t3.5 and sends the real request, whose answer is recognised by its
    unit, function and byte count: a late answer to the check or to any earlier request of
    another length is skipped. U stops being suspect after a valid answer. The cost: one
    extra request (a few milliseconds) to a device after each of its timeouts or CRC errors.
    A device that ignores the check request (a timeout on it) gets the real request twice
    at its next exchange instead (first answer discarded), so it cannot be locked out.
    """

    def __init__(self, spec: BusSpec) -> None:
        super().__init__(spec)
        self._serial: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bus-{spec.id}")
        self._silence = silent_interval(
            baudrate=spec.baudrate,
            parity=spec.parity,
            stopbits=spec.stopbits,
            bytesize=spec.bytesize,
        )
        # Suspect units: whether their next exchange starts with the check request (True)
        # or with the real request sent twice (False, after a check went unanswered).
        self._suspect: dict[int, bool] = {}

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except SERIAL_ERRORS as exc:  # pyserial's SerialException is an OSError
            # The port is gone (adapter unplugged): closed now, so the bus sees the line
            # down and every turn fails fast until it is reopened.
            await self.close()
            raise ConnectionLost(f"{self.spec.port}: {exc}") from exc

    async def open(self) -> None:
        await self.close()
        # timeout 0: reads return what has arrived; the exchange waits with select.
        # exclusive: another program (or a scan) on the same line would garble it.
        try:
            self._serial = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: _serial_port(self.spec, timeout=0, exclusive=True)
            )
        except SERIAL_ERRORS as exc:
            raise ConnectionLost(f"cannot open {self.spec.port}: {exc}") from exc
        self._suspect.clear()

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(*SERIAL_ERRORS):
                await asyncio.get_running_loop().run_in_executor(self._executor, ser.close)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and bool(self._serial.is_open)

    def suspect(self, unit: int) -> bool:
        """Whether the next exchange with ``unit`` starts with a check request."""
        return unit in self._suspect

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        answer = await self._read(unit, 3 if table is Table.HOLDING else 4, address, count, timeout)
        return list(answer.registers)

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        answer = await self._read(unit, 1 if table is Table.COIL else 2, address, count, timeout)
        return list(answer.bits)

    async def _read(
        self, unit: int, function: int, address: int, count: int, timeout: float
    ) -> Answer:
        ser = self._serial
        if ser is None:
            raise ConnectionLost(f"{self.spec.port} is not open")
        try:
            request = read_request(unit, function, address, count)
        except ValueError as exc:
            raise ReadError(str(exc)) from exc
        expected = Expected(unit, function, count)
        check: tuple[bytes, Expected] | None = None
        check_kind = self._suspect.get(unit)
        if check_kind is not None:
            check = (request, expected)
            if check_kind:
                check_address, check_count = _check_read(function, address, count)
                # At the top of the address space a longer read does not exist: there the
                # check is the plain repeat.
                with contextlib.suppress(ValueError):
                    check = (
                        read_request(unit, function, check_address, check_count),
                        Expected(unit, function, check_count),
                    )
        result, received = await self._run(
            lambda: self._transaction(ser, request, expected, timeout, check)
        )
        if result is None:
            # The check went unanswered: a timeout; next time the other kind of check.
            self._suspect[unit] = not check_kind
            raise DeviceTimeout(f"no answer from unit {unit} within {timeout:g} s")
        if isinstance(result, Answer | Refused):
            self._suspect.pop(unit, None)
            if result.skipped:
                log.debug(
                    "%s: skipped %d stale frame(s) before unit %d's answer",
                    self.spec.port,
                    result.skipped,
                    unit,
                )
            if isinstance(result, Refused):
                raise DeviceException(result.code)
            return result
        self._suspect[unit] = True
        if isinstance(result, Bad):
            raise CrcError(f"{received} bytes arrived but no valid answer: {result.reason}")
        if result.verdict is Verdict.NOTHING:
            raise DeviceTimeout(f"no answer from unit {unit} within {timeout:g} s")
        if result.verdict is Verdict.STALE:
            raise DeviceTimeout(
                f"no answer from unit {unit} within {timeout:g} s ({result.detail})"
            )
        if result.verdict is Verdict.WRONG_UNIT:
            raise CrcError(f"answer from the wrong unit: {result.detail}")
        raise CrcError(f"{received} bytes arrived but no valid frame: {result.detail}")

    def _transaction(
        self,
        ser: Any,
        request: bytes,
        expected: Expected,
        timeout: float,
        check: tuple[bytes, Expected] | None,
    ) -> tuple[Parse | None, int]:
        """The exchange, in the worker thread: ``(None, 0)`` when ``check`` was sent and
        nothing at all came back."""
        if check is not None:
            _, received = self._exchange(ser, *check, timeout, settle=True)
            if not received:
                return None, 0
            # The check's answer (or a stale one) is dropped; t3.5 before the next frame.
            time.sleep(self._silence)
        return self._exchange(ser, request, expected, timeout, settle=False)

    def _exchange(
        self, ser: Any, request: bytes, expected: Expected, timeout: float, *, settle: bool
    ) -> tuple[Parse, int]:
        """Send ``request`` and read what comes back: until an outcome and t3.5 of silence
        after it, until the timeout, or (``settle``) until t3.5 of silence after any byte."""
        ser.reset_input_buffer()
        ser.write(request)
        ser.flush()  # tcdrain: the timeout counts from the end of the request on the wire
        buf = bytearray()
        result: Parse = Pending(Verdict.NOTHING)
        deadline = time.monotonic() + timeout
        last = 0.0
        while True:
            if buf and (settle or not isinstance(result, Pending)):
                # Bounded by the deadline too, so a line that never goes quiet (noise)
                # cannot hold the exchange.
                until = min(last, deadline) + self._silence
            else:
                until = deadline
            wait = until - time.monotonic()
            if wait <= 0:
                return result, len(buf)
            if not select.select([ser.fileno()], [], [], wait)[0]:
                continue
            chunk = ser.read(max(1, ser.in_waiting))
            if chunk:
                buf += chunk
                last = time.monotonic()
                result = parse_answer(bytes(buf), expected)

    def shutdown(self) -> None:
        """Stop the worker thread (after :meth:`close`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# The port's own read timeout: short, so a read can honour its caller's deadline without
# reconfiguring the port for every call.
SERIAL_POLL = 0.02


def _read_bounded(ser: Any, max_size: int, timeout: float, terminator: bytes | None) -> bytes:
    """Read until ``max_size`` bytes, the terminator, or the deadline, whichever is first."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < max_size:
        # With a terminator, one byte at a time: what follows it belongs to the next
        # answer and must stay queued (serial lines this slow make that cheap).
        chunk = ser.read(1 if terminator is not None else max_size - len(buf))
        if chunk:
            buf += chunk
            if terminator is not None and buf.endswith(terminator):
                break
        elif time.monotonic() >= deadline:
            break
    return bytes(buf)


class SerialPortLine(Line):
    """A raw serial port (M-Bus, SDI-12) driven by pyserial in one worker thread."""

    def __init__(self, spec: BusSpec) -> None:
        super().__init__(spec)
        self._serial: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bus-{spec.id}")

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except SERIAL_ERRORS as exc:
            raise ConnectionLost(f"{self.spec.port}: {exc}") from exc

    async def open(self) -> None:
        await self.close()
        self._serial = await self._run(lambda: _serial_port(self.spec, timeout=SERIAL_POLL))

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(ConnectionLost):
                await self._run(ser.close)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and bool(self._serial.is_open)

    def _port(self) -> Any:
        if self._serial is None:
            raise ConnectionLost(f"{self.spec.port} is not open")
        return self._serial

    async def write(self, data: bytes) -> None:
        ser = self._port()

        def _write() -> None:
            ser.write(data)
            ser.flush()

        await self._run(_write)

    async def read(self, size: int, *, timeout: float) -> bytes:
        ser = self._port()
        return await self._run(lambda: _read_bounded(ser, size, timeout, None))

    async def read_until(self, terminator: bytes, *, timeout: float, max_size: int = 256) -> bytes:
        ser = self._port()
        return await self._run(lambda: _read_bounded(ser, max_size, timeout, terminator))

    async def reset_input(self) -> None:
        ser = self._port()
        await self._run(ser.reset_input_buffer)

    async def send_break(self, duration: float) -> None:
        import errno

        ser = self._port()
        # Errors that mean "this device cannot hold a break" rather than "the port is gone".
        unsupported = {errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS}

        def _break() -> None:
            # Not pyserial's send_break(): on POSIX it calls tcsendbreak(), whose duration
            # counts in 0.25 s units (0 means 0.25-0.5 s on Linux), far off the 12 ms an
            # SDI-12 wake-up needs. Holding the break condition (TIOCSBRK/TIOCCBRK) around
            # a sleep gives the asked duration to within the scheduler's precision.
            try:
                ser.break_condition = True
            except OSError as exc:
                if exc.errno not in unsupported:
                    raise
                # Ptys and some adapters cannot signal a break: send without one.
                log.debug("%s: no break on this device (%s)", self.spec.port, exc)
                return
            try:
                time.sleep(duration)
            finally:
                ser.break_condition = False

        await self._run(_break)

    def shutdown(self) -> None:
        """Stop the worker thread (after :meth:`close`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_line(spec: BusSpec) -> Line:
    """The line a bus spec asks for."""
    if spec.type in SERIAL_BUS_TYPES:
        return SerialPortLine(spec)
    if spec.type == "modbus-rtu":
        if spec.backend == "minimalmodbus":
            return MinimalmodbusLine(spec)
        if spec.backend == "pymodbus":
            return PymodbusLine(spec)
        return RtuLine(spec)
    return PymodbusLine(spec)  # Modbus TCP


class _Guard:
    """What a driver sees during its turn on the bus: pauses between requests, and reports
    a dead line to the bus so it is reopened."""

    def __init__(self, bus: Bus, request_delay: float) -> None:
        self._bus = bus
        spec = bus.spec
        self._delay = max(request_delay, spec.request_delay)
        if spec.type == "modbus-rtu":
            # RTU frames are delimited by silence: the next request may start only t3.5
            # after the last answer ended (the bench measured 0.8 ms without this).
            self._delay = max(
                self._delay,
                silent_interval(
                    baudrate=spec.baudrate,
                    parity=spec.parity,
                    stopbits=spec.stopbits,
                    bytesize=spec.bytesize,
                ),
            )

    async def _guard(self, call: Callable[[], Any], *, pause: bool = True) -> Any:
        if pause:
            await self._bus._pause(self._delay)
        try:
            return await call()
        except ConnectionLost:
            self._bus._line_failed()
            raise
        except (DeviceTimeout, CrcError):
            if self._bus.spec.type == "modbus-rtu":
                await asyncio.sleep(SERIAL_QUIET_AFTER_TIMEOUT)
            raise
        finally:
            self._bus._last_request_end = time.monotonic()


class _GuardedModbus(_Guard):
    """A :class:`ModbusTransport` over the bus's Modbus line.

    Once a request to a unit timed out, its further requests in the same turn are not
    sent: they fail at once with :class:`DeviceTimeout`. A dead meter costs one timeout per
    poll instead of one per block, and on RTU its late answer cannot meet a next request.
    """

    def __init__(self, bus: Bus, request_delay: float) -> None:
        super().__init__(bus, request_delay)
        self._silent: set[int] = set()  # units that timed out in this turn

    async def _read(self, unit: int, call: Callable[[ModbusLine], Any]) -> Any:
        if unit in self._silent:
            raise DeviceTimeout(
                f"not sent: unit {unit} did not answer the previous request of this turn"
            )
        line = self._bus.line
        assert isinstance(line, ModbusLine)
        try:
            return await self._guard(lambda: call(line))
        except DeviceTimeout:
            self._silent.add(unit)
            raise

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        result: list[int] = await self._read(
            unit, lambda line: line.read_registers(unit, table, address, count, timeout=timeout)
        )
        return result

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        result: list[bool] = await self._read(
            unit, lambda line: line.read_bits(unit, table, address, count, timeout=timeout)
        )
        return result


class _GuardedSerial(_Guard):
    """A :class:`SerialTransport` over the bus's serial port; the pause applies before
    each write (a request), not before reads of its answer."""

    def _line(self) -> SerialPortLine:
        line = self._bus.line
        assert isinstance(line, SerialPortLine)
        return line

    async def write(self, data: bytes) -> None:
        line = self._line()
        await self._guard(lambda: line.write(data))

    async def read(self, size: int, *, timeout: float) -> bytes:
        line = self._line()
        result: bytes = await self._guard(lambda: line.read(size, timeout=timeout), pause=False)
        return result

    async def read_until(self, terminator: bytes, *, timeout: float, max_size: int = 256) -> bytes:
        line = self._line()
        result: bytes = await self._guard(
            lambda: line.read_until(terminator, timeout=timeout, max_size=max_size), pause=False
        )
        return result

    async def reset_input(self) -> None:
        line = self._line()
        await self._guard(line.reset_input, pause=False)

    async def send_break(self, duration: float) -> None:
        line = self._line()
        await self._guard(lambda: line.send_break(duration), pause=False)


class Bus:
    """Owner of one line: opening with backoff, one request at a time, reopen on loss."""

    def __init__(
        self,
        spec: BusSpec,
        line: Line | None = None,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.spec = spec
        self.line = line if line is not None else make_line(spec)
        self._lock = asyncio.Lock()
        self._last_request_end = 0.0
        self._opener: asyncio.Task[None] | None = None
        self._wait = tenacity.wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)
        self.opens = 0  # times the line was (re)opened: status and tests
        self.last_error: str | None = None
        self.failures = FailureLog(log, f"bus {spec.id}")

    async def start(self) -> None:
        """Try to open the line now; if that fails, keep trying in the background."""
        try:
            await self.line.open()
            self.opens += 1
        except ReadError as exc:
            self._note_down(str(exc))
            self._start_opener()

    async def stop(self) -> None:
        """Stop reopening and close the line."""
        if self._opener is not None:
            self._opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opener
            self._opener = None
        async with self._lock:
            await self.line.close()
        if isinstance(self.line, MinimalmodbusLine | RtuLine | SerialPortLine):
            self.line.shutdown()

    @contextlib.asynccontextmanager
    async def turn(
        self, request_delay: float = 0.0
    ) -> AsyncIterator[ModbusTransport | SerialTransport]:
        """Exclusive use of the line for one device poll: a :class:`ModbusTransport` on
        Modbus buses, a :class:`SerialTransport` on raw serial buses.

        Raises :class:`ConnectionLost` at once while the line is down.
        """
        async with self._lock:
            if not self.line.is_open:
                self._line_failed()
                raise ConnectionLost(self.last_error or f"bus {self.spec.id} is not open")
            if isinstance(self.line, SerialPortLine):
                yield _GuardedSerial(self, request_delay)
            else:
                yield _GuardedModbus(self, request_delay)

    async def _pause(self, delay: float) -> None:
        if delay > 0:
            remaining = self._last_request_end + delay - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)

    def _note_down(self, message: str) -> None:
        self.failures.failure(message, "reopening in the background with backoff")
        self.last_error = message

    def _line_failed(self) -> None:
        self._start_opener()

    def _start_opener(self) -> None:
        if self._opener is None or self._opener.done():
            self._opener = asyncio.get_running_loop().create_task(
                self._reopen(), name=f"reopen-{self.spec.id}"
            )

    async def _reopen(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            async with self._lock:
                try:
                    await self.line.open()
                except ReadError as exc:
                    self._note_down(str(exc))
                else:
                    self.opens += 1
                    self.failures.success()
                    self.last_error = None
                    return
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))
