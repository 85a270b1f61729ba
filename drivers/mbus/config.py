"""The M-Bus keys of a device entry: how to address the meter and which records to publish.

:class:`MbusDevice` is the ``device_model`` of the wired M-Bus driver (see
docs/decisions/0003-driver-sdk.md). It follows the conventions of
:mod:`swm_edge.sdk_types`: strict types (YAML guesses scalar types), errors of the
custom type ``mbus_config`` carrying a complete message and the key they are about in
``ctx["field"]``, and a bus check when validated with ``context={"bus": BusSpec}``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import partial
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from swm_edge_drivers.mbus.frames import SecondaryAddress
from swm_edge_drivers.mbus.records import BASE_UNITS, UNIT_FACTORS, Function, Quantity

from swm_edge.driver import BusSpec, PointName, Unit, field_error

__all__ = ["MBUS_BUS_TYPES", "MbusDevice", "MbusPoint", "time_zone"]

#: Bus types the driver runs on.
MBUS_BUS_TYPES = frozenset({"mbus"})
# DIF bit 6 plus 4 bits in each of up to 10 DIFEs; 2 tariff and 1 subunit bit per DIFE.
_MAX_STORAGE = (1 << 41) - 1
_MAX_TARIFF = (1 << 20) - 1
_MAX_SUBUNIT = (1 << 10) - 1

# A model validator's error at one key; the type tells M-Bus errors from the core's.
_error = partial(field_error, error_type="mbus_config")


def time_zone(name: str) -> dt.tzinfo:
    """The time zone of an IANA name (``"UTC"`` needs no time zone database).

    Raises:
        ValueError: unknown name.
    """
    if name == "UTC":
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None


class MbusPoint(BaseModel):
    """One published value: the data record it comes from and the unit to publish it in.

    A record matches when its quantity, function, storage number, tariff, subunit and
    unapplied VIF extensions (``vife``) all equal the point's; the first matching record
    of the poll's telegrams is used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PointName = Field(description="Point name, unique within the device.")
    quantity: Quantity = Field(
        description="What the record measures; status and access_number come from the "
        "telegram header."
    )
    unit: Unit | None = Field(
        default=None,
        description="Unit to publish in (converted from the record's unit); default: the "
        "quantity's base unit (m3, m3/h, Cel, bar, kWh, W, s, 1). Dates are Unix seconds (s).",
    )
    storage: StrictInt = Field(
        default=0,
        ge=0,
        le=_MAX_STORAGE,
        description="Storage number: 0 = current value, 1.. = stored (e.g. due-date) values.",
    )
    tariff: StrictInt = Field(default=0, ge=0, le=_MAX_TARIFF, description="Tariff number.")
    subunit: StrictInt = Field(
        default=0, ge=0, le=_MAX_SUBUNIT, description="Subunit (device) number."
    )
    function: Function = Field(
        default=Function.INSTANTANEOUS,
        description="instantaneous, maximum, minimum or error (value during error state).",
    )
    vife: tuple[Annotated[StrictInt, Field(ge=0, le=0x7F)], ...] = Field(
        default=(),
        description="VIF extension codes (bit 7 cleared) the record must carry besides the "
        "applied multiplicative corrections, e.g. [0x3B] for forward-flow-only volume.",
    )
    note: StrictStr | None = Field(
        default=None, description="Where the record is documented (not used)."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_unit(cls, data: Any) -> Any:
        # The base unit is filled in here, not left None, because the core reads a point's
        # unit for bad readings and publishing, and a value always has a unit.
        if isinstance(data, dict) and data.get("unit") is None:
            try:
                quantity = Quantity(str(data.get("quantity")))
            except ValueError:
                return data  # reported at "quantity"
            return {**data, "unit": BASE_UNITS[quantity]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MbusPoint:
        allowed = UNIT_FACTORS[self.quantity]
        if self.unit not in allowed:
            listed = ", ".join(allowed)
            raise _error(
                "unit",
                f"a {self.quantity} point cannot be published in {self.unit!r}; allowed: {listed}",
                related="quantity",
            )
        if self.quantity.in_header:
            for key, default in (
                ("storage", 0),
                ("tariff", 0),
                ("subunit", 0),
                ("function", Function.INSTANTANEOUS),
                ("vife", ()),
            ):
                if getattr(self, key) != default:
                    raise _error(
                        key,
                        f"{key} does not apply to {self.quantity}, which comes from the "
                        "telegram header, not a record",
                        related="quantity",
                    )
        return self


class MbusDevice(BaseModel):
    """The M-Bus keys of a device entry (all but the core keys).

    Exactly one of ``address`` (primary addressing) and ``secondary`` (selection by
    identification number, for buses with many meters) is required.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: StrictInt | None = Field(
        default=None, ge=0, le=250, description="Primary address 0..250."
    )
    secondary: StrictStr | None = Field(
        default=None,
        pattern=r"^[0-9Ff]{8}$",
        description="Secondary address: the 8-digit identification number; F = any digit.",
    )
    manufacturer: StrictStr | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{3}$",
        description="Secondary selection: the 3-letter manufacturer id (default: any).",
    )
    version: StrictInt | None = Field(
        default=None, ge=0, le=255, description="Secondary selection: version (default: any)."
    )
    medium: StrictInt | None = Field(
        default=None,
        ge=0,
        le=255,
        description="Secondary selection: medium code, e.g. 7 = water (default: any).",
    )
    reset: StrictBool = Field(
        default=True,
        description="Send SND_NKE before each poll, so the meter starts with its first telegram.",
    )
    max_telegrams: StrictInt = Field(
        default=8,
        ge=1,
        le=32,
        description="Most telegrams read per poll from a meter that announces more records.",
    )
    timezone: StrictStr = Field(
        default="UTC",
        description="IANA time zone of the meter's clock, for date/time records (M-Bus "
        "dates carry no zone).",
    )
    points: tuple[MbusPoint, ...] = Field(
        default=(),
        description="Points; they add to the profile's and replace same-named ones. Without "
        "any, every record of the telegram becomes a point, named by quantity (volume, "
        "volume_storage1, volume_flow, fabrication_no, datetime, ...) in base units.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            time_zone(name)
        except ValueError as exc:
            raise PydanticCustomError("mbus_config", str(exc)) from None
        return name

    @field_validator("points")
    @classmethod
    def _unique_names(cls, points: tuple[MbusPoint, ...]) -> tuple[MbusPoint, ...]:
        seen: set[str] = set()
        for point in points:
            if point.name in seen:
                raise PydanticCustomError("mbus_config", f"point name {point.name!r} is used twice")
            seen.add(point.name)
        return points

    @model_validator(mode="after")
    def _addressing(self, info: ValidationInfo) -> MbusDevice:
        bus = info.context.get("bus") if isinstance(info.context, dict) else None
        if isinstance(bus, BusSpec) and bus.type not in MBUS_BUS_TYPES:
            field = "address" if self.address is not None else "secondary"
            raise _error(
                field,
                f"an M-Bus meter needs a bus of type mbus, but bus {bus.id!r} is {bus.type}",
            )
        if (self.address is None) == (self.secondary is None):
            field = "address" if self.address is not None else "secondary"
            raise _error(
                field,
                "set exactly one of address (primary, 0..250) and secondary (8-digit "
                "identification number)",
                related="address,secondary",
            )
        if self.secondary is None:
            for key in ("manufacturer", "version", "medium"):
                if getattr(self, key) is not None:
                    raise _error(
                        key,
                        f"{key} narrows a secondary-address selection; it needs secondary",
                        related="secondary",
                    )
        return self

    @property
    def selection(self) -> SecondaryAddress | None:
        """The secondary address to select, or ``None`` for primary addressing."""
        if self.secondary is None:
            return None
        return SecondaryAddress(
            self.secondary.upper(),
            self.manufacturer.upper() if self.manufacturer else None,
            self.version,
            self.medium,
        )
