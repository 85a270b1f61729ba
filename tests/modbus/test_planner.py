"""Planner tests: realistic device maps worked out by hand, and properties of any plan."""

from __future__ import annotations

from itertools import pairwise
from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.driver import DecodeError
from swm_edge.modbus import ReadRequest, decode, plan_reads, register_count
from swm_edge.model import DataType, PointSpec, Table, WordOrder

H, IN, C, D = Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE
F32, F64, I16, U16, I32, U32, BOOL = (
    DataType.FLOAT32,
    DataType.FLOAT64,
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.BOOL,
)
TABLE_ORDER = [H, IN, C, D]


def pt(name: str, table: Table, address: int, dtype: DataType, **kw: object) -> PointSpec:
    return PointSpec(name, table, address, dtype, **kw)  # type: ignore[arg-type]


def width(p: PointSpec) -> int:
    return 1 if p.table.is_bits else register_count(p.type)


def spans(requests: list[ReadRequest]) -> list[tuple[Table, int, int, list[str]]]:
    return [(r.table, r.address, r.count, [p.name for p in r.points]) for r in requests]


def wire(hex_bytes: str) -> list[int]:
    data = bytes.fromhex(hex_bytes)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# KELLER Series 30/40 protocol v3.5 (2017), ch. 4 (../shared/reference/devices.json).
KELLER = [
    pt("P1", H, 2, F32),
    pt("P2", H, 4, F32),
    pt("T", H, 6, F32),
    pt("TOB1", H, 8, F32),
    pt("TOB2", H, 10, F32),
    pt("P1_i16", H, 17, I16, scale=0.01),
    pt("TOB1_i16", H, 20, I16, scale=0.01),
    pt("P1_i32", H, 34, I32),
    pt("TOB1_i32", H, 40, I32, scale=0.01),
    pt("P1_blk", H, 256, F32),
    pt("TOB1_blk", H, 258, F32),
    pt("ConTc", H, 268, F32),
    pt("SN_H", H, 514, U16),
    pt("STATUS", H, 524, U16),
    pt("DEV_ADDR", H, 525, U16),
]


def test_keller_map_with_four_register_limit() -> None:
    # KELLER 5.20-10.40 and later read at most 4 registers per request.
    assert spans(plan_reads(KELLER, max_registers=4)) == [
        (H, 2, 4, ["P1", "P2"]),
        (H, 6, 4, ["T", "TOB1"]),
        (H, 10, 2, ["TOB2"]),
        # gap 5 before 17 is allowed, but 10..17 would need 8 registers
        (H, 17, 4, ["P1_i16", "TOB1_i16"]),
        (H, 34, 2, ["P1_i32"]),
        (H, 40, 2, ["TOB1_i32"]),
        (H, 256, 4, ["P1_blk", "TOB1_blk"]),
        (H, 268, 2, ["ConTc"]),
        (H, 514, 1, ["SN_H"]),
        (H, 524, 2, ["STATUS", "DEV_ADDR"]),
    ]


def test_keller_requests_start_on_even_addresses_in_float_ranges() -> None:
    # KELLER ch. 4: an odd start address in the float/int32 ranges answers exception 2.
    for r in plan_reads(KELLER, max_registers=4):
        if r.address < 0x30:
            assert r.address % 2 == 0 or r.points[0].type is I16


def test_keller_map_with_protocol_limit() -> None:
    # KELLER 5.21-XX.XX reads up to 80 registers; the gaps decide: 12->17 (5) and 18->20 (2)
    # merge, 21->34 (13) and 42->256 do not, 258->268 (8) and 515->524 (9) merge.
    assert [(r.address, r.count, len(r.points)) for r in plan_reads(KELLER, max_registers=80)] == [
        (2, 19, 7),
        (34, 8, 2),
        (256, 14, 3),
        (514, 12, 3),
    ]


