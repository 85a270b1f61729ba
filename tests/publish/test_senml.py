"""SenML payloads (swm_edge.publish.senml, docs/integrations.md "SenML").

The packs are decoded with ``json`` and ``cbor2`` and checked by a validator written here
from RFC 8428 itself, independently of the encoder: labels and their types (§4.3, Table 1;
§6, Table 4), exactly one value field per record (§4.2), resolution of base fields (§4.6),
the name character set (§4.5.1), units from the SenML Units registry (§12.1, RFC 8798 §2)
and no secondary units (RFC 8798 §3), extension labels (§4.4, §12.2), number syntax (§5)
and definite-length CBOR (§6). The validator is first tried on the RFC's own examples (§5.1
and the CBOR dump of §6).

No PyPI SenML package serves as a second decoder: kpn-senml 1.0.1 (2018) raises NameError
on Python 3 for any string value (``basestring``) and reads ``vd`` from the ``vb`` field;
senml 0.1.0 (2016) predates the RFC, reads JSON only and takes base fields from the first
record only (wrong for §5.1.6). See docs/integrations.md, "Receivers".
"""

from __future__ import annotations

import base64
import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swm_edge.config.models import ID_PATTERN
from swm_edge.model import PointValue, Quality, Reading, Reason
from swm_edge.publish import senml
from swm_edge.publish.mqtt import BrokerSettings
from swm_edge.publish.senml import SenmlWire, encode_cbor, encode_json, senml_pack
from swm_edge.publish.wire import make_wire
from swm_edge.sdk_types import POINT_NAME_PATTERN
from swm_edge.units import CANONICAL_UNITS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"

# --- the rules, from the RFCs --------------------------------------------------------------


#: SenML Units registry: RFC 8428 §12.1 (Table 6), RFC 8798 §2, and NTU (registered by IANA
#: later, reference ISO 7027-1:2016).
def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


PRIMARY_UNITS = words(
    "m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat m2 m3 l "
    "m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH %EL EL 1/s "
    "1/min beat/min beats S/m "  # RFC 8428
    "B VA VAs var vars J/m kg/m3 deg "  # RFC 8798 §2
    "NTU"
)
#: Marked with an asterisk: NOT RECOMMENDED to be produced by new implementations.
NOT_RECOMMENDED = words("g l l/s Bspl % 1/min beat/min beats deg")
#: RFC 8798 §3, Table 2: not allowed in "u" of a version 10 pack.
SECONDARY_UNITS = words(
    "ms min h kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s MB/s mV mA dBm ug/m3 "
    "mm/h m/h ppm /100 /1000 hPa mm cm km km/h"
)

