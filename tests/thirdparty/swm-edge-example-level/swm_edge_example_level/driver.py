"""Driver of a (fictional) ASCII level sensor: ``R\\r`` asks, ``L=1.234\\r\\n`` answers
with the level in metres."""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from swm_edge.driver import (
    CrcError,
    DecodeError,
    DeviceTimeout,
    Driver,
    PointValue,
    SerialTransport,
)
from swm_edge.units import Unit

REQUEST = b"R\r"
# A whole answer; anything else that arrived is a broken frame.
ANSWER = re.compile(rb"L=([^\r\n]*)\r\n")


class LevelPoint(BaseModel):
    """The sensor's one value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "level"
    unit: Unit | None = "m"


class LevelDevice(BaseModel):
    """The driver's keys of a device entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datum: float = Field(
        default=0.0, strict=True, description="Height of the sensor's zero above the datum, m."
    )
    points: tuple[LevelPoint, ...] = Field(default=(LevelPoint(),), min_length=1, max_length=1)


class LevelDriver(Driver):
    """One request, one answer line per poll."""

    # No bus type picks it by default: a device names it with `driver: example-level`.
    bus_types: ClassVar[frozenset[str]] = frozenset()
    device_model: ClassVar[type[BaseModel]] = LevelDevice

    async def read(self, transport: Any) -> dict[str, PointValue]:
        """Ask for the level and parse the answer."""
        assert isinstance(transport, SerialTransport)
        options: LevelDevice = self.device.options
        point = options.points[0]
        timeout = self.device.timeout or 1.0
        # A late answer to an earlier poll must not be taken for this one.
        await transport.reset_input()
        await transport.write(REQUEST)
        answer = await transport.read_until(b"\r\n", timeout=timeout, max_size=32)
        if not answer.endswith(b"\r\n"):
            raise DeviceTimeout(f"no complete answer within {timeout:g} s: {answer!r}")
        match = ANSWER.fullmatch(answer)
        if match is None:
            raise CrcError(f"not a level answer: {answer!r}")
        try:
            level = float(match[1])
        except ValueError:
            raise DecodeError(f"level is not a number: {match[1]!r}") from None
        if not math.isfinite(level):  # "L=nan" is no measurement, and JSON cannot carry it
            raise DecodeError(f"level is not a number: {match[1]!r}")
        return {point.name: PointValue.good(level + options.datum, point.unit)}