def test_keller_block_response_decodes_through_slice() -> None:
    # KELLER ch. 4 "Read P1 and TOB1 from 0x0100": request 01 03 01 00 00 04, response data
    # 3F 75 E3 D2 41 B6 1C 20 -> P1 0.960508 bar, TOB1 22.7637 degC.
    (req,) = plan_reads([KELLER[9], KELLER[10]], max_registers=4)
    assert (req.table, req.address, req.count) == (H, 0x0100, 4)
    data = wire("3F 75 E3 D2 41 B6 1C 20")
    assert decode(KELLER[9], req.slice(KELLER[9], data)) == pytest.approx(0.960508, abs=5e-7)
    assert decode(KELLER[10], req.slice(KELLER[10], data)) == pytest.approx(22.7637, abs=5e-5)


def test_yosemitech_y532_orp_ph_block() -> None:
    # Yosemitech Y532 manual v1.7 (EnviroDIY/YosemitechModbus 0d300ac) "get ORP+pH": request
    # 01 03 26 00 00 04, response data 85 EB D1 C0 00 00 E0 40 -> -6.56 mV, pH 7.0 (DCBA).
    dcba = {"word_order": WordOrder.LITTLE, "byte_swap": True}
    orp, ph = pt("orp", H, 0x2600, F32, **dcba), pt("ph", H, 0x2602, F32, **dcba)
    (req,) = plan_reads([ph, orp])
    assert (req.address, req.count, req.points) == (0x2600, 4, (orp, ph))
    data = wire("85 EB D1 C0 00 00 E0 40")
    assert decode(orp, req.slice(orp, data)) == pytest.approx(-6.56, abs=1e-6)
    assert decode(ph, req.slice(ph, data)) == 7.0


def test_yosemitech_y520_block_matches_manual_request() -> None:
    # Yosemitech Y520 manual v1.8: temperature, conductivity and error flag are read with
    # 01 03 26 00 00 05, i.e. 5 registers from 0x2600.
    points = [pt("temp", H, 0x2600, F32), pt("cond", H, 0x2602, F32), pt("err", H, 0x2604, U16)]
    assert spans(plan_reads(points)) == [(H, 0x2600, 5, ["temp", "cond", "err"])]


def test_tables_in_fixed_order_whatever_the_input_order() -> None:
    # ABB AquaMaster 3 MODBUS supplement: RW values in holding, RO values in input registers.
    points = [
        pt("alarm", D, 7, BOOL),
        pt("bore", IN, 5032, F32),
        pt("pulse_max", H, 8008, U16),
        pt("relay", C, 3, BOOL),
        pt("uid", IN, 4012, U32),
        pt("total", H, 12002, I32),
    ]
    assert spans(plan_reads(points)) == [
        (H, 8008, 1, ["pulse_max"]),
        (H, 12002, 2, ["total"]),
        (IN, 4012, 2, ["uid"]),
        (IN, 5032, 2, ["bore"]),
        (C, 3, 1, ["relay"]),
        (D, 7, 1, ["alarm"]),
    ]


def test_overlapping_points_share_a_request() -> None:
    points = [
        pt("raw", H, 10, U16),
        pt("signed", H, 10, I16),
        pt("flag", H, 10, BOOL),
        pt("wide", H, 10, U32),
    ]
    (req,) = plan_reads(points)
    assert (req.address, req.count) == (10, 2)
    assert [p.name for p in req.points] == ["flag", "raw", "signed", "wide"]


def test_overlapping_points_that_cannot_fit_together_overlap_requests() -> None:
    a, b = pt("a", H, 0, I32), pt("b", H, 1, DataType.FLOAT64)
    assert spans(plan_reads([a, b], max_registers=4)) == [(H, 0, 2, ["a"]), (H, 1, 4, ["b"])]