NUMBER, TEXT, BOOL, UINT, DATA = "number", "text", "bool", "uint", "data"
#: RFC 8428 §4.3, Table 1: label -> type.
LABELS = {
    "bn": TEXT,
    "bt": NUMBER,
    "bu": TEXT,
    "bv": NUMBER,
    "bs": NUMBER,
    "bver": UINT,
    "n": TEXT,
    "u": TEXT,
    "v": NUMBER,
    "vs": TEXT,
    "vb": BOOL,
    "vd": DATA,
    "s": NUMBER,
    "t": NUMBER,
    "ut": NUMBER,
}
#: RFC 8428 §6, Table 4 ("conclusive": no other integer keys).
CBOR_KEYS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u"}
CBOR_KEYS |= {2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
VALUE_LABELS = ("v", "vs", "vb", "vd")
#: §4.5.1: the concatenated name.
NAME = re.compile(r"[A-Za-z0-9][-:./_A-Za-z0-9]*")
#: §11, Figure 1: labels of extension fields (b-labels are base fields).
LABEL = re.compile(r"[A-Zac-z0-9][-_:.A-Za-z0-9]*|b[-_:.A-Za-z0-9]+")
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
#: §4.5.3: smaller times are relative to "now".
ABSOLUTE = 2**28


class SenmlError(AssertionError):
    pass


def check(ok: object, message: str) -> None:
    if not ok:
        raise SenmlError(message)


def _json_float(token: str) -> float:
    check("E" not in token, f"§5: exponent must be a lower-case e: {token}")
    return float(token)


def _no_constant(token: str) -> float:
    raise SenmlError(f"§5: not a JSON number: {token}")


def from_json(payload: bytes) -> list[dict[str, Any]]:
    """A SenML JSON pack as records with the RFC's labels (``vd`` decoded to bytes)."""
    pack = json.loads(payload.decode("utf-8"), parse_float=_json_float, parse_constant=_no_constant)
    check(isinstance(pack, list), "§5: the root is an array")
    for record in pack:
        check(isinstance(record, dict), "§5: a record is an object")
        if "vd" in record:
            text = record["vd"]
            check(isinstance(text, str) and BASE64URL.fullmatch(text), f"§4.3: vd {text!r}")
            record["vd"] = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return pack


def _cbor_item(data: bytes, at: int) -> int:
    """The end of the CBOR data item at ``at``; fails on indefinite lengths and tags."""
    check(at < len(data), "CBOR: truncated")
    major, info = data[at] >> 5, data[at] & 0x1F
    at += 1
    check(info != 31, "§6: definite lengths only")
    check(info < 28, "CBOR: reserved additional information")
    size = 0 if info < 24 else 1 << (info - 24)
    value = info if info < 24 else int.from_bytes(data[at : at + size], "big")
    at += size
    check(major != 6, "§6/§11: no tags (a bignum or decimal fraction is not used here)")
    if major in (2, 3):
        return at + value
    if major == 4:
        for _ in range(value):
            at = _cbor_item(data, at)
    elif major == 5:
        for _ in range(2 * value):
            at = _cbor_item(data, at)
    return at


def from_cbor(payload: bytes) -> list[dict[str, Any]]:
    """A SenML CBOR pack as records with the RFC's (text) labels."""
    check(payload[0] >> 5 == 4, "§6: the root is an array")
    check(_cbor_item(payload, 0) == len(payload), "CBOR: trailing bytes")
    pack = cbor2.loads(payload)
    records = []
    for raw in pack:
        check(isinstance(raw, dict), "§6: a record is a map")
        record = {}
        for key, value in raw.items():
            if isinstance(key, int):
                check(key in CBOR_KEYS, f"§6: Table 4 is conclusive, no key {key}")
                record[CBOR_KEYS[key]] = value
            else:
                check(key not in LABELS, f"§6: {key!r} has an integer key")
                record[key] = value
        records.append(record)
    return records


def _typed(label: str, value: object, kind: str) -> None:
    if kind == NUMBER:
        check(isinstance(value, int | float) and not isinstance(value, bool), f"{label}: number")
        check(math.isfinite(value), f"{label}: finite")
        if isinstance(value, int):
            check(-(2**64) <= value < 2**64, f"{label}: a CBOR integer")
    elif kind == TEXT:
        check(isinstance(value, str), f"{label}: text")
    elif kind == BOOL:
        check(isinstance(value, bool), f"{label}: boolean")
    elif kind == UINT:
        check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, label)
    elif kind == DATA:
        check(isinstance(value, bytes), f"{label}: bytes")


def resolve(pack: list[dict[str, Any]], producer: bool = False) -> list[dict[str, Any]]:
    """The records of a pack, resolved (§4.6), after checking them against RFC 8428.

    ``producer``: also what a new implementation should not produce (NOT RECOMMENDED
    units, unknown base fields).
    """
    check(len(pack) >= 1, "§11: a pack has at least one record")
    base: dict[str, Any] = {}
    version = None
    resolved = []
    for record in pack:
        for label, value in record.items():
            check(LABEL.fullmatch(label), f"§11: label {label!r}")
            check(not label.endswith("_"), f"§4.4: must-understand field {label!r}")
            if label in LABELS:
                _typed(label, value, LABELS[label])
            else:
                check(not (producer and label.startswith("b")), f"unknown base field {label}")
        values = [k for k in VALUE_LABELS if k in record]
        check(len(values) == 1 or (not values and "s" in record), f"§4.2: {values} in {record}")
        base.update({k: v for k, v in record.items() if k in ("bn", "bt", "bu", "bv", "bs")})
        this_version = record.get("bver", version if version is not None else 10)
        check(version is None or this_version == version, "§4.4: one version per pack")
        check(this_version <= 10, "§4.4: a version this reader does not know")
        version = this_version
        name = base.get("bn", "") + record.get("n", "")
        check(NAME.fullmatch(name), f"§4.5.1: name {name!r}")
        out: dict[str, Any] = {"n": name, "t": base.get("bt", 0) + record.get("t", 0)}
        unit = record.get("u", base.get("bu"))
        if unit is not None:
            check(unit in PRIMARY_UNITS, f"§12.1: unit {unit!r} is not registered")
            check(not (producer and unit in NOT_RECOMMENDED), f"§12.1: {unit!r} NOT RECOMMENDED")
            out["u"] = unit
        if "v" in record:
            out["v"] = record["v"] + base["bv"] if "bv" in base else record["v"]
        for k in ("vs", "vb", "vd"):
            if k in record:
                out[k] = record[k]
        if "s" in record or "bs" in base:
            out["s"] = base.get("bs", 0) + record.get("s", 0)
        out.update({k: v for k, v in record.items() if k not in LABELS})
        resolved.append(out)
    return resolved


