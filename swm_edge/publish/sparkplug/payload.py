"""Sparkplug B payloads as plain typed values.

The only module that touches the generated protobuf code (:mod:`sparkplug_b_pb2`, compiled
from ``sparkplug_b.proto``, the schema of the Sparkplug 3.0 specification, section 6.4.1).
Generated protobuf classes carry no type information, so mypy skips that file
(pyproject.toml) and everything else works with the dataclasses below.

Integer encoding follows the specification's "Datatype Details" (section 6.4): the signed
types travel as their two's complement in the unsigned protobuf field (``Int8``/``Int16``/
``Int32`` in ``int_value`` (uint32), ``Int64`` in ``long_value`` (uint64)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from swm_edge.publish.sparkplug import sparkplug_b_pb2 as _pb  # generated

_PbPayload: Any = _pb.Payload

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class DataType(IntEnum):
    """Sparkplug datatypes (the specification's ``DataType`` enum; the scalar ones)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15


#: What a metric or property value can be.
Value = int | float | bool | str

#: Which protobuf ``oneof`` field carries each datatype's value, and how to convert it.
_FIELDS: dict[DataType, str] = {
    DataType.INT8: "int_value",
    DataType.INT16: "int_value",
    DataType.INT32: "int_value",
    DataType.UINT8: "int_value",
    DataType.UINT16: "int_value",
    DataType.UINT32: "int_value",
    DataType.INT64: "long_value",
    DataType.UINT64: "long_value",
    DataType.DATETIME: "long_value",
    DataType.FLOAT: "float_value",
    DataType.DOUBLE: "double_value",
    DataType.BOOLEAN: "boolean_value",
    DataType.STRING: "string_value",
    DataType.TEXT: "string_value",
    DataType.UUID: "string_value",
}


def _wire_value(datatype: DataType, value: Value) -> Value:
    field = _FIELDS[datatype]
    if field == "int_value":
        return int(value) & _U32
    if field == "long_value":
        return int(value) & _U64
    if field in ("float_value", "double_value"):
        return float(value)
    if field == "boolean_value":
        return bool(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Property:
    """One entry of a metric's PropertySet; ``value`` None is sent as ``is_null``."""

    type: DataType
    value: Value | None


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric to encode. ``value`` None is sent as ``is_null`` (no value).

    ``datatype`` is needed to encode the value even where it is not sent (DATA messages
    carry no datatype: :func:`encode` ``datatypes=False``).
    """

    datatype: DataType
    value: Value | None
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    properties: tuple[tuple[str, Property], ...] = ()


def encode(
    metrics: Sequence[Metric],
    *,
    timestamp: int | None,
    seq: int | None,
    datatypes: bool,
) -> bytes:
    """A serialized Sparkplug B ``Payload``.

    Args:
        metrics: the metrics, in order.
        timestamp: the payload timestamp (ms since the epoch, UTC), or None for none.
        seq: the sequence number (0-255), or None for none (NDEATH).
        datatypes: whether to include each metric's datatype (births, NDEATH) or not (data).
    """
    payload = _PbPayload()
    if timestamp is not None:
        payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        pm = payload.metrics.add()
        if m.name is not None:
            pm.name = m.name
        if m.alias is not None:
            pm.alias = m.alias
        if m.timestamp is not None:
            pm.timestamp = m.timestamp
        if datatypes:
            pm.datatype = int(m.datatype)
        if m.is_historical:
            pm.is_historical = True
        if m.value is None:
            pm.is_null = True
        else:
            setattr(pm, _FIELDS[m.datatype], _wire_value(m.datatype, m.value))
        for key, prop in m.properties:
            pm.properties.keys.append(key)
            pv = pm.properties.values.add()
            pv.type = int(prop.type)
            if prop.value is None:
                pv.is_null = True
            else:
                setattr(pv, _FIELDS[prop.type], _wire_value(prop.type, prop.value))
    data: bytes = payload.SerializeToString()
    return data


class PayloadError(ValueError):
    """Bytes that are not a Sparkplug B payload."""


@dataclass(frozen=True, slots=True)
class ReceivedMetric:
    """A metric of a received payload (a command): what a receiver may act on.

    ``value`` is the raw protobuf value of the set ``oneof`` field (None when there is none:
    null, or a DataSet/Template/extension value, which nothing here uses).
    """

    name: str | None
    alias: int | None
    datatype: int | None
    value: Value | None


def decode_metrics(raw: bytes) -> list[ReceivedMetric]:
    """The metrics of a serialized payload.

    Raises:
        PayloadError: the bytes are not a valid protobuf ``Payload``.
    """
    try:
        payload = _PbPayload.FromString(raw)
    except Exception as exc:  # google.protobuf.message.DecodeError, RecursionError...
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from exc
    found: list[ReceivedMetric] = []
    for pm in payload.metrics:
        field = pm.WhichOneof("value")
        value = getattr(pm, field) if field in _SCALAR_FIELDS else None
        found.append(
            ReceivedMetric(
                name=pm.name if pm.HasField("name") else None,
                alias=pm.alias if pm.HasField("alias") else None,
                datatype=pm.datatype if pm.HasField("datatype") else None,
                value=value,
            )
        )
    return found


_SCALAR_FIELDS = frozenset(_FIELDS.values())
