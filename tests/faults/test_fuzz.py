"""Property and fuzz tests for what a serial line or a user hands the agent (issue 7).

The contract, per component (from the code and its docstrings):

* Modbus codec (swm_edge/modbus/codec.py): ``decode`` raises only ``DecodeError``;
  ``scale_value`` never raises; the Modbus driver's per-point decoding
  (``_decode_point``) never raises and never yields a good reading that is not a finite
  number (NaN/inf are bad with reason ``decode``: JSON cannot carry them).
* M-Bus (drivers/mbus): ``parse_frame`` raises only ``CrcError``; ``decode_user_data``
  raises only ``DecodeError`` (a broken record ends the records, kept in
  ``Telegram.error``).
* SDI-12 (drivers/sdi12/protocol.py): every parser raises only ``ReadError`` subclasses.
* Config (swm_edge/config): ``load_config`` returns a config or raises ``ConfigError``.

Already covered elsewhere, not repeated here: decode on arbitrary words
(tests/modbus/test_codec.py), ``parse_frame``/``frame_size`` on arbitrary bytes
(tests/drivers/test_mbus_frames.py), the record parser and user-data decoder on arbitrary
bytes and every DIF/VIF pair (tests/drivers/test_mbus_records.py), SDI-12 parsers on
arbitrary bytes and near misses without a valid CRC (tests/drivers/test_sdi12_protocol.py),
and random YAML documents, bytes, mutated configs and damaged YAML text of the main config
(tests/config/test_config_fuzz.py).

Added here, structure-aware so the fuzz gets past the first check:

* Modbus: scaling and the driver's per-point path with random scale/offset on every type;
* M-Bus: random user data inside a long frame with a *valid* checksum, parsed then decoded
  end to end, and records built from valid DIF/VIF heads with random values;
* SDI-12: near-miss value lines that carry a *valid* CRC, so the value parser is reached;
* config: a mutated or random *profile* file referenced by a valid config;
* atheris: a bounded coverage-guided run over the M-Bus and SDI-12 parsers in a
  subprocess (``ATHERIS_SECONDS``, default 10 s); skipped without atheris locally, a
  failure in CI.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from swm_edge_drivers.mbus.frames import long_frame, parse_frame
from swm_edge_drivers.mbus.records import decode_user_data, parse_records
from swm_edge_drivers.modbus import _decode_point
from swm_edge_drivers.sdi12.protocol import crc_chars, frame, parse_values

from swm_edge.config import ConfigError, load_config
from swm_edge.driver import CrcError, DecodeError, ReadError
from swm_edge.modbus.codec import decode, register_count, scale_value
from swm_edge.modbus.planner import ReadRequest
from swm_edge.model import DataType, PointSpec, Quality, Table, WordOrder
from swm_edge.testing import unavailable

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- Modbus: scaling and the driver's per-point path -------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
register_types = [t for t in DataType if t is not DataType.BOOL]


@st.composite
def points_and_words(draw: st.DrawFn) -> tuple[PointSpec, list[int]]:
    dtype = draw(st.sampled_from(list(DataType)))
    point = PointSpec(
        name="p",
        table=Table.HOLDING,
        address=0,
        type=dtype,
        word_order=draw(st.sampled_from(list(WordOrder))),
        byte_swap=draw(st.booleans()),
        scale=draw(st.one_of(st.just(1.0), finite)),
        offset=draw(st.one_of(st.just(0.0), finite)),
    )
    n = register_count(dtype)
    words = draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n))
    return point, words


@FUZZ
@given(points_and_words())
def test_modbus_scaling_never_raises(pw: tuple[PointSpec, list[int]]) -> None:
    point, words = pw
    raw = decode(point, words)  # valid words: no DecodeError either
    value = scale_value(point, raw)
    assert isinstance(value, (int, float, bool))


@FUZZ
@given(points_and_words())
def test_modbus_point_decoding_never_raises(pw: tuple[PointSpec, list[int]]) -> None:
    point, words = pw
    request = ReadRequest(Table.HOLDING, 0, len(words), (point,))
    result = _decode_point(request, point, words)
    if result.quality is Quality.BAD:
        assert result.error == "decode"
        return
    assert isinstance(result.value, (int, float, bool))
    assert not isinstance(result.value, float) or math.isfinite(result.value)


def test_modbus_scaled_overflow_is_not_a_good_reading() -> None:
    # found by the fuzz test above: scaling used to overflow into a "good" inf
    point = PointSpec("p", Table.HOLDING, 0, DataType.FLOAT64, scale=10.0)
    words = [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF]  # float64 max, about 1.8e308
    result = _decode_point(ReadRequest(Table.HOLDING, 0, 4, (point,)), point, words)
    assert result.quality is Quality.BAD or math.isfinite(result.value)  # type: ignore[arg-type]


@FUZZ
@given(
    dtype=st.sampled_from(list(DataType)),
    words=st.lists(st.integers(-5, 0x10005), max_size=6),
    count=st.integers(0, 6),
)
def test_modbus_point_decoding_of_short_or_bad_answers(
    dtype: DataType, words: list[int], count: int
) -> None:
    """Fewer words than the request announced, or words outside 0..65535: a bad reading,
    never an exception."""
    point = PointSpec("p", Table.HOLDING, 0, dtype)
    request = ReadRequest(Table.HOLDING, 0, max(count, register_count(dtype)), (point,))
    result = _decode_point(request, point, words)
    assert result.quality in (Quality.GOOD, Quality.BAD)


# -- M-Bus: valid frames around random user data -----------------------------------------


@FUZZ
@given(
    c=st.sampled_from([0x08, 0x18, 0x28, 0x38]),
    a=st.integers(0, 255),
    ci=st.sampled_from([0x72, 0x76, 0x7A, 0x78, 0x7C]) | st.integers(0, 255),
    data=st.binary(max_size=250),
)
def test_mbus_valid_frame_with_random_user_data(c: int, a: int, ci: int, data: bytes) -> None:
    raw = long_frame(c, a, ci, data)
    parsed = parse_frame(raw)  # a valid frame: no CrcError
    assert parsed.data == data and parsed.ci == ci
    with contextlib.suppress(DecodeError):
        decode_user_data(ci, parsed.data)


# Heads of data records that the decoder knows: DIF (with data field 0..F) and a common VIF.
record_heads = st.tuples(
    st.integers(0, 0xFF),  # DIF (extension bit included: DIFEs follow)
    st.sampled_from([0x03, 0x13, 0x06, 0x2B, 0x3B, 0x5A, 0x6D, 0x78, 0x7C, 0xFD, 0xFB, 0x7F]),
    st.binary(max_size=12),
)


@FUZZ
@given(st.lists(record_heads, max_size=8), st.booleans())
def test_mbus_records_from_plausible_heads(
    records: list[tuple[int, int, bytes]], strict: bool
) -> None:
    data = b"".join(bytes((dif, vif)) + rest for dif, vif, rest in records)
    with contextlib.suppress(DecodeError):
        parse_records(data, strict=strict)


@FUZZ
@given(st.binary(max_size=300))
def test_mbus_parse_frame_on_long_frame_prefixes(data: bytes) -> None:
    """A valid long frame, truncated or extended by random bytes: CrcError or the frame."""
    raw = long_frame(0x08, 1, 0x72, data[:200])
    for candidate in (raw[: len(data) % (len(raw) + 1)], raw + data[200:]):
        with contextlib.suppress(CrcError):
            parse_frame(candidate)


# -- SDI-12: near misses with a valid CRC --------------------------------------------------

sdi12ish = st.text(alphabet="0123456789+-.eE ACDIMR\x00Zq", max_size=60)


@FUZZ
@given(text=sdi12ish, address=st.sampled_from("0123456789AZaz"), limit=st.integers(1, 80))
def test_sdi12_values_with_a_valid_crc(text: str, address: str, limit: int) -> None:
    body = (address + text).encode("ascii")
    try:
        line = frame(body + crc_chars(body) + b"\r\n")
        values = parse_values(line, address, crc=True, limit=limit)
    except ReadError:
        return
    assert all(isinstance(v, float) for v in values)


# -- config: a random or mutated profile behind a valid config -------------------------------

CONFIG = """\
gateway: {id: gw-1, site: dma-3}
mqtt: {host: broker.local}
buffer: {path: buf.sqlite, max_mb: 16}
buses:
  - {id: lan, type: modbus-tcp, host: 192.0.2.1}