# --- the RFC's examples ----------------------------------------------------------------------

RFC_EXAMPLES = {
    "5.1.1": """[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]""",
    "5.1.2-a": """[
        {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
        {"n":"current","u":"A","v":1.2}]""",
    "5.1.2-b": """[
        {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
         "bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
        {"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3},
        {"n":"current","t":-3,"v":1.4},{"n":"current","t":-2,"v":1.5},
        {"n":"current","t":-1,"v":1.6},{"n":"current","v":1.7}]""",
    # The SensML stream example, up to its "...".
    "5.1.2-c": """[
        {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":21.2},
        {"t":10,"v":21.3},{"t":20,"v":21.4},{"t":30,"v":21.4},{"t":40,"v":21.5},
        {"t":50,"v":21.5},{"t":60,"v":21.5},{"t":70,"v":21.6},{"t":80,"v":21.7}]""",
    "5.1.3": """[
        {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
        {"u":"lon","v":24.30621},{"u":"lat","v":60.07965},
        {"t":60,"v":20.3},{"u":"lon","t":60,"v":24.30622},{"u":"lat","t":60,"v":60.07965},
        {"t":120,"v":20.7},{"u":"lon","t":120,"v":24.30623},{"u":"lat","t":120,"v":60.07966},
        {"u":"%EL","t":150,"v":98},
        {"t":180,"v":21.2},{"u":"lon","t":180,"v":24.30628},{"u":"lat","t":180,"v":60.07967}]""",
    "5.1.5": """[
        {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
        {"n":"label","vs":"Machine Room"},{"n":"open","vb":false},
        {"n":"nfv-reader","vd":"aGkgCg"}]""",
    "5.1.6": """[
        {"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
        {"n":"humidity","u":"%RH","v":30},
        {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
        {"n":"humidity","u":"%RH","v":67}]""",
    "5.1.7-b": """[
        {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},{"n":"2001:db8::4","v":1}]""",
    "5.1.7-c": """[
        {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},{"n":"2001:db8::4","v":0.5},
        {"n":"2001:db8::3","t":0.1,"v":0},{"n":"2001:db8::4","t":0.1,"v":0}]""",
}

#: §5.1.4: the example of §5.1.3, resolved.
RFC_5_1_4 = """[
    {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
    {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
    {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
    {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
    {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
    {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}]"""

#: §6: the CBOR dump of the second example of §5.1.2.
RFC_6_CBOR = bytes.fromhex(
    """
    87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
    31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
    22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
    67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
    66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
    24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
    72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
    cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
    f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
    74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
    74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
    63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
    33 33 33
    """
)


@pytest.mark.parametrize("section", sorted(RFC_EXAMPLES))
def test_the_validator_accepts_the_rfc_examples(section: str) -> None:
    """RFC 8428 §5.1.1 to §5.1.7."""
    resolve(from_json(RFC_EXAMPLES[section].encode()))


def test_the_validator_resolves_as_the_rfc_does() -> None:
    """§5.1.4 is §5.1.3 resolved (§4.6)."""
    assert resolve(from_json(RFC_EXAMPLES["5.1.3"].encode())) == json.loads(RFC_5_1_4)


