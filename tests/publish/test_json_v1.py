"""Wire contract v1 encoding (docs/wire-contract.md)."""

from __future__ import annotations

import json

from swm_edge.buffer import Row
from swm_edge.model import PointValue, Reading
from swm_edge.publish.encoders.json_v1 import encode, encode_entry, iso_ms
from swm_edge.publish.mqtt import BrokerSettings
from swm_edge.publish.wire import JsonWire


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


def _batch_rows(n: int, device: str = "flow-1") -> list[Row]:
    return [
        Row(
            100 + i,
            Reading(
                device,
                1795406410.0 + i,
                {"flow_rate": PointValue.good(12.5 + i, "m3/h"), "level": PointValue.bad("crc")},
                "unsynchronized" if i == 1 else None,
            ),
        )
        for i in range(n)
    ]


def test_a_batch_message_carries_each_poll_as_its_own_message_would() -> None:
    cfg = BrokerSettings(host="h", port=1883, client_id="c", gateway_id="gw-1", batch=10)
    wire = JsonWire(cfg)
    rows = _batch_rows(3)
    message, used = wire.encode_batch(rows, 64 * 1024)
    assert used == 3
    assert message.topic == "swm/gw-1/flow-1/telemetry" and message.qos == 1
    doc = json.loads(message.payload)
    assert list(doc) == ["gateway", "device", "batch"]
    assert doc["gateway"] == "gw-1" and doc["device"] == "flow-1"
    singles = [json.loads(encode("gw-1", r.seq, r.reading)) for r in rows]
    # each entry is the single message without gateway and device, fields in the same order
    assert doc["batch"] == [
        {k: v for k, v in s.items() if k not in ("gateway", "device")} for s in singles
    ]
    assert [e["seq"] for e in doc["batch"]] == [100, 101, 102]
    assert doc["batch"][1]["clock"] == "unsynchronized" and "clock" not in doc["batch"][0]


def test_a_batch_stops_at_its_byte_limit_and_one_poll_goes_out_plain() -> None:
    cfg = BrokerSettings(host="h", port=1883, client_id="c", gateway_id="gw-1", batch=10)
    wire = JsonWire(cfg)
    rows = _batch_rows(10)
    three = sum(len(encode_entry(r.seq, r.reading)) for r in rows[:3]) + 2  # and 2 commas
    message, used = wire.encode_batch(rows, three)
    assert used == 3 and len(message.payload) < three + 100
    assert [e["seq"] for e in json.loads(message.payload)["batch"]] == [100, 101, 102]
    # a limit smaller than one poll: that poll alone, as a plain v1 message
    message, used = wire.encode_batch(rows, 10)
    assert used == 1
    assert message.payload == encode("gw-1", 100, rows[0].reading)
