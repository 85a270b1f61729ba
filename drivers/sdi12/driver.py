"""The SDI-12 driver: reads SDI-12 sensors through a transparent serial adapter.

The core hands the driver a :class:`~swm_edge.driver.SerialTransport` on a bus of type
``sdi12`` (1200 baud 7E1 by default). The adapter is *transparent*: it turns the UART's
TX/RX into the single SDI-12 data wire and does nothing else, so this driver does what a
data recorder does (SDI-12 v1.4): wake the line with a break, send commands, wait for
service requests, page through ``aD0!``..``aD9!``, check CRCs, retry.

One poll runs each measurement the device's points need once (points grouped by their
measurement command), in the order the points first name them::

    break, 0M!  -> 00053        values ready within 5 s, 3 of them
    (wait)      <- 0            service request: ready now
    break, 0D0! -> 0+3.14+2.718+1.414

Written as a third-party driver would be: it imports only the public driver API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from swm_edge_drivers.sdi12.protocol import (
    ADDRESSES,
    CHAR_SECONDS,
    CRLF,
    Ack,
    Identification,
    Kind,
    Measurement,
    command,
    data_command,
    frame,
    parse_ack,
    parse_address,
    parse_identification,
    parse_values,
    response_size,
)

from swm_edge.driver import (
    BusSpec,
    DecodeError,
    DeviceSpec,
    DeviceTimeout,
    Driver,
    FiniteFloat,
    PointName,
    PointValue,
    ReadError,
    SerialTransport,
    Unit,
)

__all__ = [
    "DEFAULT_MEASUREMENT_SECONDS",
    "DEFAULT_RESPONSE_TIMEOUT",
    "Sdi12Device",
    "Sdi12Driver",
    "Sdi12Point",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to wait for the first character of a response when the device has no
#: ``timeout`` (the agent always sets it, from the bus's when the device has none). A
#: sensor starts answering within 15 ms; a USB adapter adds a few tens of milliseconds.
DEFAULT_RESPONSE_TIMEOUT = 0.2
#: Measurement time assumed per ``M``/``C`` measurement by :meth:`Sdi12Driver.estimate_seconds`
#: when the device does not give ``measurement_seconds``: most sensors announce 0-2 s.
DEFAULT_MEASUREMENT_SECONDS = 1.0
# The standard's limit for a sensor to start its response after a command (15 ms).
_TURNAROUND = 0.015
# Widest value on the wire: sign, 7 digits, decimal point. The estimate assumes it, so
# it is an upper bound of the data lines' time.
_VALUE_CHARS = 9
# Longest line the driver reads while waiting for a service request: an address and
# CR LF, with room for a stray character or two.
_SERVICE_REQUEST_SIZE = 8


def _address_before(value: Any) -> Any:
    # YAML reads "address: 0" as the integer 0; the standard addresses 0-9 are meant.
    if type(value) is int and 0 <= value <= 9:
        return str(value)
    return value


def _check_address(value: str) -> str:
    if len(value) != 1 or value not in ADDRESSES:
        raise PydanticCustomError(
            "sdi12_address",
            f"{value!r} is no SDI-12 address: one character, 0-9, A-Z or a-z",
        )
    return value


def _check_measurement(value: str) -> str:
    try:
        Measurement.parse(value)
    except ValueError:
        raise PydanticCustomError(
            "sdi12_command",
            f"unknown measurement command {value!r}: use M, M1..M9, C, C1..C9 or R0..R9 "
            "(for the CRC variants MC, CC, RC0... set crc: true)",
        ) from None
    return value


_MEASUREMENT_NAMES = [
    "M",
    *(f"M{i}" for i in range(1, 10)),
    "C",
    *(f"C{i}" for i in range(1, 10)),
    *(f"R{i}" for i in range(10)),
]

Address = Annotated[
    StrictStr,
    BeforeValidator(_address_before),
    AfterValidator(_check_address),
    # The integers 0-9 are listed because that is what YAML makes of "address: 0".
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[0-9A-Za-z]$"},
                {"type": "integer", "minimum": 0, "maximum": 9},
            ]
        }
    ),
]
MeasurementName = Annotated[
    StrictStr,
    AfterValidator(_check_measurement),
    WithJsonSchema({"type": "string", "enum": _MEASUREMENT_NAMES}),
]


class Sdi12Point(BaseModel):
    """One value of an SDI-12 sensor: the ``index``-th value its measurement returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PointName = Field(description="Point name, unique per device.")
    index: StrictInt = Field(
        ge=1,
        le=99,
        description="Position (1-based) of the value in the measurement's values, counted "
        "across the data pages D0, D1, ...",
    )
    unit: Unit | None = Field(default=None, description="Canonical unit of the value.")
    command: MeasurementName | None = Field(
        default=None,
        description="Measurement that returns the value: M, M1..M9, C, C1..C9, R0..R9; "
        "default: the device's command.",
    )
    crc: StrictBool | None = Field(
        default=None, description="Ask for and check the CRC; default: the device's crc."
    )
    scale: FiniteFloat = Field(
        default=1.0, description="Published value = raw * scale + offset (unit conversions)."
    )
    offset: FiniteFloat = Field(default=0.0, description="Added after scaling.")
    note: StrictStr | None = Field(
        default=None, description="Where the value is documented, e.g. a manual's page."
    )


