"""Plain value types that cross module borders.

These are deliberately small frozen dataclasses: pydantic models live at the edges
(config files, remote input); everything inside the agent passes these around.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Quality(StrEnum):
    """Quality of one point value."""

    GOOD = "good"
    BAD = "bad"


class Reason(StrEnum):
    """Why a value is bad: a small closed set, so dashboards can count them.

    A Modbus exception response is reported as ``exception:<code>`` (see :func:`exception_reason`).
    """

    TIMEOUT = "timeout"
    CRC = "crc"
    CONNECTION = "connection"
    DECODE = "decode"
    DRIVER_ERROR = "driver-error"
    CLOCK = "clock"


def exception_reason(code: int) -> str:
    """The reason string for a Modbus exception response with this exception code."""
    return f"exception:{code}"


class Table(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE)


class DataType(StrEnum):
    """Value types a point can have."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"


class WordOrder(StrEnum):
    """Order of 16-bit words in a multi-register value; ``big`` = high word first."""

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One named value of a device and where it lives in the Modbus tables."""

    name: str
    table: Table
    address: int
    type: DataType
    word_order: WordOrder = WordOrder.BIG
    byte_swap: bool = False
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None


Value = int | float | bool | None


@dataclass(frozen=True, slots=True)
class PointValue:
    """The result of reading one point: a value with its quality, or a bad quality with a reason."""

    value: Value
    quality: Quality
    unit: str | None = None
    error: str | None = None

    @staticmethod
    def good(value: Value, unit: str | None = None) -> PointValue:
        """A good value; equal to ``PointValue(value, Quality.GOOD, unit)``, built faster."""
        return _point_value(value, _GOOD, unit, None)

    @staticmethod
    def bad(reason: str, unit: str | None = None) -> PointValue:
        """A bad value with its reason; equal to ``PointValue(None, Quality.BAD, unit, reason)``."""
        return _point_value(None, _BAD, unit, reason)


# A frozen dataclass's generated __init__ sets every field through object.__setattr__; for
# PointValue, built once per point and poll, that was several percent of the agent's CPU
# (docs/performance.md). Writing the slots through their descriptors does the same in less
# than half the time; it is safe here because nothing else is initialised. Enum members are
# bound once, too: on Python 3.11 ``Quality.GOOD`` costs more than a slot write.
_GOOD, _BAD = Quality.GOOD, Quality.BAD
_new_object = object.__new__
_set_value = PointValue.__dict__["value"].__set__
_set_quality = PointValue.__dict__["quality"].__set__
_set_unit = PointValue.__dict__["unit"].__set__
_set_error = PointValue.__dict__["error"].__set__


def _point_value(value: Value, quality: Quality, unit: str | None, error: str | None) -> PointValue:
    pv: PointValue = _new_object(PointValue)
    _set_value(pv, value)
    _set_quality(pv, quality)
    _set_unit(pv, unit)
    _set_error(pv, error)
    return pv


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of one device: every point's value at time ``ts`` (UTC epoch seconds).

    ``clock`` says whether ``ts`` can be trusted: ``None`` when the wall clock was trusted
    at the poll, ``"unsynchronized"`` (:data:`swm_edge.clock.UNSYNCHRONIZED`) when it was
    not (the kernel reported no NTP sync, or it showed an impossible date such as 1970), so
    ``ts`` is only approximate. The values are as good as any; consumers order such readings
    by ``seq``, not by ``ts``. Published as the wire contract's ``clock`` field.
    """

    device_id: str
    ts: float
    points: Mapping[str, PointValue]
    clock: str | None = None


@dataclass(frozen=True, slots=True)
class BusSpec:
    """A physical line or connection, as configured."""

    id: str
    type: str  # "modbus-rtu" | "modbus-tcp" (later: "mbus", "sdi12")
    timeout: float
    # serial
    port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    backend: str = "native"  # modbus-rtu: "native" | "pymodbus" | "minimalmodbus"
    # tcp
    host: str | None = None
    tcp_port: int = 502
    # quirks shared by every device on the bus
    request_delay: float = 0.0


class Point(Protocol):
    """What the core needs of any driver's point: its name and unit (for bad readings)."""

    @property
    def name(self) -> str: ...

    @property
    def unit(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to poll, with its points resolved (profile merged with overrides).

    ``options`` is the driver's validated device model (see ``Driver.device_model``);
    ``points`` are that driver's point objects.
    """

    id: str
    bus: str
    interval: float
    points: tuple[Point, ...]
    driver: str = "modbus"
    timeout: float | None = None  # None: the bus timeout
    retries: int = 1
    request_delay: float = 0.0
    offline_after: int = 3  # consecutive failed polls before the device is backed off
    offline_backoff_max: float = 300.0  # seconds between attempts at most, once backed off
    options: Any = None