@pytest.mark.parametrize(
    ("max_gap", "expected"),
    [
        (0, [(H, 0, 2, ["a", "b"]), (H, 3, 1, ["c"])]),
        (1, [(H, 0, 4, ["a", "b", "c"])]),
    ],
)
def test_max_gap_is_inclusive(max_gap: int, expected: list[object]) -> None:
    points = [pt("a", H, 0, U16), pt("b", H, 1, U16), pt("c", H, 3, U16)]
    assert spans(plan_reads(points, max_gap=max_gap)) == expected


def test_register_limit_is_inclusive() -> None:
    points = [pt("a", H, 0, F32), pt("b", H, 2, F32), pt("c", H, 4, U16)]
    assert spans(plan_reads(points, max_registers=5)) == [(H, 0, 5, ["a", "b", "c"])]
    assert spans(plan_reads(points, max_registers=4)) == [
        (H, 0, 4, ["a", "b"]),
        (H, 4, 1, ["c"]),
    ]


def test_bits_use_the_bit_limit() -> None:
    coils = [pt(f"c{i}", C, i, BOOL) for i in range(10)] + [pt("far", C, 100, BOOL)]
    assert [(r.address, r.count) for r in plan_reads(coils)] == [(0, 10), (100, 1)]
    assert [(r.address, r.count) for r in plan_reads(coils, max_bits=4)] == [
        (0, 4),
        (4, 4),
        (8, 2),
        (100, 1),
    ]
    # A register limit of 1 does not constrain bit reads.
    assert len(plan_reads(coils, max_registers=1)) == 2


def test_bit_table_points_are_one_bit_wide() -> None:
    (req,) = plan_reads([pt("a", D, 0, U32), pt("b", D, 1, BOOL)], max_gap=0)
    assert (req.address, req.count) == (0, 2)


def test_single_point() -> None:
    points = [pt("a", H, 0, F32), pt("b", H, 2, F32), pt("c", C, 0, BOOL), pt("d", C, 1, BOOL)]
    assert spans(plan_reads(points, single_point=True)) == [
        (H, 0, 2, ["a"]),
        (H, 2, 2, ["b"]),
        (C, 0, 1, ["c"]),
        (C, 1, 1, ["d"]),
    ]


def test_points_at_the_top_of_the_address_space() -> None:
    points = [pt("a", H, 65532, F64), pt("b", C, 65535, BOOL)]
    assert spans(plan_reads(points)) == [(H, 65532, 4, ["a"]), (C, 65535, 1, ["b"])]


def test_no_points_no_requests() -> None:
    assert plan_reads([]) == []


