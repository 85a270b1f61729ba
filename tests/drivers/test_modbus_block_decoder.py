"""The Modbus driver's block decoder against the reference, the generic per-point path.

For random point layouts (types, word and byte orders, scales, overlapping addresses) and
random responses (NaN, infinities, scaling overflow, short or padded responses, words that
are not 16-bit registers, bits that are not bools), decoding a request's block at once
must give exactly what ``_decode_point`` gives for every point: value and its type,
quality, unit and error reason.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swm_edge_drivers.modbus import _BlockDecoder, _decode_point

from swm_edge.modbus import ReadRequest, encode, plan_reads, register_count
from swm_edge.model import DataType, PointSpec, PointValue, Quality, Table, WordOrder

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REGISTER_TABLES = [Table.HOLDING, Table.INPUT]
BIT_TABLES = [Table.COIL, Table.DISCRETE]
BLOCK = 40  # registers (or bits) the random points are spread over

# Values that decode to something the driver must not report as good, or to the extremes.
SPECIAL_FLOATS = [math.nan, -math.nan, math.inf, -math.inf, 3.4028234663852886e38, 1.7e308, -0.0]
scales = st.one_of(
    st.just(1.0),
    st.sampled_from([0.0, -1.0, 0.01, 10.0, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False),
)
offsets = st.one_of(
    st.just(0.0), st.sampled_from([-40.0, 1e308]), st.floats(allow_nan=False, allow_infinity=False)
)
# Words a broken stack might hand over besides 16-bit registers.
odd_words = st.sampled_from([-1, 0x10000, 1.0, 1.5, None, "1", True, False])
odd_bits = st.sampled_from([0, 1, 2, -1, 1.0, None])


@st.composite
def layouts(draw: st.DrawFn, table: Table) -> list[PointSpec]:
    """Points at random addresses of one table, possibly overlapping, with unique names."""
    points = []
    for i in range(draw(st.integers(1, 12))):
        dtype = draw(st.sampled_from(list(DataType)))
        width = 1 if table.is_bits else register_count(dtype)
        points.append(
            PointSpec(
                f"p{i}",
                table,
                draw(st.integers(0, BLOCK - width)),
                dtype,
                word_order=draw(st.sampled_from(list(WordOrder))),
                byte_swap=draw(st.booleans()),
                scale=draw(scales),
                offset=draw(offsets),
                unit=draw(st.sampled_from([None, "m3/h", "bar"])),
            )
        )
    return points


def special_raw(draw: st.DrawFn, point: PointSpec) -> int | float:
    """A raw value at the edge of ``point``'s type: NaN, inf, the largest, the smallest."""
    if point.type in (DataType.FLOAT32, DataType.FLOAT64):
        value: float = draw(st.sampled_from(SPECIAL_FLOATS))
        if point.type is DataType.FLOAT32 and math.isfinite(value) and abs(value) > 3.5e38:
            return math.inf  # beyond float32: encode would refuse it
        return value
    bits = 16 * register_count(point.type)
    signed = point.type in (DataType.INT16, DataType.INT32, DataType.INT64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return draw(st.sampled_from([lo, hi, 0]))


@st.composite
def register_responses(draw: st.DrawFn, points: list[PointSpec], count: int) -> list[Any]:
    """Random registers, some points overwritten with special values, sometimes broken."""
    words: list[Any] = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    for point in points:
        if point.type is not DataType.BOOL and draw(st.booleans()):
            start = point.address - min(p.address for p in points)
            encoded = encode(point, special_raw(draw, point))
            words[start : start + len(encoded)] = encoded
    return broken(draw, words, odd_words)


@st.composite
def bit_responses(draw: st.DrawFn, count: int) -> list[Any]:
    return broken(draw, draw(st.lists(st.booleans(), min_size=count, max_size=count)), odd_bits)


def broken(draw: st.DrawFn, data: list[Any], odd: st.SearchStrategy[Any]) -> list[Any]:
    """``data`` as it is (mostly), or cut short, padded, or with an odd element."""
    how = draw(st.sampled_from(["intact", "intact", "short", "padded", "odd"]))
    if how == "short":
        return data[: draw(st.integers(0, len(data)))]
    if how == "padded":
        return data + draw(st.lists(st.one_of(st.integers(0, 0xFFFF), odd), max_size=8))
    if how == "odd":
        data[draw(st.integers(0, len(data) - 1))] = draw(odd)
    return data


def comparable(values: dict[str, PointValue]) -> dict[str, tuple[object, ...]]:
    # == alone would let 1 == 1.0 == True and 0.0 == -0.0 pass: compare type and repr too.
    return {
        name: (type(v.value), repr(v.value), v.quality, v.unit, v.error)
        for name, v in values.items()
    }


def check_against_reference(request: ReadRequest, data: list[Any]) -> None:
    block: dict[str, PointValue] = {}
    _BlockDecoder(request).decode(data, block)
    reference = {p.name: _decode_point(request, p, data) for p in request.points}
    assert comparable(block) == comparable(reference)


def request_for(points: list[PointSpec]) -> ReadRequest:
    start = min(p.address for p in points)
    end = max(p.address + (1 if p.table.is_bits else register_count(p.type)) for p in points)
    return ReadRequest(points[0].table, start, end - start, tuple(points))


@PROPERTY
@given(data=st.data(), table=st.sampled_from(REGISTER_TABLES))
def test_register_block_decodes_like_each_point(data: st.DataObject, table: Table) -> None:
    points = data.draw(layouts(table))
    request = request_for(points)
    check_against_reference(request, data.draw(register_responses(points, request.count)))


@PROPERTY
@given(data=st.data(), table=st.sampled_from(BIT_TABLES))
def test_bit_block_decodes_like_each_point(data: st.DataObject, table: Table) -> None:
    request = request_for(data.draw(layouts(table)))
    check_against_reference(request, data.draw(bit_responses(request.count)))


@PROPERTY
@given(data=st.data(), table=st.sampled_from(REGISTER_TABLES), max_gap=st.integers(0, 12))
def test_planned_requests_decode_like_each_point(
    data: st.DataObject, table: Table, max_gap: int
) -> None:
    """The requests the driver really gets: plan_reads' blocks, gaps included."""
    points = data.draw(layouts(table))
    for request in plan_reads(points, max_gap=max_gap, max_registers=20):
        check_against_reference(
            request, data.draw(register_responses(list(request.points), request.count))
        )


def test_nan_inf_and_overflow_are_bad_with_reason_decode() -> None:
    f32 = PointSpec("f32", Table.HOLDING, 0, DataType.FLOAT32, word_order=WordOrder.LITTLE)
    f64 = PointSpec("f64", Table.HOLDING, 2, DataType.FLOAT64, scale=10.0)
    i16 = PointSpec("i16", Table.HOLDING, 6, DataType.INT16, scale=0.1, unit="bar")
    request = ReadRequest(Table.HOLDING, 0, 7, (f32, f64, i16))
    words = [0x0000, 0x7FC0, 0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]  # NaN, max float64, -2
    values: dict[str, PointValue] = {}
    _BlockDecoder(request).decode(words, values)
    assert values["f32"] == PointValue.bad("decode")
    assert values["f64"] == PointValue.bad("decode")  # 1.8e308 * 10 overflows
    assert values["i16"].quality is Quality.GOOD
    assert values["i16"].value == pytest.approx(-0.2)
    assert values["i16"].unit == "bar"


def test_a_word_out_of_range_marks_only_its_points_bad() -> None:
    a = PointSpec("a", Table.INPUT, 10, DataType.UINT16)
    b = PointSpec("b", Table.INPUT, 11, DataType.INT32)
    values: dict[str, PointValue] = {}
    _BlockDecoder(ReadRequest(Table.INPUT, 10, 3, (a, b))).decode([7, 0x10000, 0], values)
    assert values == {"a": PointValue.good(7), "b": PointValue.bad("decode")}
