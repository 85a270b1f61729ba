"""The Modbus keys of a device entry: its unit id, register map and read limits.

Part of the driver SDK (docs/decisions/0003-driver-sdk.md): :class:`ModbusDevice` is the
``device_model`` of the generic Modbus driver, and a vendor-specific Modbus driver can use
it as is or derive from it. The core validates a device entry's non-core keys with it,
passing ``context={"bus": BusSpec}``, and reports its errors at the YAML positions of the
keys they name.

Its errors follow the conventions of :mod:`swm_edge.sdk_types` (custom error types with
complete messages, the key a model validator's error is about in ``ctx["field"]``, related
keys in ``ctx["related"]``), which any driver model may use.

Types are strict on purpose: YAML guesses scalar types, and ``byte_swap: 1`` or
``address: "40001"`` are more likely typos than intent.
"""

from __future__ import annotations

from functools import partial

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from swm_edge.modbus.codec import register_count
from swm_edge.modbus.planner import MAX_READ_BITS, MAX_READ_REGISTERS
from swm_edge.model import BusSpec, DataType, PointSpec, Table, WordOrder
from swm_edge.sdk_types import POINT_NAME_PATTERN, FiniteFloat, PointName, Unit, field_error

__all__ = [
    "ADDRESS_SPACE",
    "MODBUS_BUS_TYPES",
    "POINT_NAME_PATTERN",
    "ModbusDevice",
    "ModbusPoint",
]

#: Addresses per Modbus table; a point's last register must lie below this.
ADDRESS_SPACE = 0x10000
#: Bus types that hand a driver a ModbusTransport.
MODBUS_BUS_TYPES = frozenset({"modbus-rtu", "modbus-tcp"})
# Unit ids a device on an RTU line can have: 0 is broadcast, 248..255 are reserved.
_RTU_UNITS = range(1, 248)

# A model validator's error at one key; the type tells Modbus errors from the core's.
_error = partial(field_error, error_type="modbus_config")


class ModbusPoint(BaseModel):
    """One value of a device and where it lives in the Modbus tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PointName = Field(description="Point name, unique within the device.")
    table: Table = Field(default=Table.HOLDING, description="Modbus table.")
    address: StrictInt = Field(
        ge=0,
        le=ADDRESS_SPACE - 1,
        description="Zero-based address of the (first) register or bit.",
    )
    type: DataType = Field(
        default=DataType.UINT16, description="Value type; coil and discrete points are always bool."
    )
    word_order: WordOrder = Field(
        default=WordOrder.BIG,
        description="Order of the registers of a multi-register value; big = high word first.",
    )
    byte_swap: StrictBool = Field(
        default=False, description="Swap the two bytes inside every register."
    )
    scale: FiniteFloat = Field(default=1.0, description="Value = raw * scale + offset.")
    offset: FiniteFloat = Field(default=0.0, description="Value = raw * scale + offset.")
    unit: Unit | None = Field(
        default=None, description="Unit of the scaled value (a canonical spelling)."
    )
    note: StrictStr | None = Field(
        default=None,
        description="Where the point is documented, e.g. a manual's chapter (not used).",
    )

    @property
    def width(self) -> int:
        """Registers (or bits, in a bit table) the point occupies."""
        return 1 if self.table.is_bits else register_count(self.type)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        if self.table.is_bits:
            if self.type is not DataType.BOOL:
                raise _error(
                    "type",
                    f"a {self.table} point is a single bit: its type must be bool, not {self.type}",
                )
            if self.word_order is not WordOrder.BIG:
                raise _error("word_order", f"word_order does not apply to a {self.table} point")
            if self.byte_swap:
                raise _error("byte_swap", f"byte_swap does not apply to a {self.table} point")
        if self.address + self.width > ADDRESS_SPACE:
            raise _error(
                "address",
                f"a {self.type} at address {self.address} needs registers up to "
                f"{self.address + self.width - 1}, past the last address {ADDRESS_SPACE - 1}",
            )
        if self.type is DataType.BOOL:
            if self.scale != 1.0:
                raise _error("scale", "scale does not apply to a bool point")
            if self.offset != 0.0:
                raise _error("offset", "offset does not apply to a bool point")
        if self.scale == 0.0:
            raise _error("scale", "scale must not be 0 (every value would equal offset)")
        return self

    def to_spec(self) -> PointSpec:
        """The point as the core's :class:`~swm_edge.model.PointSpec`."""
        return PointSpec(
            name=self.name,
            table=self.table,
            address=self.address,
            type=self.type,
            word_order=self.word_order,
            byte_swap=self.byte_swap,
            scale=self.scale,
            offset=self.offset,
            unit=self.unit,
        )


class ModbusDevice(BaseModel):
    """The Modbus keys of a device entry (all but the core keys).

    Validate with ``context={"bus": BusSpec}`` to check the unit id against the bus type;
    without a bus only the 0..255 range is checked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: StrictInt = Field(
        ge=0, le=255, description="Modbus unit (slave) id: 1..247 on an RTU bus, 0..255 on TCP."
    )
    points: tuple[ModbusPoint, ...] = Field(
        default=(),
        description="Points; they add to the profile's and replace same-named ones.",
    )
    single_point_reads: StrictBool = Field(
        default=False,
        description="Read every point with a request of its own (devices refusing block reads).",
    )
    max_gap: StrictInt = Field(
        default=10,
        ge=0,
        le=MAX_READ_REGISTERS,
        description="Unused registers a block read may span to join two points.",
    )
    max_registers: StrictInt = Field(
        default=MAX_READ_REGISTERS,
        ge=1,
        le=MAX_READ_REGISTERS,
        description="Most registers the device returns in one request.",
    )
    max_bits: StrictInt = Field(
        default=MAX_READ_BITS,
        ge=1,
        le=MAX_READ_BITS,
        description="Most bits the device returns in one request.",
    )

    @field_validator("unit")
    @classmethod
    def _unit_fits_the_bus(cls, unit: int, info: ValidationInfo) -> int:
        bus = info.context.get("bus") if isinstance(info.context, dict) else None
        if not isinstance(bus, BusSpec):
            return unit
        if bus.type not in MODBUS_BUS_TYPES:
            # Checked here because the unit id is the one key every Modbus device has.
            raise PydanticCustomError(
                "modbus_bus_type",
                f"a Modbus device needs a modbus-rtu or modbus-tcp bus, but bus {bus.id!r} "
                f"is {bus.type}",
            )
        if bus.type == "modbus-rtu" and unit not in _RTU_UNITS:
            raise PydanticCustomError(
                "modbus_unit_range",
                f"unit {unit} is out of range 1..247 for a device on modbus-rtu bus {bus.id!r} "
                "(0 is broadcast, which no device answers)",
            )
        return unit

    @model_validator(mode="after")
    def _points_fit_one_request(self) -> ModbusDevice:
        # Every too-wide point is reported, not only the first: a config's errors are all
        # shown at once. pydantic merges a ValidationError raised here into its own.
        errors: list[InitErrorDetails] = []
        for k, point in enumerate(self.points):
            limit, key = (
                (self.max_bits, "max_bits")
                if point.table.is_bits
                else (self.max_registers, "max_registers")
            )
            if point.width <= limit:
                continue
            what = "bits" if point.table.is_bits else "registers"
            message = (
                f"point {point.name!r} is a {point.type} of {point.width} {what}, but the "
                f"device reads at most {limit} per request ({key})"
            )
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("modbus_point_width", message, {"related": key}),
                    loc=("points", k, "type"),
                    input=point.type.value,
                )
            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self