def test_the_validator_reads_the_rfc_cbor_example() -> None:
    """§6: the CBOR dump is the second example of §5.1.2."""
    assert len(RFC_6_CBOR) == 0xC3
    resolved = resolve(from_cbor(RFC_6_CBOR))
    assert resolved == resolve(from_json(RFC_EXAMPLES["5.1.2-b"].encode()))
    assert resolved[0] == {"n": "urn:dev:ow:10e2073a0108006:voltage", "t": 1276020076.001,
                           "u": "V", "v": 120.1}  # fmt: skip
    assert resolved[1:] == [
        {"n": "urn:dev:ow:10e2073a0108006:current", "t": 1276020076.001 + t, "u": "A", "v": v}
        for t, v in [(-5, 1.2), (-4, 1.3), (-3, 1.4), (-2, 1.5), (-1, 1.6), (0, 1.7)]
    ]


def test_the_rfc_5_1_7_record_without_a_value_is_rejected() -> None:
    """The first actuation example of §5.1.7 opens with a record holding only a base name,
    which §4.2 does not allow ("Exactly one Value field MUST appear unless there is a Sum
    field"); the validator holds our packs to §4.2."""
    example = """[{"bn":"urn:dev:ow:10e2073a01080063:"},{"n":"temp","u":"Cel","v":23.1},
                  {"n":"heat","u":"/","v":1},{"n":"fan","u":"/","v":0}]"""
    with pytest.raises(SenmlError, match=r"§4\.2"):
        resolve(from_json(example.encode()))


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        (b'[{"n":"a"}]', "§4.2"),
        (b'[{"n":"a","v":1,"vs":"x"}]', "§4.2"),
        (b"[]", "§11"),
        (b'[{"n":"a b","v":1}]', "§4.5.1"),
        (b'[{"n":"_a","v":1}]', "§4.5.1"),
        (b'[{"n":"a","u":"m3/h","v":1}]', "§12.1"),
        (b'[{"n":"a","u":"mm","v":1}]', "§12.1"),
        (b'[{"n":"a","v":1,"seq_":1}]', "§4.4"),
        (b'[{"bver":11,"n":"a","v":1}]', "§4.4"),
        (b'[{"n":"a","v":1E3}]', "§5"),
        (b'[{"n":"a","v":NaN}]', "§5"),
        (b'[{"n":"a","v":true}]', "v: number"),
        (b'[{"n":"a","vd":"aGkgCg=="}]', "§4.3"),
    ],
)
def test_the_validator_rejects(payload: bytes, rule: str) -> None:
    with pytest.raises(SenmlError, match=re.escape(rule)):
        resolve(from_json(payload))


def test_the_validator_rejects_in_cbor() -> None:
    with pytest.raises(SenmlError, match="§6: definite"):
        from_cbor(bytes.fromhex("9fa20061610201ff"))  # [_ {0: "a", 2: 1}]
    with pytest.raises(SenmlError, match="tags"):
        from_cbor(bytes.fromhex("81a200616102") + cbor2.dumps(2**64))
    with pytest.raises(SenmlError, match="integer key"):
        from_cbor(cbor2.dumps([{"n": "a", 2: 1}]))
    with pytest.raises(SenmlError, match="conclusive"):
        from_cbor(cbor2.dumps([{0: "a", 2: 1, 9: 0}]))


def test_producer_rules() -> None:
    """What is valid but should not be produced: "%" (a ratio, despite its name)."""
    resolve(from_json(b'[{"n":"a","u":"%","v":0.5}]'))
    with pytest.raises(SenmlError, match="NOT RECOMMENDED"):
        resolve(from_json(b'[{"n":"a","u":"%","v":0.5}]'), producer=True)


# --- the unit mapping ---------------------------------------------------------------------------