devices:
  - {id: d1, bus: lan, unit: 1, profile: acme, interval: 10}
"""

PROFILE: dict[str, Any] = {
    "manufacturer": "ACME",
    "model": "FM-1",
    "kind": "flow meter",
    "source": "manual",
    "device": {"max_registers": 8},
    "points": [
        {"name": "flow", "address": 0, "type": "float32", "unit": "m3/h", "scale": 0.1},
        {"name": "total", "address": 2, "type": "float64", "unit": "m3"},
        {"name": "alarm", "table": "coil", "address": 1, "type": "bool"},
    ],
}

profile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["holding", "input", "coil", "float32", "uint16", "big", "little", "m3"]),
)
profile_values = st.recursive(
    profile_scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)
    ),
    max_leaves=10,
)


def _dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("profile-fuzz")
    (directory / "profiles").mkdir()
    (directory / "config.yaml").write_text(CONFIG, encoding="utf-8")
    return directory


def _load(directory: Path, profile_text: str) -> None:
    (directory / "profiles" / "acme.yaml").write_text(profile_text, encoding="utf-8")
    with contextlib.suppress(ConfigError):  # anything else fails the test
        load_config(directory / "config.yaml")


def test_the_unmutated_profile_loads(config_dir: Path) -> None:
    (config_dir / "profiles" / "acme.yaml").write_text(_dump(PROFILE), encoding="utf-8")
    loaded = load_config(config_dir / "config.yaml")
    assert [d.id for d in loaded.devices] == ["d1"]


@st.composite
def mutated_profiles(draw: st.DrawFn) -> Any:
    import copy

    profile = copy.deepcopy(PROFILE)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "device", "point"]))
        if where == "top":
            target: Any = profile
        elif where == "device":
            target = profile.get("device")
        else:
            points = profile.get("points")
            target = draw(st.sampled_from(points)) if isinstance(points, list) and points else None
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            target[key] = draw(profile_values)
        else:
            del target[key]
    return profile


@FUZZ
@given(mutated_profiles())
def test_mutated_profile(config_dir: Path, profile: Any) -> None:
    _load(config_dir, _dump(profile))


@FUZZ
@given(profile_values)
def test_random_profile_document(config_dir: Path, document: Any) -> None:
    _load(config_dir, _dump(document))


@FUZZ
@given(st.data())
def test_damaged_profile_text(config_dir: Path, data: st.DataObject) -> None:
    text = textwrap.dedent(_dump(PROFILE))
    position = data.draw(st.integers(min_value=0, max_value=len(text)))
    insert = data.draw(
        st.sampled_from(
            ["\t", ":", "- ", "{", "]", "&a ", "*a", "\n  ", "'", "!!python/name:os.system "]
        )
    )
    cut = data.draw(st.integers(min_value=0, max_value=3))
    _load(config_dir, text[:position] + insert + text[position + cut :])


# -- atheris: a bounded coverage-guided run ------------------------------------------------

ATHERIS_TARGET = """\
import sys
import atheris

