"""SenML (RFC 8428) payloads: one SenML Pack per reading, as JSON or CBOR.

``mqtt.payload: senml`` publishes ``application/senml+json`` on
``{topic_prefix}/{gateway_id}/{device_id}/senml``; ``senml-cbor`` the same records as
``application/senml+cbor`` on ``.../senml-cbor``. The status topic is swm-edge's own, as with
``json``. docs/integrations.md ("SenML") is the contract; in short:

- the first record has the base name ``{gateway_id}/{device_id}/`` and, when the reading's
  time is one SenML can express as absolute (RFC 8428 §4.5.3), the base time ``bt``;
- one record per good point: name = point name, the value as ``v`` (numbers), ``vb``
  (booleans), ``vs`` (text) or ``vd`` (bytes), and a unit from the SenML Units registry in
  ``u`` (values in units that are not registered are converted to registered ones);
- a bad point is not a value: it becomes a record named ``{point}/error`` whose string value
  is the reason (``timeout``, ``exception:2``, ...);
- every record carries the extension fields ``swm_seq`` (the reading's seq, to drop
  duplicates) and, when the gateway did not trust its clock, ``swm_clock``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cbor2

from swm_edge.model import PointValue, Quality, Reading
from swm_edge.publish.wire import StatusWire

if TYPE_CHECKING:
    from swm_edge.publish.mqtt import BrokerSettings

__all__ = [
    "CBOR_LABELS",
    "CONTENT_TYPES",
    "UNIT_MAP",
    "SenmlWire",
    "encode_cbor",
    "encode_json",
    "senml_pack",
    "senml_value",
]

#: MQTT 5 content type per payload format (RFC 8428 §12.3.1, §12.3.3).
CONTENT_TYPES = {"senml": "application/senml+json", "senml-cbor": "application/senml+cbor"}

#: CBOR map keys of the RFC 8428 labels (§6, Table 4); extension labels stay text.
CBOR_LABELS: dict[str, int] = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
}

#: Extension label: the reading's seq (as ``seq`` in wire contract v1). A regular field
#: (does not start with "b") that receivers may ignore (does not end with "_"): §4.4, §12.2.
SEQ_LABEL = "swm_seq"
#: Extension label: the reading's clock flag (``unsynchronized``), only when it has one.
CLOCK_LABEL = "swm_clock"

#: Suffix of the record of a bad point: ``{point}/error``, value: the reason.
ERROR_SUFFIX = "/error"
#: Name of the one record of a reading without any point (a pack needs a record, §11).
EMPTY_NAME = "_device/points"

#: Times below 2**28 s are relative to "now" in SenML, not Unix times (RFC 8428 §4.5.3).
ABSOLUTE_TIME_MIN = 2**28

# CBOR integers (major types 0 and 1) span -2**64 .. 2**64-1; beyond, only bignum tags,
# which are not a SenML number (RFC 8428 §11: numeric = number / decfrac).
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1

_ONE = Fraction(1)

#: Canonical unit (swm_edge.units) -> (SenML unit, factor): the SenML value is the
#: canonical value times the factor. Only primary units of the SenML Units registry (RFC
#: 8428 §12.1, RFC 8798 §2, IANA) go into "u": a SenML version 10 pack must not use the
#: secondary units of RFC 8798 §3 (m3/h, mm, kW, ...) there, nor anything unregistered. A
#: ``None`` unit: no "u" (dimensionless). NOT RECOMMENDED units (l, l/s, %) are not produced.
#: docs/integrations.md has this table; the tests check that the two agree.
UNIT_MAP: dict[str, tuple[str | None, Fraction]] = {
    # volume
    "m3": ("m3", _ONE),
    "L": ("m3", Fraction(1, 1000)),
    "mL": ("m3", Fraction(1, 10**6)),
    # flow
    "m3/s": ("m3/s", _ONE),
    "m3/min": ("m3/s", Fraction(1, 60)),
    "m3/h": ("m3/s", Fraction(1, 3600)),
    "m3/d": ("m3/s", Fraction(1, 86400)),
    "L/s": ("m3/s", Fraction(1, 1000)),
    "L/min": ("m3/s", Fraction(1, 60_000)),
    "L/h": ("m3/s", Fraction(1, 3_600_000)),
    "L/d": ("m3/s", Fraction(1, 86_400_000)),
    # velocity
    "m/s": ("m/s", _ONE),
    # pressure
    "Pa": ("Pa", _ONE),
    "kPa": ("Pa", Fraction(1000)),
    "MPa": ("Pa", Fraction(10**6)),
    "mbar": ("Pa", Fraction(100)),
    "bar": ("Pa", Fraction(10**5)),
    # length, level, depth
    "m": ("m", _ONE),
    "cm": ("m", Fraction(1, 100)),
    "mm": ("m", Fraction(1, 1000)),
    # temperature
    "Cel": ("Cel", _ONE),
    # water quality
    "mg/L": ("kg/m3", Fraction(1, 1000)),
    "ug/L": ("kg/m3", Fraction(1, 10**6)),
    "ppm": ("/", Fraction(1, 10**6)),
    "ppb": ("/", Fraction(1, 10**9)),
    "NTU": ("NTU", _ONE),
    # ISO 7027-1:2016: "numerical equivalence of the units NTU and FNU".
    "FNU": ("NTU", _ONE),
    "uS/cm": ("S/m", Fraction(1, 10**4)),
    "mS/cm": ("S/m", Fraction(1, 10)),
    "pH": ("pH", _ONE),
    "mV": ("V", Fraction(1, 1000)),
    # electrical
    "V": ("V", _ONE),
    "A": ("A", _ONE),
    "mA": ("A", Fraction(1, 1000)),
    "W": ("W", _ONE),
    "kW": ("W", Fraction(1000)),
    "kWh": ("J", Fraction(3_600_000)),
    "Hz": ("Hz", _ONE),
    "Ohm": ("Ohm", _ONE),
    # time
    "ms": ("s", Fraction(1, 1000)),
    "s": ("s", _ONE),
    "min": ("s", Fraction(60)),
    "h": ("s", Fraction(3600)),
    "d": ("s", Fraction(86400)),
    # ratios and counts: "/" is the ratio 0..1 ("%" in the registry is the same ratio, not
    # a percentage, and NOT RECOMMENDED); counts, states and factors go without a unit.
    "%": ("/", Fraction(1, 100)),
    "1": (None, _ONE),
}

# Characters a SenML name may contain (RFC 8428 §4.5.1), less ":" and "/", which the base
# name and the "/error" suffix use: point names never contain them (PointName), ids neither.
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9._-]")


def _name_part(text: str) -> str:
    # Config-validated ids and point names pass unchanged; this only guards against a
    # third-party driver that names its points outside the SDK's PointName pattern.
    return _NOT_NAME_CHAR.sub("_", text)


def _text(text: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8 (JSON and CBOR text both need it).
    return text.encode("utf-8", "replace").decode("utf-8")


def senml_value(value: int | float, unit: str | None) -> tuple[str | None, int | float] | None:
    """A number and its canonical unit as SenML has them: ``(u, v)``, or ``None`` when the
    value cannot be carried (not finite, or out of range once converted).

    The conversion is exact and rounds once: an integer stays an integer when the result
    is one (and fits a CBOR integer), otherwise the result is the double nearest to the
    exact product. A unit that is not canonical (a third-party driver bypassing the SDK's
    Unit type) is left out and the value passed unchanged.
    """
    u, factor = UNIT_MAP.get(unit, (None, _ONE)) if unit is not None else (None, _ONE)
    try:
        if isinstance(value, int):
            exact = value * factor
            if exact.denominator == 1 and _INT_MIN <= exact.numerator <= _INT_MAX:
                return u, exact.numerator
            result = float(exact)
        else:
            result = value if factor == 1 else float(Fraction(value) * factor)
    except (OverflowError, ValueError):  # huge int, or NaN/inf into Fraction
        return None
    if not math.isfinite(result):
        return None
    return u, result


def _value_fields(pv: PointValue) -> dict[str, Any] | None:
    """The unit and value fields of a good point, or ``None`` if SenML cannot carry it."""
    value: object = pv.value
    if isinstance(value, bool):
        return {"vb": value}
    if isinstance(value, int | float):
        converted = senml_value(value, pv.unit)
        if converted is None:
            return None
        u, v = converted
        return {"v": v} if u is None else {"u": u, "v": v}
    if isinstance(value, str):
        return {"vs": _text(value)}
    if isinstance(value, bytes | bytearray):
        return {"vd": bytes(value)}
    return None  # None, or a type no driver should produce


def senml_pack(gateway_id: str, seq: int, reading: Reading) -> list[dict[str, Any]]:
    """The SenML records of one reading, with the JSON labels (``vd`` still bytes).

    A good value SenML cannot carry (``None``, NaN, infinite, or beyond a double once
    converted: only a driver bug makes one) is published like a bad point with the reason
    ``driver-error``.
    """
    common: dict[str, Any] = {SEQ_LABEL: seq}
    if reading.clock is not None:
        common[CLOCK_LABEL] = _text(reading.clock)
    records: list[dict[str, Any]] = []
    points: Mapping[str, PointValue] = reading.points
    for name, pv in points.items():
        fields = _value_fields(pv) if pv.quality is Quality.GOOD else None
        if fields is None:
            reason = pv.error if pv.quality is Quality.BAD and pv.error else "driver-error"
            record = {"n": _name_part(name) + ERROR_SUFFIX, "vs": _text(reason)}
        else:
            record = {"n": _name_part(name), **fields}
        records.append({**record, **common})
    if not records:
        records.append({"n": EMPTY_NAME, "u": "count", "v": 0, **common})
    base: dict[str, Any] = {"bn": f"{_name_part(gateway_id)}/{_name_part(reading.device_id)}/"}
    ts = reading.ts
    if math.isfinite(ts) and ts >= ABSOLUTE_TIME_MIN:
        base["bt"] = ts
    records[0] = {**base, **records[0]}
    return records


def encode_json(pack: list[dict[str, Any]]) -> bytes:
    """``application/senml+json``: ``vd`` as base64url without padding (RFC 8428 §4.3)."""
    out = [
        {
            k: base64.urlsafe_b64encode(v).rstrip(b"=").decode() if k == "vd" else v
            for k, v in r.items()
        }
        for r in pack
    ]
    # allow_nan=False: senml_pack never lets a non-finite number through; if it ever did,
    # failing beats publishing what strict JSON parsers reject.
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def encode_cbor(pack: list[dict[str, Any]]) -> bytes:
    """``application/senml+cbor``: integer keys for the RFC's labels (RFC 8428 §6), text
    keys for the extensions; canonical CBOR, so each float takes the shortest of the half,
    single and double encodings that keeps its exact value."""
    out = [{CBOR_LABELS.get(k, k): v for k, v in r.items()} for r in pack]
    return cbor2.dumps(out, canonical=True)


class SenmlWire(StatusWire):
    """SenML Packs (``payload: senml`` or ``senml-cbor``), one per reading, plus swm-edge's
    retained status topic."""

    def __init__(self, settings: BrokerSettings) -> None:
        super().__init__(settings)
        if settings.payload not in CONTENT_TYPES:
            raise ValueError(
                f"SenmlWire needs payload senml or senml-cbor, not {settings.payload!r}"
            )
        self.cbor = settings.payload == "senml-cbor"
        self.suffix = settings.payload
        self.content_type = CONTENT_TYPES[settings.payload]

    def payload(self, seq: int, reading: Reading) -> bytes:
        pack = senml_pack(self.settings.gateway_id, seq, reading)
        return encode_cbor(pack) if self.cbor else encode_json(pack)