#: The mapping as docs/integrations.md states it, written out again on purpose: a change in
#: the encoder's table must be a deliberate change here and in the docs.
EXPECTED_UNITS: dict[str, tuple[str | None, Fraction]] = {
    "m3": ("m3", Fraction(1)),
    "L": ("m3", Fraction("1/1000")),
    "mL": ("m3", Fraction("1e-6")),
    "m3/s": ("m3/s", Fraction(1)),
    "m3/min": ("m3/s", Fraction(1, 60)),
    "m3/h": ("m3/s", Fraction(1, 3600)),
    "m3/d": ("m3/s", Fraction(1, 24 * 3600)),
    "L/s": ("m3/s", Fraction("1e-3")),
    "L/min": ("m3/s", Fraction("1e-3") / 60),
    "L/h": ("m3/s", Fraction("1e-3") / 3600),
    "L/d": ("m3/s", Fraction("1e-3") / 86400),
    "m/s": ("m/s", Fraction(1)),
    "Pa": ("Pa", Fraction(1)),
    "kPa": ("Pa", Fraction("1e3")),
    "MPa": ("Pa", Fraction("1e6")),
    "mbar": ("Pa", Fraction("1e5") / 1000),
    "bar": ("Pa", Fraction("1e5")),
    "m": ("m", Fraction(1)),
    "cm": ("m", Fraction("0.01")),
    "mm": ("m", Fraction("0.001")),
    "Cel": ("Cel", Fraction(1)),
    "mg/L": ("kg/m3", Fraction("1e-6") / Fraction("1e-3")),
    "ug/L": ("kg/m3", Fraction("1e-9") / Fraction("1e-3")),
    "ppm": ("/", Fraction("1e-6")),
    "ppb": ("/", Fraction("1e-9")),
    "NTU": ("NTU", Fraction(1)),
    "FNU": ("NTU", Fraction(1)),
    "uS/cm": ("S/m", Fraction("1e-6") / Fraction("0.01")),
    "mS/cm": ("S/m", Fraction("1e-3") / Fraction("0.01")),
    "pH": ("pH", Fraction(1)),
    "mV": ("V", Fraction("1e-3")),
    "V": ("V", Fraction(1)),
    "A": ("A", Fraction(1)),
    "mA": ("A", Fraction("1e-3")),
    "W": ("W", Fraction(1)),
    "kW": ("W", Fraction(1000)),
    "kWh": ("J", Fraction(1000 * 3600)),
    "Hz": ("Hz", Fraction(1)),
    "Ohm": ("Ohm", Fraction(1)),
    "ms": ("s", Fraction("1e-3")),
    "s": ("s", Fraction(1)),
    "min": ("s", Fraction(60)),
    "h": ("s", Fraction(3600)),
    "d": ("s", Fraction(86400)),
    "%": ("/", Fraction("0.01")),
    "1": (None, Fraction(1)),
}


