"""Driver of the ACME LS-100 level sensor: an ASCII protocol on an RS-485 line.

The protocol (LS-100 Operating Manual, section 6.2)::

    #01R\\r                        read request to the sensor at address 01
    *01,L=1.234,T=12.5\\r\\n        its answer: the address, then KEY=VALUE fields
    *01,L=ERR,T=12.5\\r\\n          a failed channel reports ERR instead of a number

Replace the protocol, keep the shape: a pydantic model of the driver's keys of a device
entry (``device_model``), pure functions that build requests and parse answers (tested
without any I/O), and a :meth:`MyDeviceDriver.read` that does one poll over the transport
the core hands it and maps every failure onto the :class:`~swm_edge.driver.ReadError`
taxonomy. Scheduling, retries, backoff, buffering and publishing are the core's.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from swm_edge.driver import (
    BusSpec,
    CrcError,
    DeviceSpec,
    DeviceTimeout,
    Driver,
    FiniteFloat,
    PointName,
    PointValue,
    Reason,
    SerialTransport,
    Unit,
)

__all__ = ["MyDevice", "MyDeviceDriver", "MyPoint", "parse_answer", "request_for"]

#: The end of every answer.
TERMINATOR = b"\r\n"
#: Longest answer read: the address and a dozen fields. A longer one is garbage.
MAX_ANSWER = 128
# Bus types whose transport is a raw serial port (a SerialTransport), not Modbus.
RAW_SERIAL_BUS_TYPES = frozenset({"serial", "sdi12", "mbus"})
# The sensor answers within 50 ms (manual, 6.2.1); the rest of a poll is characters.
TURNAROUND_SECONDS = 0.05


class MyPoint(BaseModel):
    """One value of the sensor: the answer field it comes from, scaled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The SDK's own field types, so names and numbers are checked as the core checks them.
    name: PointName = Field(description="Point name, unique per device.")
    field: StrictStr = Field(
        pattern=r"^[A-Z]{1,4}$", description="Key of the value in the answer: L, T, ..."
    )
    unit: Unit | None = Field(default=None, description="Canonical unit of the value.")
    scale: FiniteFloat = Field(default=1.0, description="Value = raw * scale + offset.")
    offset: FiniteFloat = Field(default=0.0, description="Value = raw * scale + offset.")
    note: StrictStr | None = Field(
        default=None, description="Where in the manual the point is described (profiles)."
    )


class MyDevice(BaseModel):
    """The driver's keys of a device entry: every key but the core's (id, bus, interval,
    driver, profile, timeout, retries, ...). The core reports its errors at FILE:LINE:COL."""

    # extra="forbid": a misspelt key is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: StrictInt = Field(ge=1, le=99, description="RS-485 address set on the sensor.")
    # The core checks that point names are unique within the device (profile merged in).
    points: list[MyPoint] = Field(min_length=1, description="Values to read.")

    @model_validator(mode="after")
    def _on_a_raw_serial_bus(self, info: ValidationInfo) -> MyDevice:
        # The core validates with context={"bus": BusSpec}: a device on a Modbus bus would
        # get a ModbusTransport, which this driver cannot use; say so before it runs.
        bus = info.context.get("bus") if isinstance(info.context, dict) else None
        if isinstance(bus, BusSpec) and bus.type not in RAW_SERIAL_BUS_TYPES:
            # A custom error type carries a whole message: the core prints it as it is,
            # without appending the offending value (see swm_edge.sdk_types).
            raise PydanticCustomError(
                "mydevice_config",
                "the LS-100 needs a raw serial bus (type serial, with the sensor's "
                "line settings), not {bus_type}",
                {"bus_type": bus.type},
            )
        return self


def request_for(address: int) -> bytes:
    """The read request to the sensor at ``address``."""
    return f"#{address:02d}R\r".encode("ascii")


_ANSWER = re.compile(rb"\*(\d{2})((?:,[A-Z]{1,4}=[^,\r\n]*)*)\r\n")


def parse_answer(answer: bytes, address: int) -> dict[str, str]:
    """The fields of a complete answer (with its terminator) from the sensor at ``address``.

    Raises:
        ValueError: not a well-formed answer of that sensor.
    """
    match = _ANSWER.fullmatch(answer)
    if match is None:
        raise ValueError(f"not an LS-100 answer: {answer[:40]!r}")
    if int(match[1]) != address:
        # Two sensors with one address on the line, or a late answer: not ours to use.
        raise ValueError(f"answer from address {int(match[1])}, asked {address}")
    fields = match[2].decode("ascii", errors="replace").split(",")[1:]
    return dict(field.split("=", 1) for field in fields)


def _point_value(point: MyPoint, text: str | None) -> PointValue:
    """One point from its field's text; a missing or non-numeric field is a bad value."""
    try:
        raw = float(text) if text is not None else math.nan
    except ValueError:  # "ERR": the sensor's own channel failure
        raw = math.nan
    if not math.isfinite(raw):
        return PointValue.bad(Reason.DECODE, point.unit)
    return PointValue.good(raw * point.scale + point.offset, point.unit)


class MyDeviceDriver(Driver):
    """Reads an ACME LS-100: one request, one answer line per poll."""

    # Devices on these bus types use this driver without saying so. Empty: a device picks
    # it with `driver: mydevice` (the bus types here are shared with other protocols).
    bus_types: ClassVar[frozenset[str]] = frozenset()
    # `profile: acme-ls100` finds profiles/acme-ls100.yaml (installed as package data).
    profile_dirs: ClassVar[tuple[Path, ...]] = (Path(__file__).parent / "profiles",)
    device_model: ClassVar[type[BaseModel]] = MyDevice

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        """Wire time of one poll, for `swm-edge validate`'s line-load warning."""
        options: MyDevice = device.options
        bits_per_char = 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits
        # Request, then the address and each field at its widest ("L=-1234.567").
        chars = len(request_for(options.address)) + 5 + 12 * len(options.points)
        return TURNAROUND_SECONDS + chars * bits_per_char / bus.baudrate

    def __init__(self, device: DeviceSpec) -> None:
        super().__init__(device)
        options: MyDevice = device.options
        self.options = options
        self.request = request_for(options.address)

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """One poll: ask, read one answer line, parse it.

        Raises:
            DeviceTimeout: no complete answer in time (retried by the core).
            CrcError: an answer arrived but is garbled or from another sensor (retried).
        """
        assert isinstance(transport, SerialTransport)
        timeout = self.device.timeout or 1.0
        # A late answer to an earlier poll must not be taken for this one.
        await transport.reset_input()
        await transport.write(self.request)
        answer = await transport.read_until(TERMINATOR, timeout=timeout, max_size=MAX_ANSWER)
        if not answer.endswith(TERMINATOR):
            raise DeviceTimeout(f"no complete answer within {timeout:g} s: {answer[:40]!r}")
        try:
            fields = parse_answer(answer, self.options.address)
        except ValueError as exc:
            raise CrcError(str(exc)) from None
        # A value for every point: one failed channel must not hide the others.
        return {p.name: _point_value(p, fields.get(p.field)) for p in self.options.points}
