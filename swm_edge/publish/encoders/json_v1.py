"""Wire contract v1 (docs/wire-contract.md): one JSON message per device poll, or, with
``mqtt.batch``, several polls of one device in one ``batch`` message."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from swm_edge.model import Quality, Reading

# allow_nan=False: a NaN here would be a driver bug; failing loudly beats sending a payload
# that strict JSON parsers at the backend reject. One encoder for every call: json.dumps
# with non-default options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def iso_ms(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a ``Z``, e.g. ``2026-11-23T04:00:10.012Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readings_doc(reading: Reading) -> dict[str, dict[str, Any]]:
    """The ``readings`` object of the v1 payload: one entry per point."""
    readings: dict[str, dict[str, Any]] = {}
    for name, pv in reading.points.items():
        item: dict[str, Any] = {"value": pv.value}
        if pv.unit is not None:
            item["unit"] = pv.unit
        item["quality"] = str(pv.quality)
        if pv.quality is Quality.BAD:
            item["value"] = None
            item["error"] = pv.error or "driver-error"
        readings[name] = item
    return readings


def _poll_doc(seq: int, reading: Reading) -> dict[str, Any]:
    doc: dict[str, Any] = {"seq": seq, "ts": iso_ms(reading.ts)}
    if reading.clock is not None:
        doc["clock"] = reading.clock
    doc["readings"] = readings_doc(reading)
    return doc


def encode(gateway_id: str, seq: int, reading: Reading) -> bytes:
    """The v1 JSON payload of one device poll.

    ``clock`` (e.g. ``"unsynchronized"``) is there only when the reading carries a clock
    flag: absent means the gateway trusted its clock, and payloads of trusted readings stay
    byte for byte what they were before the field existed.
    """
    doc = {"gateway": gateway_id, "device": reading.device_id, **_poll_doc(seq, reading)}
    return _ENCODER.encode(doc).encode()


def encode_entry(seq: int, reading: Reading) -> bytes:
    """One poll as an entry of a ``batch`` message (:func:`encode_batch`)."""
    return _ENCODER.encode(_poll_doc(seq, reading)).encode()


def encode_batch(gateway_id: str, device_id: str, entries: Sequence[bytes]) -> bytes:
    """The v1 ``batch`` payload: several polls of one device, entries from
    :func:`encode_entry`, in seq order."""
    head = _ENCODER.encode({"gateway": gateway_id, "device": device_id})
    return b"".join((head[:-1].encode(), b',"batch":[', b",".join(entries), b"]}"))