def docs_section(title: str) -> str:
    text = DOCS.read_text()
    start = text.index(f"\n### {title}\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_canonical_unit_has_a_registered_senml_unit() -> None:
    assert set(senml.UNIT_MAP) == set(CANONICAL_UNITS) == set(EXPECTED_UNITS)
    assert senml.UNIT_MAP == EXPECTED_UNITS
    for u, _ in senml.UNIT_MAP.values():
        if u is not None:
            assert u in PRIMARY_UNITS and u not in NOT_RECOMMENDED and u not in SECONDARY_UNITS


def test_the_docs_table_is_the_mapping() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (`[^`]+`|\(none\)) \| ([0-9/]+) \|$",
                      docs_section("Units"), re.M)  # fmt: skip
    table = {c: (None if u == "(none)" else u.strip("`"), Fraction(f)) for c, u, f in rows}
    assert table == EXPECTED_UNITS


# --- packs from readings -------------------------------------------------------------------------

GW = "gw-lima-0001"
TS = 1795406410.012  # 2026-11-23T04:00:10.012Z


def example_reading() -> Reading:
    return Reading(
        "flow-1",
        TS,
        {
            "flow_rate": PointValue.good(12.5, "m3/h"),
            "totalizer": PointValue.bad("timeout", "m3"),
            "pressure": PointValue.good(2.5, "bar"),
            "pump_on": PointValue.good(True),
        },
    )


def both(reading: Reading, seq: int = 42, gateway: str = GW) -> list[dict[str, Any]]:
    """The pack in both formats, checked; the resolved records (the same in both)."""
    pack = senml_pack(gateway, seq, reading)
    from_j = resolve(from_json(encode_json(pack)), producer=True)
    from_c = resolve(from_cbor(encode_cbor(pack)), producer=True)
    assert from_j == from_c
    for a, b in zip(from_j, from_c, strict=True):
        assert [type(v) for v in a.values()] == [type(v) for v in b.values()]
    return from_j


def test_the_documented_example() -> None:
    section = docs_section("A pack")
    documented_json = re.search(r"```json\n(.*?)```", section, re.S)
    documented_hex = re.search(r"```text\n(.*?)```", section, re.S)
    assert documented_json and documented_hex
    pack = senml_pack(GW, 42, example_reading())
    assert json.loads(encode_json(pack)) == json.loads(documented_json[1])
    assert encode_cbor(pack).hex() == "".join(documented_hex[1].split())
    assert f"({len(encode_cbor(pack))} bytes, hex)" in section
    assert both(example_reading()) == [
        {"n": f"{GW}/flow-1/flow_rate", "t": TS, "u": "m3/s", "v": 12.5 / 3600, "swm_seq": 42},
        {"n": f"{GW}/flow-1/totalizer/error", "t": TS, "vs": "timeout", "swm_seq": 42},
        {"n": f"{GW}/flow-1/pressure", "t": TS, "u": "Pa", "v": 250000.0, "swm_seq": 42},
        {"n": f"{GW}/flow-1/pump_on", "t": TS, "vb": True, "swm_seq": 42},
    ]


def test_the_documented_clock_example() -> None:
    documented = re.search(r"```json\n(.*?)```", docs_section("Time and clock"), re.S)
    assert documented
    flagged = Reading("flow-1", 192.004, {"flow_rate": PointValue.good(12.4, "m3/h")},
                      "unsynchronized")  # fmt: skip
    assert json.loads(encode_json(senml_pack(GW, 43, flagged))) == json.loads(documented[1])


def test_base_name_and_time_only_on_the_first_record() -> None:
    pack = senml_pack(GW, 7, example_reading())
    assert pack[0]["bn"] == f"{GW}/flow-1/" and pack[0]["bt"] == TS
    assert list(pack[0])[:3] == ["bn", "bt", "n"]
    assert not any(k.startswith("b") for r in pack[1:] for k in r)
    assert all(r["swm_seq"] == 7 and "swm_clock" not in r for r in pack)


@pytest.mark.parametrize(
    ("ts", "clock", "bt"),
    [
        (TS, None, TS),
        (TS, "unsynchronized", TS),  # a clock restored from the last shutdown: approximate
        (1_700_000_000.5, "unsynchronized", 1_700_000_000.5),
        (float(2**28), "unsynchronized", float(2**28)),
        (192.004, "unsynchronized", None),  # booted in 1970: would read as "now + 192 s"
        (2**28 - 0.001, "unsynchronized", None),
        (0.0, None, None),
        (math.nan, None, None),  # a buffer row without ts
    ],
)
def test_time_and_clock_flag(ts: float, clock: str | None, bt: float | None) -> None:
    reading = Reading("d", ts, {"a": PointValue.good(1.5), "b": PointValue.bad("crc")}, clock)
    pack = senml_pack(GW, 1, reading)
    assert pack[0].get("bt") == bt
    for record in pack:
        assert record.get("swm_clock") == clock
    for record in both(reading):
        assert record["t"] == (bt if bt is not None else 0)


def test_bad_points_are_error_records() -> None:
    reading = Reading(
        "dev",
        TS,
        {
            "a": PointValue.bad(Reason.TIMEOUT, "m3"),
            "b": PointValue.bad("exception:2"),
            "c": PointValue.bad(""),  # no reason: driver-error, as in v1
            "d": PointValue(None, Quality.BAD),
        },
    )
    assert [(r["n"], r["vs"]) for r in both(reading)] == [
        (f"{GW}/dev/a/error", "timeout"),
        (f"{GW}/dev/b/error", "exception:2"),
        (f"{GW}/dev/c/error", "driver-error"),
        (f"{GW}/dev/d/error", "driver-error"),
    ]
    device = Reading("dev", TS, {"_device": PointValue.bad("connection")})
    assert [(r["n"], r["vs"]) for r in both(device)] == [(f"{GW}/dev/_device/error", "connection")]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, object()])
def test_values_senml_cannot_carry_are_driver_errors(value: Any) -> None:
    reading = Reading("dev", TS, {"x": PointValue(value, Quality.GOOD, "m3/h")})
    assert [(r["n"], r["vs"]) for r in both(reading)] == [(f"{GW}/dev/x/error", "driver-error")]


