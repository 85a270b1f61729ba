"""The public driver API: the only module a driver imports from the core.

A driver turns *one poll* of one device into point values. The core owns everything
around that: opening the line, scheduling, retries, backoff, buffering and publishing.

A driver author implements :class:`Driver`, receives a transport from the core (for Modbus
buses a :class:`ModbusTransport`), and reports failures either per point (a bad
:class:`PointValue` with a reason) or for the whole device by raising a :class:`ReadError`.
Drivers register under the entry-point group ``swm_edge.drivers``::

    [project.entry-points."swm_edge.drivers"]
    mymeter = "my_package.driver:MyMeterDriver"

The field types of a ``device_model`` (:data:`PointName`, :data:`FiniteFloat`,
:data:`Unit`) and :func:`field_error` are re-exported from :mod:`swm_edge.sdk_types`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from swm_edge.model import (
    BusSpec,
    DataType,
    DeviceSpec,
    Point,
    PointSpec,
    PointValue,
    Quality,
    Reading,
    Reason,
    Table,
    Value,
    WordOrder,
    exception_reason,
)
from swm_edge.sdk_types import FiniteFloat, PointName, Unit, field_error

ENTRY_POINT_GROUP = "swm_edge.drivers"

__all__ = [
    "ENTRY_POINT_GROUP",
    "BusSpec",
    "ConnectionLost",
    "CrcError",
    "DataType",
    "DecodeError",
    "DeviceException",
    "DeviceSpec",
    "DeviceTimeout",
    "Driver",
    "DriverNotFound",
    "FiniteFloat",
    "ModbusTransport",
    "Point",
    "PointName",
    "PointSpec",
    "PointValue",
    "Quality",
    "ReadError",
    "Reading",
    "Reason",
    "SerialTransport",
    "Table",
    "Unit",
    "Value",
    "WordOrder",
    "available_drivers",
    "field_error",
    "load_driver",
]


class ReadError(Exception):
    """A read failed; ``reason`` is one of :class:`Reason` or ``exception:<code>``."""

    reason: str = Reason.DRIVER_ERROR
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.__class__.__name__)
        if reason is not None:
            self.reason = reason


class DeviceTimeout(ReadError):
    """No (complete) answer within the timeout."""

    reason = Reason.TIMEOUT
    retryable = True


class CrcError(ReadError):
    """Bytes arrived but did not form a valid frame (bad CRC, garbage, wrong length)."""

    reason = Reason.CRC
    retryable = True


class ConnectionLost(ReadError):
    """The line or connection itself is unavailable (port gone, TCP refused or reset)."""

    reason = Reason.CONNECTION
    retryable = True


class DecodeError(ReadError):
    """The device answered, but the answer could not be turned into values."""

    reason = Reason.DECODE


class DeviceException(ReadError):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail or f"exception code {code}", reason=exception_reason(code))
        self.code = code


@runtime_checkable
class ModbusTransport(Protocol):
    """What the core hands a Modbus driver: one request at a time on a line it owns.

    Calls raise :class:`ReadError` subclasses, never stack-specific exceptions.
    """

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        """Read ``count`` 16-bit registers from a register table (holding or input)."""
        ...

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        """Read ``count`` bits from a bit table (coil or discrete)."""
        ...


@runtime_checkable
class SerialTransport(Protocol):
    """What the core hands a driver on a raw serial bus (``mbus``, ``sdi12``).

    The bus owns the port (opened with the bus's baud rate and framing, reopened when it
    disappears); the driver owns the protocol. Reads are bounded in time and size. Calls
    raise :class:`ConnectionLost` when the port is gone, never OS or pyserial exceptions.
    """

    async def write(self, data: bytes) -> None:
        """Send bytes and wait until they left the port."""
        ...

    async def read(self, size: int, *, timeout: float) -> bytes:
        """Up to ``size`` bytes: returns as soon as ``size`` arrived, or what arrived within
        ``timeout`` seconds (possibly ``b""``)."""
        ...

    async def read_until(self, terminator: bytes, *, timeout: float, max_size: int = 256) -> bytes:
        """Bytes up to and including ``terminator``; on timeout or after ``max_size`` bytes,
        what arrived (without the terminator)."""
        ...

    async def reset_input(self) -> None:
        """Discard whatever arrived and was not read (stale or late answers)."""
        ...

    async def send_break(self, duration: float) -> None:
        """Hold the line in the break condition for ``duration`` seconds (SDI-12 wake-up)."""
        ...


class Driver(ABC):
    """Base class of every device driver.

    ``bus_types`` lists the bus types whose devices use this driver by default; a device
    picks another driver explicitly with ``driver: NAME`` in the config.
    """

    bus_types: ClassVar[frozenset[str]] = frozenset()
    #: Folders of device profiles (``NAME.yaml``) this driver ships; ``profile: NAME`` finds them.
    profile_dirs: ClassVar[tuple[Path, ...]] = ()
    #: True when the driver can read a device configured without points, naming the points
    #: from what the device sends (M-Bus: every record of the telegram).
    discovers_points: ClassVar[bool] = False
    #: Validates the driver's own keys of a device entry (all but the core keys); must have
    #: a ``points`` list whose items have ``name`` and ``unit``. See docs/decisions/0003.
    device_model: ClassVar[type[BaseModel]]

    @classmethod
    def points_of(cls, options: BaseModel) -> tuple[Point, ...]:
        """The device's points from its validated options (default: ``options.points``)."""
        return tuple(getattr(options, "points", ()))

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        """Wire time of one poll of ``device`` on a serial ``bus``, for the line-load
        warning of ``swm-edge validate``; ``None`` when the driver cannot tell."""
        return None

    def __init__(self, device: DeviceSpec) -> None:
        self.device = device

    @abstractmethod
    async def read(self, transport: Any) -> dict[str, PointValue]:
        """Read every point of the device once.

        Return a value for every point (bad ones with a reason), or raise :class:`ReadError`
        when nothing could be read; the core retries retryable errors and backs off devices
        that keep failing.
        """


class DriverNotFound(LookupError):
    """No installed driver has that name."""


def available_drivers() -> dict[str, Any]:
    """Installed drivers by name (entry points, not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_driver(name: str) -> type[Driver]:
    """Load the driver class registered under ``name``."""
    eps = available_drivers()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise DriverNotFound(f"no driver named {name!r} is installed (installed: {known})")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverNotFound(f"entry point {name!r} does not name a swm_edge.driver.Driver")
    return cls
