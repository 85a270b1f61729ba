"""Wire contract v1 encoding (docs/wire-contract.md)."""

from __future__ import annotations

import json

from swm_edge.model import PointValue, Reading
from swm_edge.publish.encoders.json_v1 import encode, iso_ms


def test_payload_matches_the_documented_example() -> None:
    ts = 1795406410.012  # 2026-11-23T04:00:10.012Z
    reading = Reading(
        "flow-1",
        ts,
        {
            "flow_rate": PointValue.good(12.5, "m3/h"),
            "totalizer": PointValue.bad("timeout", "m3"),
            "pump_on": PointValue.good(True),
            "count": PointValue.good(7),
        },
    )
    doc = json.loads(encode("gw-lima-0001", 42, reading))
    assert doc == {
        "gateway": "gw-lima-0001",
        "device": "flow-1",
        "seq": 42,
        "ts": "2026-11-23T04:00:10.012Z",
        "readings": {
            "flow_rate": {"value": 12.5, "unit": "m3/h", "quality": "good"},
            "totalizer": {"value": None, "unit": "m3", "quality": "bad", "error": "timeout"},
            "pump_on": {"value": True, "quality": "good"},
            "count": {"value": 7, "quality": "good"},
        },
    }
    assert isinstance(doc["readings"]["count"]["value"], int)


def test_iso_ms_is_utc_with_millis() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1795406410.5) == "2026-11-23T04:00:10.500Z"


def test_clock_flag_only_when_set() -> None:
    """``clock`` is additive: absent (and the payload byte for byte as before) when the clock
    was trusted, at the top level after ``ts`` when the reading was flagged."""
    points = {"flow_rate": PointValue.good(12.4, "m3/h")}
    trusted = Reading("flow-1", 1795406410.012, points)
    payload = encode("gw-lima-0001", 42, trusted)
    assert payload == (
        b'{"gateway":"gw-lima-0001","device":"flow-1","seq":42,'
        b'"ts":"2026-11-23T04:00:10.012Z",'
        b'"readings":{"flow_rate":{"value":12.4,"unit":"m3/h","quality":"good"}}}'
    )
    assert "clock" not in json.loads(payload)
    assert encode("gw-lima-0001", 42, Reading("flow-1", 1795406410.012, points, None)) == payload

    flagged = Reading("flow-1", 192.004, points, "unsynchronized")
    doc = json.loads(encode("gw-lima-0001", 43, flagged))
    assert doc == {
        "gateway": "gw-lima-0001",
        "device": "flow-1",
        "seq": 43,
        "ts": "1970-01-01T00:03:12.004Z",
        "clock": "unsynchronized",
        "readings": {"flow_rate": {"value": 12.4, "unit": "m3/h", "quality": "good"}},
    }
    assert list(doc) == ["gateway", "device", "seq", "ts", "clock", "readings"]