def test_overflow_after_conversion_is_a_driver_error() -> None:
    reading = Reading("dev", TS, {"x": PointValue.good(1e305, "MPa"), "y": PointValue.good(1e305)})
    assert [r.get("vs", r.get("v")) for r in both(reading)] == ["driver-error", 1e305]
    huge = Reading("dev", TS, {"x": PointValue.good(10**400)})
    assert [r["vs"] for r in both(huge)] == ["driver-error"]


def test_a_reading_without_points_is_still_a_pack() -> None:
    assert both(Reading("dev", TS, {})) == [
        {"n": f"{GW}/dev/_device/points", "t": TS, "u": "count", "v": 0, "swm_seq": 42}
    ]


def test_numbers_stay_exact() -> None:
    reading = Reading(
        "dev",
        TS,
        {
            "big": PointValue.good(2**63 + 1),
            "max": PointValue.good(2**64 - 1),
            "min": PointValue.good(-(2**64)),
            "beyond": PointValue.good(2**64 + 1),
            "kpa": PointValue.good(101, "kPa"),
            "mm": PointValue.good(5000, "mm"),
            "mm_odd": PointValue.good(5001, "mm"),
            "pct": PointValue.good(45, "%"),
            "tiny": PointValue.good(5e-324, "m"),
            "flow": PointValue.good(0.1, "L/min"),
        },
    )
    values = {r["n"].rsplit("/", 1)[1]: r["v"] for r in both(reading)}
    assert values == {
        "big": 2**63 + 1,
        "max": 2**64 - 1,
        "min": -(2**64),
        "beyond": float(2**64),
        "kpa": 101000,
        "mm": 5,
        "mm_odd": 5.001,
        "pct": 0.45,
        "tiny": 5e-324,
        "flow": float(Fraction(0.1) / 60000),
    }
    assert [type(values[k]) for k in ("big", "kpa", "mm", "mm_odd", "beyond")] == [
        int, int, int, float, float
    ]  # fmt: skip
    assert b'"v":9223372036854775809' in encode_json(senml_pack(GW, 1, reading))


def test_text_and_bytes_values() -> None:
    """Not produced by the built-in drivers (the model's values are numbers and booleans),
    but a third-party driver's text or bytes go as vs and vd."""
    reading = Reading(
        "dev",
        TS,
        {
            "label": PointValue("Machine Room \u00e9", Quality.GOOD, "m"),
            "raw": PointValue(b"hi \n\xff", Quality.GOOD),
            "broken": PointValue("\ud800", Quality.GOOD),
        },
    )
    records = both(reading)
    assert [(r.get("vs"), r.get("vd"), "u" in r) for r in records] == [
        ("Machine Room \u00e9", None, False),
        (None, b"hi \n\xff", False),
        ("?", None, False),
    ]
    assert b'"vd":"aGkgCv8"' in encode_json(senml_pack(GW, 1, reading))


def test_names_outside_the_charset_are_made_safe() -> None:
    reading = Reading("dev", TS, {"a b/c:d\u00e9": PointValue.good(1.0)})
    assert [r["n"] for r in both(reading)] == [f"{GW}/dev/a_b_c_d_"]


def test_unknown_units_are_left_out() -> None:
    reading = Reading(
        "dev", TS, {"x": PointValue.good(3.5, "furlong"), "y": PointValue.good(2, "1")}
    )
    assert [(r.get("u"), r["v"]) for r in both(reading)] == [(None, 3.5), (None, 2)]


# --- the property ------------------------------------------------------------------------------

REASONS = st.sampled_from([*map(str, Reason), "exception:2"]) | st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=20
)
UNITS = st.sampled_from([*sorted(CANONICAL_UNITS), None, None, "furlong"])
NUMBERS = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
GOOD_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-300, max_value=1e-300),
    st.integers(-(2**70), 2**70),
    st.integers(-(2**64) - 2, -(2**64) + 2) | st.integers(2**64 - 2, 2**64 + 2),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
    st.binary(max_size=10),
    st.sampled_from([math.nan, math.inf, None]),
)
POINTS = st.one_of(
    st.builds(PointValue.good, GOOD_VALUES, UNITS),
    st.builds(PointValue.bad, REASONS, UNITS),
)
READINGS = st.builds(
    Reading,
    st.from_regex(ID_PATTERN, fullmatch=True),
    st.floats(min_value=2**28, max_value=4e9) | st.floats(min_value=0, max_value=2**28),
    st.dictionaries(st.from_regex(POINT_NAME_PATTERN, fullmatch=True), POINTS, max_size=8),
    st.sampled_from([None, "unsynchronized"]),
)