@pytest.mark.parametrize(
    ("points", "kwargs"),
    [
        ([pt("a", H, 65535, F32)], {}),
        ([pt("a", IN, 65533, F64)], {}),
        ([pt("a", C, 65536, BOOL)], {}),
        ([pt("a", H, -1, U16)], {}),
        ([pt("a", H, 0, F64)], {"max_registers": 2}),
        ([pt("a", H, 0, F32)], {"max_registers": 1}),
        ([], {"max_registers": 0}),
        ([], {"max_registers": 126}),
        ([], {"max_bits": 0}),
        ([], {"max_bits": 2001}),
        ([], {"max_gap": -1}),
    ],
)
def test_rejects_impossible_plans(points: list[PointSpec], kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        plan_reads(points, **kwargs)  # type: ignore[arg-type]


# --- ReadRequest.slice -------------------------------------------------------------------------


def test_slice_returns_the_points_words() -> None:
    a, b, c = pt("a", H, 100, U16), pt("b", H, 103, F32), pt("c", H, 105, U16)
    req = ReadRequest(H, 100, 6, (a, b, c))
    data = [10, 11, 12, 13, 14, 15]
    assert list(req.slice(a, data)) == [10]
    assert list(req.slice(b, data)) == [13, 14]
    assert list(req.slice(c, data)) == [15]


def test_slice_tolerates_padded_bit_responses() -> None:
    # Bit responses come in whole bytes; some stacks hand back the padding bits too.
    p = pt("c", C, 12, BOOL)
    req = ReadRequest(C, 10, 3, (p,))
    assert list(req.slice(p, [False, False, True, False, False, False, False, False])) == [True]


OUTSIDE = [
    pt("before", H, 99, U16),
    pt("after", H, 106, U16),
    pt("straddles", H, 105, F32),
    pt("other_table", IN, 100, U16),
]


@pytest.mark.parametrize("p", OUTSIDE)
def test_slice_rejects_points_outside_the_request(p: PointSpec) -> None:
    req = ReadRequest(H, 100, 6, ())
    with pytest.raises(ValueError):
        req.slice(p, list(range(6)))


def test_offset_is_the_points_place_in_the_response() -> None:
    a, b = pt("a", H, 100, U16), pt("b", H, 104, F32)
    req = ReadRequest(H, 100, 6, (a, b))
    assert [req.offset(a), req.offset(b)] == [0, 4]
    bit = pt("c", C, 12, BOOL)
    assert ReadRequest(C, 10, 3, (bit,)).offset(bit) == 2


@pytest.mark.parametrize("p", OUTSIDE)
def test_offset_rejects_points_outside_the_request(p: PointSpec) -> None:
    with pytest.raises(ValueError, match="outside the request"):
        ReadRequest(H, 100, 6, ()).offset(p)


def test_slice_short_response_is_a_decode_error() -> None:
    p = pt("b", H, 103, F32)
    req = ReadRequest(H, 100, 6, (p,))
    with pytest.raises(DecodeError):
        req.slice(p, [0, 0, 0, 0])


# --- properties --------------------------------------------------------------------------------


@st.composite
def point_sets(
    draw: st.DrawFn, *, tables: list[Table] = TABLE_ORDER, top: int = 300, disjoint: bool = False
) -> list[PointSpec]:
    """Points clustered at low addresses (so they merge), sometimes near the top of 0..65535."""
    n = draw(st.integers(0, 25))
    points: list[PointSpec] = []
    taken: dict[Table, set[int]] = {t: set() for t in Table}
    for i in range(n):
        table = draw(st.sampled_from(tables))
        dtype = draw(st.sampled_from(DataType))
        w = 1 if table.is_bits else register_count(dtype)
        address = draw(st.one_of(st.integers(0, top), st.integers(65500, 65535)))
        address = min(address, 65536 - w)
        cells = set(range(address, address + w))
        if disjoint and cells & taken[table]:
            continue
        taken[table] |= cells
        points.append(PointSpec(f"p{i}", table, address, dtype))
    return points


class Limits(TypedDict):
    max_gap: int
    max_registers: int
    max_bits: int


limits = st.builds(
    Limits,
    max_gap=st.integers(0, 40),
    max_registers=st.integers(4, 125),
    max_bits=st.integers(1, 2000),
)


def limit_of(table: Table, kw: Limits) -> int:
    return kw["max_bits"] if table.is_bits else kw["max_registers"]


def end(r: ReadRequest) -> int:
    return r.address + r.count


def check_plan(points: list[PointSpec], requests: list[ReadRequest], kw: Limits) -> None:
    # Every point in exactly one request, whole.
    owner = {}
    for r in requests:
        for p in r.points:
            assert p.name not in owner
            owner[p.name] = r
            assert p.table is r.table
            assert r.address <= p.address and p.address + width(p) <= end(r)
    assert sorted(owner) == sorted(p.name for p in points)

    for r in requests:
        # Limits, address space, and no register read beyond the first and last point.
        assert 1 <= r.count <= limit_of(r.table, kw)
        assert r.address >= 0 and end(r) <= 65536
        assert r.address == min(p.address for p in r.points)
        assert end(r) == max(p.address + width(p) for p in r.points)
        # Inside a request no unread stretch exceeds max_gap.
        covered = r.address
        for p in sorted(r.points, key=lambda p: p.address):
            assert p.address - covered <= kw["max_gap"]
            covered = max(covered, p.address + width(p))

    # Ordered by table, then strictly by address.
    keys = [(TABLE_ORDER.index(r.table), r.address) for r in requests]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)

    # Two neighbouring requests are separate only because merging the next one's first point
    # would break the gap rule or the limit (which is also the only way they can overlap).
    for r1, r2 in pairwise(requests):
        if r1.table is not r2.table:
            continue
        first = min(r2.points, key=lambda p: p.address)
        too_far = first.address - end(r1) > kw["max_gap"]
        too_big = max(end(r1), first.address + width(first)) - r1.address > limit_of(r1.table, kw)
        assert too_far or too_big