from swm_edge.driver import ReadError  # imported first: only the parsers get instrumented

with atheris.instrument_imports(include=["swm_edge_drivers.mbus", "swm_edge_drivers.sdi12"]):
    from swm_edge_drivers.mbus.frames import parse_frame
    from swm_edge_drivers.mbus.records import decode_user_data
    from swm_edge_drivers.sdi12.protocol import Kind, Measurement, parse_ack, parse_values


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 2)
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if choice == 0:
            frame = parse_frame(rest)
            if frame.ci is not None:
                decode_user_data(frame.ci, frame.data)
        elif choice == 1:
            decode_user_data(0x72, rest)
        else:
            parse_values(rest, "0", crc=bool(rest[:1] == b"1"))
            parse_ack(rest, "0", Measurement(Kind.MEASURE))
    except ReadError:
        pass


atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


def test_atheris_bounded_run(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        unavailable("atheris is not installed (pip install atheris; the dev extra has it)")
    seconds = int(os.environ.get("ATHERIS_SECONDS", "10"))
    target = tmp_path / "fuzz_target.py"
    target.write_text(ATHERIS_TARGET)
    proc = subprocess.run(
        [sys.executable, str(target), f"-max_total_time={seconds}", "-rss_limit_mb=1024"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        cwd=tmp_path,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    print(tail[-600:])
    assert proc.returncode == 0, tail
    assert "Done" in tail, tail
