"""Turning Modbus registers and bits into raw point values, and back.

A register is a 16-bit word sent high byte first (Modbus Application Protocol v1.1b3, 4.2).
Values wider than one register are assembled from consecutive registers:

* ``word_order`` BIG puts the most significant word in the lowest register ("ABCD");
  LITTLE reverses the order of *all* words, also for 64-bit values ("CDAB" for 32 bits).
* ``byte_swap`` swaps the two bytes inside every register, for devices that break the
  spec's byte order ("BADC" alone, "DCBA" together with LITTLE word order).

The codec is pure: it knows nothing about transports and never scales; see :func:`scale_value`.
:func:`decode` is the reference for one point; :func:`block_structs` and :func:`register_struct`
decode a whole response at once, for the hot path of a poll.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence

from swm_edge.driver import DecodeError
from swm_edge.model import DataType, PointSpec, WordOrder

__all__ = [
    "block_structs",
    "decode",
    "encode",
    "register_count",
    "register_struct",
    "scale_value",
]

_REGISTER_COUNT: dict[DataType, int] = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.BOOL: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}

# Big-endian struct formats; BOOL is handled apart because it is "register != 0", not a format.
_FORMAT: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}

_STRUCTS: dict[str, struct.Struct] = {
    endian + fmt[1:]: struct.Struct(endian + fmt[1:]) for fmt in _FORMAT.values() for endian in "<>"
}

_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
}


def register_count(dtype: DataType) -> int:
    """Number of 16-bit registers a value of type ``dtype`` occupies in a register table."""
    return _REGISTER_COUNT[dtype]


def decode(point: PointSpec, words: Sequence[int]) -> int | float | bool:
    """The raw (unscaled) value of ``point`` from its registers, or its one bit in a bit table.

    ``words`` holds exactly the point's registers, lowest address first; for a coil or
    discrete input it holds one bit (``bool`` or 0/1). A point in a bit table is always one
    bit and decodes to ``bool`` whatever its declared type. NaN and infinities are returned
    unchanged: whether they mean "sensor absent" or "overflow" is the driver's call.

    Raises:
        DecodeError: wrong number of words, a word outside 0..65535 (or a bit outside 0/1),
            or an element that is not an integer.
    """
    expected = 1 if point.table.is_bits else register_count(point.type)
    if len(words) != expected:
        raise DecodeError(
            f"{point.name}: expected {expected} {_unit_noun(point)}, got {len(words)}"
        )
    values = [_as_int(point, w) for w in words]
    if point.table.is_bits:
        if values[0] not in (0, 1):
            raise DecodeError(f"{point.name}: bit value {values[0]} is not 0 or 1")
        return bool(values[0])
    for w in values:
        if not 0 <= w <= 0xFFFF:
            raise DecodeError(f"{point.name}: register value {w} outside 0..65535")
    if point.type is DataType.BOOL:
        return values[0] != 0
    data = b"".join(w.to_bytes(2, "big") for w in _reorder(point, values))
    if point.type is DataType.FLOAT32:
        return _float32_from_bytes(data)
    value: int | float = struct.unpack(_FORMAT[point.type], data)[0]
    return value


def register_struct(point: PointSpec) -> tuple[struct.Struct, bool]:
    """A precompiled struct that unpacks ``point``'s raw value from a register block, and
    whether it reads the block's swapped image (see :func:`block_structs`).

    With ``unpack_from(image, 2 * (point.address - block address))`` the result equals
    :func:`decode` of the point's words, except that a float32 NaN may lose its payload
    (struct quiets signalling NaNs) and that a ``bool`` point unpacks to its register, which
    the caller compares with 0.

    Raises:
        ValueError: ``point`` lives in a bit table, which has no registers.
    """
    if point.table.is_bits:
        raise ValueError(f"{point.name}: {point.table} holds bits, not registers")
    if point.type is DataType.BOOL:
        return _STRUCTS[">H"], False
    # Reversing all words of a value and then reading it big-endian is reading it little-endian
    # from the image whose registers have their two bytes swapped; an explicit byte swap toggles
    # the image. One register has no word order, so it keeps the plain image where it can.
    little = point.word_order is WordOrder.LITTLE and register_count(point.type) > 1
    endian = "<" if little else ">"
    return _STRUCTS[endian + _FORMAT[point.type][1:]], little != point.byte_swap


def block_structs(count: int) -> tuple[struct.Struct, struct.Struct]:
    """The structs that pack a block of ``count`` registers into the two images
    :func:`register_struct` reads from: plain (high byte first, as on the wire) and swapped
    (low byte first). Packing raises ``struct.error`` for a word outside 0..65535 or not an
    integer.
    """
    return struct.Struct(f">{count}H"), struct.Struct(f"<{count}H")


def encode(point: PointSpec, raw: int | float | bool) -> list[int]:
    """The registers (or the one bit, as 0/1) that :func:`decode` turns back into ``raw``.

    Integer types need an ``int``; float types take any real number and round it to the
    type's precision. Float NaN payloads survive bit for bit, so a simulator can reproduce
    a device's exact NaN pattern.

    Raises:
        ValueError: ``raw`` is outside the type's range, or not a number of the right kind.
    """
    if point.table.is_bits or point.type is DataType.BOOL:
        if isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1)):
            return [int(raw)]
        raise ValueError(f"{point.name}: {raw!r} is not a bool or 0/1")
    if point.type in _INT_RANGE:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"{point.name}: {point.type} needs an int, got {raw!r}")
        lo, hi = _INT_RANGE[point.type]
        if not lo <= raw <= hi:
            raise ValueError(f"{point.name}: {raw} outside the {point.type} range {lo}..{hi}")
        data = struct.pack(_FORMAT[point.type], raw)
    else:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{point.name}: {point.type} needs a number, got {raw!r}")
        try:
            value = float(raw)
            if point.type is DataType.FLOAT32:
                data = _float32_to_bytes(value)
            else:
                data = struct.pack(">d", value)
        except OverflowError as exc:
            raise ValueError(f"{point.name}: {raw!r} outside the {point.type} range") from exc
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    # Both transformations are their own inverse, so encoding applies the same ones as decoding.
    return _reorder(point, words)


def scale_value(point: PointSpec, raw: int | float | bool) -> int | float | bool:
    """The engineering value ``raw * scale + offset``.

    Bools are never scaled. Without scaling (scale 1, offset 0) the value is returned as it
    is, so integer counters stay exact ``int``; otherwise the result is a ``float``.
    """
    if isinstance(raw, bool):
        return raw
    if point.scale == 1 and point.offset == 0:
        return raw
    return raw * point.scale + point.offset


def _unit_noun(point: PointSpec) -> str:
    return "bit" if point.table.is_bits else "register(s)"


def _as_int(point: PointSpec, word: object) -> int:
    try:
        return operator.index(word)  # type: ignore[arg-type]
    except TypeError:
        raise DecodeError(f"{point.name}: {word!r} is not an integer word") from None


def _reorder(point: PointSpec, words: list[int]) -> list[int]:
    if point.word_order is WordOrder.LITTLE:
        words = words[::-1]
    if point.byte_swap:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


# float32 <-> Python float by hand for NaNs: the C conversion CPython uses sets the quiet
# bit of a signalling NaN, which would make encode(decode(words)) differ from words.
_F32_EXP = 0x7F800000
_F32_MANT = 0x007FFFFF
_F64_MANT = (1 << 52) - 1
_MANT_SHIFT = 52 - 23


def _float32_from_bytes(data: bytes) -> float:
    bits = int.from_bytes(data, "big")
    if bits & _F32_EXP == _F32_EXP and bits & _F32_MANT:
        sign = bits >> 31
        wide = (sign << 63) | (0x7FF << 52) | ((bits & _F32_MANT) << _MANT_SHIFT)
        nan: float = struct.unpack(">d", wide.to_bytes(8, "big"))[0]
        return nan
    value: float = struct.unpack(">f", data)[0]
    return value


def _float32_to_bytes(value: float) -> bytes:
    if math.isnan(value):
        wide = int.from_bytes(struct.pack(">d", value), "big")
        mantissa = (wide & _F64_MANT) >> _MANT_SHIFT
        if mantissa == 0:
            # Payload bits all below float32 precision: keep it a (quiet) NaN, not infinity.
            mantissa = 1 << 22
        bits = ((wide >> 63) << 31) | _F32_EXP | mantissa
        return bits.to_bytes(4, "big")
    return struct.pack(">f", value)
