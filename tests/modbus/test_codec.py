"""Codec tests: hand-written byte vectors, published device vectors, and round-trip properties."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.driver import DecodeError
from swm_edge.modbus import decode, encode, register_count, scale_value
from swm_edge.modbus.codec import block_structs, register_struct
from swm_edge.model import DataType, PointSpec, Reason, Table, WordOrder

BIG, LITTLE = WordOrder.BIG, WordOrder.LITTLE
REGISTER_TYPES = [t for t in DataType if t is not DataType.BOOL]
ORDERS = [(o, s) for o in WordOrder for s in (False, True)]


def point(
    dtype: DataType,
    order: WordOrder = BIG,
    swap: bool = False,
    table: Table = Table.HOLDING,
    scale: float = 1.0,
    offset: float = 0.0,
) -> PointSpec:
    return PointSpec(
        "p", table, 0, dtype, word_order=order, byte_swap=swap, scale=scale, offset=offset
    )


def wire(hex_bytes: str) -> list[int]:
    """Registers as a Modbus stack delivers them from response data bytes (high byte first)."""
    data = bytes.fromhex(hex_bytes)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def f64_bits(x: float) -> bytes:
    return struct.pack(">d", x)


# --- register_count ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "count"),
    [
        (DataType.INT16, 1),
        (DataType.UINT16, 1),
        (DataType.BOOL, 1),
        (DataType.INT32, 2),
        (DataType.UINT32, 2),
        (DataType.FLOAT32, 2),
        (DataType.INT64, 4),
        (DataType.UINT64, 4),
        (DataType.FLOAT64, 4),
    ],
)
def test_register_count(dtype: DataType, count: int) -> None:
    assert register_count(dtype) == count


# --- hand-written vectors: every type x word order x byte swap ---------------------------------

# (type, value, {(word_order, byte_swap): registers}); the registers are written out by hand
# from the value's big-endian bytes ABCD(EFGH): BIG=ABCD, BIG+swap=BADC, LITTLE=CDAB,
# LITTLE+swap=DCBA, and for 64 bits LITTLE reverses all four words.
VECTORS: list[tuple[DataType, int | float, dict[tuple[WordOrder, bool], list[int]]]] = [
    (
        DataType.INT16,
        -12345,  # 0xCFC7
        {
            (BIG, False): [0xCFC7],
            (BIG, True): [0xC7CF],
            (LITTLE, False): [0xCFC7],
            (LITTLE, True): [0xC7CF],
        },
    ),
    (
        DataType.INT16,
        -1,
        {
            (BIG, False): [0xFFFF],
            (BIG, True): [0xFFFF],
            (LITTLE, False): [0xFFFF],
            (LITTLE, True): [0xFFFF],
        },
    ),
    (
        DataType.UINT16,
        0x1234,
        {
            (BIG, False): [0x1234],
            (BIG, True): [0x3412],
            (LITTLE, False): [0x1234],
            (LITTLE, True): [0x3412],
        },
    ),
    (
        DataType.UINT16,
        65535,
        {
            (BIG, False): [0xFFFF],
            (BIG, True): [0xFFFF],
            (LITTLE, False): [0xFFFF],
            (LITTLE, True): [0xFFFF],
        },
    ),
    (
        DataType.INT32,
        0x12345678,
        {
            (BIG, False): [0x1234, 0x5678],
            (BIG, True): [0x3412, 0x7856],
            (LITTLE, False): [0x5678, 0x1234],
            (LITTLE, True): [0x7856, 0x3412],
        },
    ),
    (
        DataType.INT32,
        -2,  # 0xFFFFFFFE
        {
            (BIG, False): [0xFFFF, 0xFFFE],
            (BIG, True): [0xFFFF, 0xFEFF],
            (LITTLE, False): [0xFFFE, 0xFFFF],
            (LITTLE, True): [0xFEFF, 0xFFFF],
        },
    ),
    (
        DataType.UINT32,
        0xDEADBEEF,
        {
            (BIG, False): [0xDEAD, 0xBEEF],
            (BIG, True): [0xADDE, 0xEFBE],
            (LITTLE, False): [0xBEEF, 0xDEAD],
            (LITTLE, True): [0xEFBE, 0xADDE],
        },
    ),
    (
        DataType.INT64,
        0x0102030405060708,
        {
            (BIG, False): [0x0102, 0x0304, 0x0506, 0x0708],
            (BIG, True): [0x0201, 0x0403, 0x0605, 0x0807],
            (LITTLE, False): [0x0708, 0x0506, 0x0304, 0x0102],
            (LITTLE, True): [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        DataType.INT64,
        -(2**63),  # 0x8000000000000000
        {
            (BIG, False): [0x8000, 0, 0, 0],
            (BIG, True): [0x0080, 0, 0, 0],
            (LITTLE, False): [0, 0, 0, 0x8000],
            (LITTLE, True): [0, 0, 0, 0x0080],
        },
    ),
    (
        DataType.UINT64,
        0xFEDCBA9876543210,
        {
            (BIG, False): [0xFEDC, 0xBA98, 0x7654, 0x3210],
            (BIG, True): [0xDCFE, 0x98BA, 0x5476, 0x1032],
            (LITTLE, False): [0x3210, 0x7654, 0xBA98, 0xFEDC],
            (LITTLE, True): [0x1032, 0x5476, 0x98BA, 0xDCFE],
        },
    ),
    (
        DataType.FLOAT32,
        # KELLER Series 30/40 protocol v3.5 (2017), section 6.2: 0x41 0x29 0x02 0xDE.
        10.5631999969482421875,
        {
            (BIG, False): [0x4129, 0x02DE],
            (BIG, True): [0x2941, 0xDE02],
            (LITTLE, False): [0x02DE, 0x4129],
            (LITTLE, True): [0xDE02, 0x2941],
        },
    ),
    (
        DataType.FLOAT32,
        -1.0,  # 0xBF800000, Siemens SITRANS F M Modbus manual SFIDK.PS.023.D2.02, Appendix H
        {
            (BIG, False): [0xBF80, 0x0000],
            (BIG, True): [0x80BF, 0x0000],
            (LITTLE, False): [0x0000, 0xBF80],
            (LITTLE, True): [0x0000, 0x80BF],
        },
    ),
    (
        DataType.FLOAT64,
        3.141592653589793,  # 0x400921FB54442D18
        {
            (BIG, False): [0x4009, 0x21FB, 0x5444, 0x2D18],
            (BIG, True): [0x0940, 0xFB21, 0x4454, 0x182D],
            (LITTLE, False): [0x2D18, 0x5444, 0x21FB, 0x4009],
            (LITTLE, True): [0x182D, 0x4454, 0xFB21, 0x0940],
        },
    ),
    (
        DataType.FLOAT64,
        -2.5,  # 0xC004000000000000
        {
            (BIG, False): [0xC004, 0, 0, 0],
            (BIG, True): [0x04C0, 0, 0, 0],
            (LITTLE, False): [0, 0, 0, 0xC004],
            (LITTLE, True): [0, 0, 0, 0x04C0],
        },
    ),
]

VECTOR_CASES = [
    pytest.param(dtype, value, order, swap, words, id=f"{dtype}-{value}-{order}-swap{swap}")
    for dtype, value, table in VECTORS
    for (order, swap), words in table.items()
]


@pytest.mark.parametrize(("dtype", "value", "order", "swap", "words"), VECTOR_CASES)
def test_decode_hand_vectors(
    dtype: DataType, value: int | float, order: WordOrder, swap: bool, words: list[int]
) -> None:
    got = decode(point(dtype, order, swap), words)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(("dtype", "value", "order", "swap", "words"), VECTOR_CASES)
def test_encode_hand_vectors(
    dtype: DataType, value: int | float, order: WordOrder, swap: bool, words: list[int]
) -> None:
    assert encode(point(dtype, order, swap), value) == words


# --- published device vectors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "order", "swap", "expected", "tolerance"),
    [
        # KELLER Series 30/40 protocol v3.5 (2017) section 6.2 float example, exact.
        ("41 29 02 DE", BIG, False, 10.5631999969482421875, 0.0),
        # KELLER ch. 4 example "Read P1": response 01 03 04 3F 75 F0 7B E3 DE -> 0.960701 bar.
        ("3F 75 F0 7B", BIG, False, 0.960701, 5e-7),
        # KELLER ch. 4 example "Read P2": response 01 03 04 3F 76 06 E0 15 D5 -> 0.961042 bar.
        ("3F 76 06 E0", BIG, False, 0.961042, 5e-7),
        # KELLER ch. 4 example "Read TOB1": response 01 03 04 41 B5 C0 79 6E 0B -> 22.719 degC.
        ("41 B5 C0 79", BIG, False, 22.719, 5e-4),
        # Siemens SITRANS F M MAGFLO Modbus manual SFIDK.PS.023.D2.02, Appendix H table.
        ("42 C8 00 00", BIG, False, 100.0, 0.0),
        ("42 5D 47 AE", BIG, False, 55.32, 1e-5),
        ("40 00 00 00", BIG, False, 2.0, 0.0),
        ("3F 80 00 00", BIG, False, 1.0, 0.0),
        ("BF 80 00 00", BIG, False, -1.0, 0.0),
        # Siemens ibid., Appendix H worked example: 01 03 04 40 C3 52 93 .. -> 6.10383 kg/s.
        ("40 C3 52 93", BIG, False, 6.10383, 5e-6),
        # Yosemitech Y532 manual v1.7 (EnviroDIY/YosemitechModbus 0d300ac), "little-endian
        # storage": 7.6 = 0x40F33333 sent as 33 33 F3 40, i.e. DCBA.
        ("33 33 F3 40", LITTLE, True, 7.6, 1e-6),
        # Yosemitech Y532 "get ORP+pH": 01 03 08 85 EB D1 C0 00 00 E0 40 -> -6.56 mV, pH 7.0.
        ("85 EB D1 C0", LITTLE, True, -6.56, 1e-6),
        ("00 00 E0 40", LITTLE, True, 7.0, 0.0),
        # Yosemitech Y532 "get ORP": 01 03 04 E1 7A 24 C1 -> -10.28 mV.
        ("E1 7A 24 C1", LITTLE, True, -10.28, 1e-6),
        # Yosemitech Y520 "get temperature+conductivity": 00 00 8D 41 -> 17.625, exact.
        ("00 00 8D 41", LITTLE, True, 17.625, 0.0),
        # Yosemitech Y4000 manual v1.6 "read supply voltage": C3 F5 44 41 -> 12.31 V.
        ("C3 F5 44 41", LITTLE, True, 12.31, 1e-6),
        # Yosemitech Y4000 manual v1.6 "read all values": DO bytes CD CC FC 40 -> 7.90 mg/L.
        ("CD CC FC 40", LITTLE, True, 7.90, 1e-6),
    ],
)
def test_decode_published_float32(
    data: str, order: WordOrder, swap: bool, expected: float, tolerance: float
) -> None:
    p = point(DataType.FLOAT32, order, swap)
    got = decode(p, wire(data))
    assert got == pytest.approx(expected, abs=tolerance)
    # The inverse must put the same bytes back on the wire, as a simulator would.
    assert encode(p, got) == wire(data)


def test_yosemitech_dcba_is_not_any_other_order() -> None:
    # Source as above (Y532 manual, 7.6 = 33 33 F3 40): the wrong orders give nonsense, so the
    # test would catch a codec that ignored word_order or byte_swap.
    words = wire("33 33 F3 40")
    assert decode(point(DataType.FLOAT32, LITTLE, True), words) == pytest.approx(7.6)
    for order, swap in [(BIG, False), (BIG, True), (LITTLE, False)]:
        assert decode(point(DataType.FLOAT32, order, swap), words) != pytest.approx(7.6)


@pytest.mark.parametrize(
    ("dtype", "data", "expected"),
    [
        # KELLER ch. 4.1: inactive channel int16 32767, underflow -32768, int32 2147483647.
        (DataType.INT16, "7F FF", 32767),
        (DataType.INT16, "80 00", -32768),
        (DataType.INT32, "7F FF FF FF", 2147483647),
    ],
)
def test_decode_keller_integer_sentinels(dtype: DataType, data: str, expected: int) -> None:
    assert decode(point(dtype), wire(data)) == expected


@pytest.mark.parametrize(
    ("data", "check"),
    [
        # KELLER ch. 4.1: inactive float channel reads NaN, over/underflow +/- infinity.
        ("7F C0 00 00", math.isnan),
        ("FF FF FF FF", math.isnan),
        ("7F 80 00 00", lambda x: x == math.inf),
        ("FF 80 00 00", lambda x: x == -math.inf),
    ],
)
def test_decode_float32_specials_pass_through(data: str, check: Callable[[float], bool]) -> None:
    got = decode(point(DataType.FLOAT32), wire(data))
    assert isinstance(got, float) and check(got)


def test_float32_signalling_nan_survives_bit_for_bit() -> None:
    # CPython's own float32 conversion would set the quiet bit (0x7F800001 -> 0x7FC00001).
    for data in ("7F 80 00 01", "FF BF FF FF", "7F C0 00 00"):
        p = point(DataType.FLOAT32)
        value = decode(p, wire(data))
        assert isinstance(value, float) and math.isnan(value)
        assert encode(p, value) == wire(data)


def test_encode_nan_with_payload_below_float32_precision_stays_nan() -> None:
    nan_low_payload = struct.unpack(">d", bytes.fromhex("7FF0000000000001"))[0]
    assert encode(point(DataType.FLOAT32), nan_low_payload) == [0x7FC0, 0x0000]


# --- bool and bit tables -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"), [([0], False), ([1], True), ([0x8000], True), ([0x0100], True)]
)
@pytest.mark.parametrize("swap", [False, True])
def test_bool_in_register_is_nonzero(words: list[int], expected: bool, swap: bool) -> None:
    assert decode(point(DataType.BOOL, swap=swap), words) is expected


@pytest.mark.parametrize("table", [Table.COIL, Table.DISCRETE])
def test_bit_tables(table: Table) -> None:
    p = point(DataType.BOOL, table=table)
    assert decode(p, [True]) is True
    assert decode(p, [False]) is False
    assert decode(p, [1]) is True
    assert decode(p, [0]) is False
    assert encode(p, True) == [1]
    assert encode(p, False) == [0]
    assert encode(p, 1) == [1]


def test_bit_table_point_is_one_bit_whatever_its_type() -> None:
    p = point(DataType.FLOAT64, table=Table.COIL)
    assert decode(p, [True]) is True
    with pytest.raises(DecodeError):
        decode(p, [True, False, False, False])


def test_encode_bool_register() -> None:
    assert encode(point(DataType.BOOL), True) == [1]
    assert encode(point(DataType.BOOL), False) == [0]


# --- decode errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "words"),
    [
        (point(DataType.FLOAT32), [0x4129]),
        (point(DataType.FLOAT32), [0x4129, 0x02DE, 0]),
        (point(DataType.INT16), []),
        (point(DataType.FLOAT64), [0, 0, 0]),
        (point(DataType.UINT16), [65536]),
        (point(DataType.INT16), [-1]),
        (point(DataType.INT32), [0, 0x10000]),
        (point(DataType.BOOL), [70000]),
        (point(DataType.UINT16), [1.5]),
        (point(DataType.UINT16), [None]),
        (point(DataType.UINT16), ["1"]),
        (point(DataType.BOOL, table=Table.COIL), []),
        (point(DataType.BOOL, table=Table.COIL), [1, 0]),
        (point(DataType.BOOL, table=Table.DISCRETE), [2]),
        (point(DataType.BOOL, table=Table.DISCRETE), [-1]),
    ],
)
def test_decode_rejects_bad_words(p: PointSpec, words: list[object]) -> None:
    with pytest.raises(DecodeError) as info:
        decode(p, words)  # type: ignore[arg-type]
    assert info.value.reason == Reason.DECODE


# --- encode errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "raw"),
    [
        (DataType.INT16, 32768),
        (DataType.INT16, -32769),
        (DataType.UINT16, -1),
        (DataType.UINT16, 65536),
        (DataType.INT32, 2**31),
        (DataType.UINT32, 2**32),
        (DataType.INT64, -(2**63) - 1),
        (DataType.INT64, 2**63),
        (DataType.INT32, -(2**31) - 1),
        (DataType.UINT32, -1),
        (DataType.UINT64, 2**64),
        (DataType.UINT64, -1),
        (DataType.INT16, 1.5),
        (DataType.INT32, 2.0),
        (DataType.FLOAT32, 1e39),
        (DataType.FLOAT32, -1e39),
        (DataType.FLOAT32, 10**400),
        (DataType.FLOAT64, 10**400),
        (DataType.FLOAT64, "1.0"),
        (DataType.BOOL, 2),
        (DataType.BOOL, 0.0),
    ],
)
def test_encode_rejects_out_of_range(dtype: DataType, raw: object) -> None:
    with pytest.raises(ValueError):
        encode(point(dtype), raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "raw", "words"),
    [
        (DataType.INT16, -32768, [0x8000]),
        (DataType.INT16, 32767, [0x7FFF]),
        (DataType.UINT32, 2**32 - 1, [0xFFFF, 0xFFFF]),
        (DataType.INT64, 2**63 - 1, [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]),
        (DataType.UINT64, 0, [0, 0, 0, 0]),
        # Largest finite float32, 0x7F7FFFFF.
        (DataType.FLOAT32, 3.4028234663852886e38, [0x7F7F, 0xFFFF]),
        (DataType.FLOAT32, math.inf, [0x7F80, 0x0000]),
        (DataType.FLOAT32, 1, [0x3F80, 0x0000]),
        # 0.1 is not a float32; it rounds to the nearest one, 0x3DCCCCCD.
        (DataType.FLOAT32, 0.1, [0x3DCC, 0xCCCD]),
        (DataType.FLOAT64, -math.inf, [0xFFF0, 0, 0, 0]),
    ],
)
def test_encode_range_edges(dtype: DataType, raw: int | float, words: list[int]) -> None:
    assert encode(point(dtype), raw) == words


# --- scale_value -------------------------------------------------------------------------------


def test_scale_keeps_int_without_scaling() -> None:
    got = scale_value(point(DataType.UINT64), 2**63 + 1)
    assert got == 2**63 + 1  # a float would have lost the + 1
    assert type(got) is int


def test_scale_keller_int16_hundredths() -> None:
    # KELLER ch. 4.1: TOB1 as int16 in 1/100 degC.
    got = scale_value(point(DataType.INT16, scale=0.01), 2272)
    assert got == pytest.approx(22.72)
    assert type(got) is float


@pytest.mark.parametrize(
    ("scale", "offset", "raw", "expected"),
    [
        (2.0, 0.0, 5, 10.0),
        (1.0, 0.5, 5, 5.5),
        (0.1, -40.0, 650, 25.0),
        (1.0, 0.0, 2.5, 2.5),
        (10.0, 1.0, -2.5, -24.0),
    ],
)
def test_scale_applies_scale_then_offset(
    scale: float, offset: float, raw: int | float, expected: float
) -> None:
    got = scale_value(point(DataType.INT32, scale=scale, offset=offset), raw)
    assert got == pytest.approx(expected)
    if scale != 1 or offset != 0:
        assert type(got) is float


def test_scale_never_touches_bools() -> None:
    p = point(DataType.BOOL, scale=10.0, offset=3.0)
    assert scale_value(p, True) is True
    assert scale_value(p, False) is False


def test_scale_passes_nan_and_inf_through() -> None:
    p = point(DataType.FLOAT32, scale=0.5, offset=1.0)
    assert math.isnan(scale_value(p, math.nan))
    assert scale_value(p, math.inf) == math.inf


# --- properties --------------------------------------------------------------------------------

INT_BOUNDS = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def raw_values(dtype: DataType) -> st.SearchStrategy[int | float | bool]:
    if dtype in INT_BOUNDS:
        lo, hi = INT_BOUNDS[dtype]
        return st.integers(lo, hi)
    if dtype is DataType.FLOAT32:
        return st.floats(width=32)
    if dtype is DataType.FLOAT64:
        return st.floats()
    return st.booleans()


def words_for(dtype: DataType) -> st.SearchStrategy[list[int]]:
    n = register_count(dtype)
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


@pytest.mark.parametrize("dtype", list(DataType))
@given(data=st.data())
def test_property_encode_then_decode_is_identity(dtype: DataType, data: st.DataObject) -> None:
    order, swap = data.draw(st.sampled_from(ORDERS))
    p = point(dtype, order, swap)
    raw = data.draw(raw_values(dtype))
    words = encode(p, raw)
    assert len(words) == register_count(dtype)
    assert all(0 <= w <= 0xFFFF for w in words)
    got = decode(p, words)
    assert type(got) is type(raw)
    if isinstance(raw, float):
        assert isinstance(got, float)
        # Bitwise, so NaN payloads and the sign of zero count too.
        assert f64_bits(got) == f64_bits(raw)
    else:
        assert got == raw


@pytest.mark.parametrize("dtype", REGISTER_TYPES)
@given(data=st.data())
def test_property_decode_then_encode_is_identity(dtype: DataType, data: st.DataObject) -> None:
    order, swap = data.draw(st.sampled_from(ORDERS))
    # Every register pattern is a value (NaNs included), so the simulators can produce any.
    p = point(dtype, order, swap)
    words = data.draw(words_for(dtype))
    assert encode(p, decode(p, words)) == words


_STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}


def oracle(dtype: DataType, order: WordOrder, swap: bool, words: list[int]) -> int | float:
    """Independent decoding with ``struct`` straight from the bytes as they came off the wire."""
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    fmt = _STRUCT[dtype]
    if (order, swap) == (BIG, False):  # ABCD: plain big-endian
        value = struct.unpack(">" + fmt, raw)[0]
    elif (order, swap) == (LITTLE, True):  # DCBA: plain little-endian
        value = struct.unpack("<" + fmt, raw)[0]
    elif (order, swap) == (LITTLE, False):  # CDAB: big-endian words in reverse
        value = struct.unpack(">" + fmt, b"".join(reversed(pairs)))[0]
    else:  # BADC: little-endian once the words are reversed
        value = struct.unpack("<" + fmt, b"".join(reversed(pairs)))[0]
    assert isinstance(value, int | float)
    return value


@pytest.mark.parametrize("dtype", REGISTER_TYPES)
@given(data=st.data())
def test_property_decode_matches_struct_oracle(dtype: DataType, data: st.DataObject) -> None:
    order, swap = data.draw(st.sampled_from(ORDERS))
    words = data.draw(words_for(dtype))
    expected = oracle(dtype, order, swap, words)
    got = decode(point(dtype, order, swap), words)
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert got == expected


anything = st.one_of(
    st.integers(),
    st.integers(-2, 0x10001),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=2),
    st.binary(max_size=2),
)


@given(
    table=st.sampled_from(Table),
    dtype=st.sampled_from(DataType),
    order=st.sampled_from(WordOrder),
    swap=st.booleans(),
    words=st.lists(anything, max_size=6),
)
def test_property_decode_raises_only_decode_error(
    table: Table, dtype: DataType, order: WordOrder, swap: bool, words: list[object]
) -> None:
    p = point(dtype, order, swap, table)
    try:
        got = decode(p, words)  # type: ignore[arg-type]
    except DecodeError:
        return
    if table.is_bits or dtype is DataType.BOOL:
        assert isinstance(got, bool)
    elif dtype in (DataType.FLOAT32, DataType.FLOAT64):
        assert isinstance(got, float)
    else:
        assert type(got) is int


# --- register_struct and block_structs: the block decoder's building blocks -----------------------


@pytest.mark.parametrize("dtype", list(DataType))
@given(data=st.data())
def test_property_register_struct_unpacks_like_decode(dtype: DataType, data: st.DataObject) -> None:
    """Anywhere in a block, from the image it names, a point unpacks to what decode gives."""
    order, swap = data.draw(st.sampled_from(ORDERS))
    p = point(dtype, order, swap)
    words = data.draw(words_for(dtype))
    before = data.draw(st.lists(st.integers(0, 0xFFFF), max_size=4))
    after = data.draw(st.lists(st.integers(0, 0xFFFF), max_size=4))
    block = before + words + after
    plain, swapped = (s.pack(*block) for s in block_structs(len(block)))
    unpacker, from_swapped = register_struct(p)
    got = unpacker.unpack_from(swapped if from_swapped else plain, 2 * len(before))[0]
    expected = decode(p, words)
    if dtype is DataType.BOOL:
        assert (got != 0) is expected
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)  # struct may quiet a signalling NaN: the payload is not promised
    else:
        assert type(got) is type(expected)
        assert got == expected


def test_register_struct_keeps_one_register_on_the_plain_image() -> None:
    # A word order means nothing to one register: no swapped image is needed for it.
    assert register_struct(point(DataType.INT16, LITTLE))[1] is False
    assert register_struct(point(DataType.INT16, LITTLE, swap=True))[1] is True


@pytest.mark.parametrize("table", [Table.COIL, Table.DISCRETE])
def test_register_struct_rejects_bit_tables(table: Table) -> None:
    with pytest.raises(ValueError, match="bits"):
        register_struct(point(DataType.UINT16, table=table))


@pytest.mark.parametrize("words", [[0x10000], [-1], [1.0], [None]])
def test_block_structs_refuse_what_is_not_a_register(words: list[object]) -> None:
    with pytest.raises(struct.error):
        block_structs(1)[0].pack(*words)