def expected_value(value: Any, unit: str | None) -> dict[str, Any] | None:
    """The SenML fields of a good value, from the rules of docs/integrations.md."""
    if isinstance(value, bool):
        return {"vb": value}
    if isinstance(value, str):
        return {"vs": value}
    if isinstance(value, bytes):
        return {"vd": value}
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    u, factor = EXPECTED_UNITS.get(unit or "", (None, Fraction(1)))
    exact = Fraction(value) * factor
    if isinstance(value, int) and exact.denominator == 1 and -(2**64) <= exact < 2**64:
        v: int | float = int(exact)
    else:
        try:
            v = float(exact)
        except OverflowError:
            return None
    return {"v": v} if u is None else {"u": u, "v": v}


@settings(max_examples=300, deadline=None)
@given(READINGS, st.from_regex(ID_PATTERN, fullmatch=True), st.integers(0, 2**63 - 1))
def test_every_pack_validates_and_carries_the_reading_exactly(
    reading: Reading, gateway: str, seq: int
) -> None:
    records = both(reading, seq, gateway)
    prefix = f"{gateway}/{reading.device_id}/"
    time = reading.ts if reading.ts >= ABSOLUTE else 0
    ext = {"swm_seq": seq} | ({"swm_clock": reading.clock} if reading.clock else {})
    expected = []
    for name, pv in reading.points.items():
        fields = expected_value(pv.value, pv.unit) if pv.quality is Quality.GOOD else None
        if fields is None:
            reason = (pv.error or "driver-error") if pv.quality is Quality.BAD else "driver-error"
            expected.append({"n": f"{prefix}{name}/error", "t": time, "vs": reason, **ext})
        else:
            expected.append({"n": prefix + name, "t": time, **fields, **ext})
    if not reading.points:
        expected = [{"n": f"{prefix}_device/points", "t": time, "u": "count", "v": 0, **ext}]
    assert records == expected
    for got, want in zip(records, expected, strict=True):
        if "v" in want:
            assert type(got["v"]) is type(want["v"])


@pytest.mark.parametrize("unit", sorted(CANONICAL_UNITS))
@settings(max_examples=40, deadline=None)
@given(value=NUMBERS)
def test_every_unit_converts_exactly(unit: str, value: float) -> None:
    [record] = both(Reading("dev", TS, {"x": PointValue.good(value, unit)}))
    want = expected_value(value, unit)
    if want is None:  # beyond a double once converted
        assert record["vs"] == "driver-error"
    else:
        assert {k: v for k, v in record.items() if k in ("u", "v")} == want
        assert type(record["v"]) is type(want["v"])


# --- the wire -------------------------------------------------------------------------------------


def broker(payload: str) -> BrokerSettings:
    return BrokerSettings(
        host="localhost", port=1883, client_id="c", gateway_id=GW, topic_prefix="swm/x",
        payload=payload, qos=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "decode", "content_type"),
    [
        ("senml", from_json, "application/senml+json"),
        ("senml-cbor", from_cbor, "application/senml+cbor"),
    ],
)
def test_wire(payload: str, decode: Any, content_type: str) -> None:
    wire = make_wire(broker(payload), Path("/nonexistent"))
    assert isinstance(wire, SenmlWire)
    [message] = wire.encode(42, example_reading())
    assert message.topic == f"swm/x/{GW}/flow-1/{payload}"
    assert message.content_type == content_type
    assert (message.qos, message.retain) == (0, False)
    assert resolve(decode(message.payload), producer=True) == both(example_reading())
    # swm-edge's status topic, as with the json payload
    assert wire.will().topic == f"swm/x/{GW}/status"
    assert json.loads(wire.will().payload) == {"state": "offline", "gateway": GW}
    assert json.loads(wire.connected()[0].payload)["state"] == "online"


def test_wire_needs_a_senml_payload() -> None:
    with pytest.raises(ValueError, match="senml"):
        SenmlWire(broker("json"))