class Sdi12Device(BaseModel):
    """The SDI-12 driver's keys of a device entry (``device_model`` of :class:`Sdi12Driver`).

    Timing keys are seconds; the response timeout is the core's ``timeout`` key. Validate
    with ``context={"bus": BusSpec}`` to check the bus is an SDI-12 line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Address = Field(description="Sensor address: one character, 0-9, A-Z or a-z.")
    command: MeasurementName = Field(
        default="M",
        description="Measurement of points that name none: M, M1..M9 (service request), "
        "C, C1..C9 (concurrent, up to 99 values), R0..R9 (continuous, values at once).",
    )
    crc: StrictBool = Field(
        default=False,
        description="Use the CRC variants (aMC!, aCC!, aRC0!) and check every data line's CRC.",
    )
    points: tuple[Sdi12Point, ...] = Field(
        default=(),
        description="Points; they add to the profile's and replace same-named ones.",
    )
    attempts: StrictInt = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries per command (each with a break) before a sensor counts as not "
        "answering; the standard has a recorder retry an unanswered or invalid command, "
        "three tries is common practice (e.g. Campbell Scientific loggers).",
    )
    break_duration: FiniteFloat = Field(
        default=0.015, ge=0.012, le=0.5, description="Break before each command (>= 12 ms)."
    )
    marking: FiniteFloat = Field(
        default=0.010,
        ge=0.00833,
        le=0.08,
        description="Marking after the break before the command (8.33 ms to 87 ms).",
    )
    ready_margin: FiniteFloat = Field(
        default=0.1,
        ge=0,
        le=10,
        description="Extra wait for a service request past the announced time, for "
        "adapter latency and sensors that are a little late.",
    )
    max_wait: FiniteFloat = Field(
        default=60.0,
        ge=0,
        le=999,
        description="Longest wait for a measurement, whatever the sensor announces; the "
        "line is held meanwhile.",
    )
    measurement_seconds: FiniteFloat | None = Field(
        default=None,
        ge=0,
        le=999,
        description="Typical time of one M/C measurement (until the service request), for "
        "the line-load estimate of 'swm-edge validate'; default 1 s.",
    )

    @field_validator("address")
    @classmethod
    def _bus_is_sdi12(cls, address: str, info: ValidationInfo) -> str:
        # Checked here because the address is the one key every SDI-12 device has.
        bus = info.context.get("bus") if isinstance(info.context, dict) else None
        if isinstance(bus, BusSpec) and bus.type != "sdi12":
            raise PydanticCustomError(
                "sdi12_bus_type",
                f"an SDI-12 sensor needs an sdi12 bus, but bus {bus.id!r} is {bus.type}",
            )
        return address

    @model_validator(mode="after")
    def _points_fit_their_measurement(self) -> Sdi12Device:
        # Every problem is reported, not only the first: a config's errors show at once.
        errors: list[InitErrorDetails] = []
        seen: set[str] = set()
        for k, point in enumerate(self.points):
            if point.name in seen:
                message = f"duplicate point name {point.name!r}"
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("sdi12_point_name", message),
                        loc=("points", k, "name"),
                        input=point.name,
                    )
                )
            seen.add(point.name)
            measurement = Measurement.parse(point.command or self.command)
            if point.index <= measurement.max_count:
                continue
            message = (
                f"point {point.name!r} is value {point.index}, but a {measurement.name} "
                f"measurement returns at most {measurement.max_count} values"
            )
            if measurement.kind is Kind.MEASURE:
                message += " (C returns up to 99)"
            ctx = {} if point.command else {"related": "command"}
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("sdi12_point_index", message, ctx),
                    loc=("points", k, "index"),
                    input=point.index,
                )
            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


@dataclass(frozen=True, slots=True)
class _Group:
    """The points one measurement command delivers."""

    measurement: Measurement
    points: tuple[Sdi12Point, ...]

    @property
    def count(self) -> int:
        """Values needed: up to the highest index asked for."""
        return max(p.index for p in self.points)


def _groups(options: Sdi12Device, points: tuple[Any, ...]) -> list[_Group]:
    by_key: dict[tuple[str, bool], list[Sdi12Point]] = {}
    for point in points:
        if not isinstance(point, Sdi12Point):
            raise TypeError(f"point {point!r} is not an SDI-12 point")
        key = (point.command or options.command, options.crc if point.crc is None else point.crc)
        by_key.setdefault(key, []).append(point)
    return [
        _Group(Measurement.parse(name, crc=crc), tuple(pts)) for (name, crc), pts in by_key.items()
    ]


class Sdi12Driver(Driver):
    """Reads one SDI-12 sensor (one address) per device; several share a bus (line)."""

    bus_types: ClassVar[frozenset[str]] = frozenset({"sdi12"})
    profile_dirs: ClassVar[tuple[Path, ...]] = (Path(__file__).parent / "profiles",)
    device_model: ClassVar[type[BaseModel]] = Sdi12Device

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        """Line time of one poll, for the line-load warning.

        Per command: the break and marking, the sensor's turnaround (15 ms at most), the
        command and its response at the bus's speed (1200 baud, 10 bits per character by
        default). Data lines are counted with every value at its widest (9 characters), so
        this is an upper bound of the wire time. Per ``M``/``C`` measurement add the time
        the sensor takes: ``measurement_seconds`` if the device (or its profile) gives it,
        else :data:`DEFAULT_MEASUREMENT_SECONDS` (the announced ``ttt`` is only known at
        run time; the line is held until the values are read). ``R`` measurements take no
        extra time. Retries are not counted.
        """
        opts = device.options
        if not isinstance(opts, Sdi12Device):
            return None
        bits = 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits
        char = bits / bus.baudrate if bus.baudrate > 0 else CHAR_SECONDS
        per_command = opts.break_duration + opts.marking + _TURNAROUND
        wait = (
            opts.measurement_seconds
            if opts.measurement_seconds is not None
            else DEFAULT_MEASUREMENT_SECONDS
        )
        total = 0.0
        for group in _groups(opts, device.points):
            m = group.measurement
            crc = 3 if m.crc else 0
            cmd = len(command(opts.address, m.body))
            if m.kind is Kind.CONTINUOUS:
                line = cmd + 1 + group.count * _VALUE_CHARS + crc + 2
                total += per_command + line * char
                continue
            ack = cmd + (5 if m.kind is Kind.MEASURE else 6) + 2
            total += per_command + ack * char + wait
            if m.kind is Kind.MEASURE:
                total += 3 * char  # the service request
            per_page = max(1, m.values_limit // _VALUE_CHARS)
            pages = math.ceil(group.count / per_page)
            total += pages * (per_command + (4 + 1 + crc + 2) * char)
            total += group.count * _VALUE_CHARS * char
        return total

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        opts = device.options
        if not isinstance(opts, Sdi12Device):
            raise TypeError("an SDI-12 device needs Sdi12Device options")
        self.options: Sdi12Device = opts
        self.address: str = opts.address
        self.groups: list[_Group] = _groups(opts, device.points)
        self.timeout: float = (
            device.timeout if device.timeout is not None else DEFAULT_RESPONSE_TIMEOUT
        )
        # Whether the sensor gave any valid response in the current poll.
        self._heard = False

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """Run each measurement once; a failed measurement marks only its points bad.

        A sensor that never answered this poll raises (the core retries, then marks every
        point). After a timeout or a garbled line the rest of the poll is skipped: the line
        is in trouble, and its time belongs to the other sensors on it too.
        """
        if not isinstance(transport, SerialTransport):
            raise TypeError("the SDI-12 driver needs a SerialTransport (a bus of type sdi12)")
        values: dict[str, PointValue] = {}
        self._heard = False
        for i, group in enumerate(self.groups):
            try:
                raw = await self._measure(transport, group)
            except ReadError as exc:
                if exc.retryable and not self._heard:
                    # Not a word from the sensor this poll: the device failed as a whole.
                    raise
                log.debug("%s: %s: %s", self.device.id, group.measurement.name, exc)
                for point in group.points:
                    values[point.name] = PointValue.bad(exc.reason, point.unit)
                if exc.retryable:
                    for later in self.groups[i + 1 :]:
                        for point in later.points:
                            values[point.name] = PointValue.bad(exc.reason, point.unit)
                    break
                continue
            for point in group.points:
                values[point.name] = _point_value(point, raw)
        return values

    async def _measure(self, t: SerialTransport, group: _Group) -> tuple[float, ...]:
        """The values of one measurement, in order, as many as the sensor gave."""
        m = group.measurement
        limit = m.values_limit
        if m.kind is Kind.CONTINUOUS:
            return await self._exchange(
                t,
                command(self.address, m.body),
                response_size(limit, crc=m.crc),
                lambda line: parse_values(line, self.address, crc=m.crc, limit=limit),
            )
        ack: Ack = await self._exchange(
            t,
            command(self.address, m.body),
            response_size(5),
            lambda line: parse_ack(line, self.address, m),
        )
        if ack.count == 0:
            raise DecodeError(f"{m.name}: the sensor has no values for this measurement")
        await self._wait_ready(t, m, ack)
        # Pages up to the highest value a point needs: the rest would cost line time only.
        wanted = min(ack.count, group.count)
        values: list[float] = []
        for page in range(10):
            got = await self._exchange(
                t,
                data_command(self.address, page),
                response_size(limit, crc=m.crc),
                lambda line: parse_values(line, self.address, crc=m.crc, limit=limit),
            )
            if not got:
                break
            values.extend(got)
            if len(values) >= wanted:
                break
        if not values:
            # An aborted or unfinished measurement leaves nothing to send: the sensor took
            # longer than it announced.
            raise DeviceTimeout(
                f"{m.name}: {ack.count} values announced within {ack.seconds} s, "
                "none ready when asked"
            )
        return tuple(values)

    async def _wait_ready(self, t: SerialTransport, m: Measurement, ack: Ack) -> None:
        """Wait until the values are ready: the announced seconds, or for ``M`` until the
        service request ``a<CR><LF>`` if that comes first."""
        if ack.seconds == 0:
            return
        wait = min(float(ack.seconds), self.options.max_wait)
        if m.kind is not Kind.MEASURE:
            # Concurrent measurements send no service request: wait the announced time.
            await asyncio.sleep(wait)
            return
        deadline = time.monotonic() + wait + self.options.ready_margin
        while (left := deadline - time.monotonic()) > 0:
            raw = await t.read_until(CRLF, timeout=left, max_size=_SERVICE_REQUEST_SIZE)
            if raw.strip(b"\x00") == self.address.encode("ascii") + CRLF:
                return
            if not raw:
                break
            # Noise, or another sensor's line: keep waiting for ours.
            log.debug("%s: ignored %r while waiting for service request", self.device.id, raw)
        # No service request: the standard has the recorder ask for the data anyway.

    async def _exchange(
        self, t: SerialTransport, cmd: bytes, size: int, parse: Callable[[bytes], T]
    ) -> T:
        """Send ``cmd`` and parse its response, retrying a missing or garbled one.

        Every try wakes the line with a break first: the standard requires a break once
        the line has been marking for 87 ms, and a USB adapter's latency makes staying
        under that unreliable; a break is always allowed. Reads are bounded: the first
        character within the response timeout, the rest of the line within its length at
        1200 baud (``size`` characters plus the echo some adapters produce).
        """
        last: ReadError | None = None
        for _ in range(self.options.attempts):
            try:
                result = parse(await self._once(t, cmd, size))
            except ReadError as exc:
                if not exc.retryable:
                    raise
                last = exc
                log.debug("%s: %r: %s", self.device.id, cmd, exc)
                continue
            self._heard = True
            return result
        assert last is not None
        raise last

    async def _once(self, t: SerialTransport, cmd: bytes, size: int) -> bytes:
        await t.reset_input()  # a late answer to an earlier try must not pass for this one
        await t.send_break(self.options.break_duration)
        await asyncio.sleep(self.options.marking)
        await t.write(cmd)
        first = await t.read(1, timeout=self.timeout)
        if not first:
            raise DeviceTimeout(f"no response to {cmd.decode('ascii')} within {self.timeout:g} s")
        most = len(cmd) + size
        rest = await t.read_until(
            CRLF, timeout=self.timeout + most * CHAR_SECONDS, max_size=most - 1
        )
        return frame(first + rest, cmd)

    async def identify(self, transport: SerialTransport) -> Identification:
        """Ask the sensor who it is (``aI!``): vendor, model, version; for diagnostics."""
        return await self._exchange(
            transport,
            command(self.address, "I"),
            response_size(32),
            lambda line: parse_identification(line, self.address),
        )

    async def query_address(self, transport: SerialTransport) -> str:
        """The address of the only sensor on the line (``?!``); with several sensors
        their answers collide and the result is a garbled line (:class:`CrcError`)."""
        return await self._exchange(transport, command("?", ""), response_size(0), parse_address)


def _point_value(point: Sdi12Point, values: tuple[float, ...]) -> PointValue:
    if point.index > len(values):
        # The sensor returned fewer values than this point's position: a sensor missing
        # a probe, or a profile that does not fit the sensor's configuration.
        return PointValue.bad(DecodeError.reason, point.unit)
    return PointValue.good(values[point.index - 1] * point.scale + point.offset, point.unit)