@given(points=point_sets(), kw=limits)
def test_property_plan_is_valid(points: list[PointSpec], kw: Limits) -> None:
    check_plan(points, plan_reads(points, **kw), kw)


@given(points=point_sets(disjoint=True), kw=limits)
def test_property_disjoint_points_give_disjoint_requests(
    points: list[PointSpec], kw: Limits
) -> None:
    requests = plan_reads(points, **kw)
    check_plan(points, requests, kw)
    for r1, r2 in pairwise(requests):
        if r1.table is r2.table:
            assert end(r1) <= r2.address


def fewest_consecutive_runs(points: list[PointSpec], kw: Limits) -> int:
    """Brute-force minimum number of requests over all splits of the sorted points into runs."""
    total = 0
    for table in TABLE_ORDER:
        mine = sorted((p for p in points if p.table is table), key=lambda p: p.address)
        n = len(mine)
        best = [0] + [n + 1] * n
        for j in range(1, n + 1):
            for i in range(j):
                run = mine[i:j]
                lo, covered, ok = run[0].address, run[0].address, True
                for p in run:
                    ok = ok and p.address - covered <= kw["max_gap"]
                    covered = max(covered, p.address + width(p))
                if ok and covered - lo <= limit_of(table, kw):
                    best[j] = min(best[j], best[i] + 1)
        total += best[n]
    return total


@given(points=point_sets(disjoint=True, top=120), kw=limits)
def test_property_fewest_requests_for_disjoint_points(points: list[PointSpec], kw: Limits) -> None:
    assert len(plan_reads(points, **kw)) == fewest_consecutive_runs(points, kw)


@given(
    points=point_sets(tables=[H, IN], top=121) | point_sets(tables=[C, D], top=1996),
)
def test_property_one_request_per_table_when_everything_fits(points: list[PointSpec]) -> None:
    low = [p for p in points if p.address <= 1996]  # keep every table's span within its limit
    requests = plan_reads(low, max_gap=65535)
    assert sorted(r.table for r in requests) == sorted({p.table for p in low})
    for r in requests:
        mine = [p for p in low if p.table is r.table]
        assert r.address == min(p.address for p in mine)
        assert end(r) == max(p.address + width(p) for p in mine)
        assert len(r.points) == len(mine)


@given(points=point_sets(), kw=limits)
def test_property_single_point_gives_one_request_per_point(
    points: list[PointSpec], kw: Limits
) -> None:
    requests = plan_reads(points, single_point=True, **kw)
    assert len(requests) == len(points)
    for r in requests:
        (p,) = r.points
        assert (r.table, r.address, r.count) == (p.table, p.address, width(p))


@given(data=st.data(), points=point_sets(), kw=limits)
def test_property_plan_ignores_input_order(
    data: st.DataObject, points: list[PointSpec], kw: Limits
) -> None:
    shuffled = data.draw(st.permutations(points))
    assert plan_reads(shuffled, **kw) == plan_reads(points, **kw)


@given(points=point_sets(), kw=limits)
def test_property_slice_recovers_each_points_words(points: list[PointSpec], kw: Limits) -> None:
    # Fill each request's response with the register addresses, so a slice must be exactly
    # the addresses of the point.
    for r in plan_reads(points, **kw):
        data = list(range(r.address, end(r)))
        for p in r.points:
            assert list(r.slice(p, data)) == list(range(p.address, p.address + width(p)))
