"""Delivery from the real SQLite buffer to a real mosquitto: acked delete, outages, status, TLS."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from swm_edge.buffer import Buffer
from swm_edge.model import PointValue, Reading
from swm_edge.publish.mqtt import BrokerSettings, Destination
from swm_edge.publish.wire import JsonWire
from swm_edge.spool import Spool
from swm_edge.testing import Mosquitto, MqttCollector


def settings(broker: Any, **kw: Any) -> BrokerSettings:
    base: dict[str, Any] = dict(
        host=broker.host,
        port=broker.port,
        client_id="gw-test",
        gateway_id="gw-1",
        reconnect_min=0.2,
        reconnect_max=1.0,
        inflight=8,
    )
    base.update(kw)
    return BrokerSettings(**base)


def reading(i: int, device: str = "dev-a") -> Reading:
    return Reading(device, 1_700_000_000 + i, {"level": PointValue.good(i * 0.5, "m")})


async def with_destination(
    tmp_path: Path,
    cfg: BrokerSettings,
    body: Callable[[Spool, Destination], Awaitable[None]],
) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spool = Spool(lambda _fresh: Buffer(tmp_path / "buf.sqlite", max_bytes=8 << 20))
    await spool.open()
    dest = Destination(cfg, spool, JsonWire(cfg))
    tasks = [asyncio.create_task(spool.run()), asyncio.create_task(dest.run())]
    try:
        await body(spool, dest)
    finally:
        await dest.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await spool.close()


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def telemetry(collector: MqttCollector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.messages("swm/gw-1/+/telemetry")]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_reading_is_delivered_then_deleted(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any, protocol: str
) -> None:
    sub = mqtt_collector(mosquitto, "swm/#")

    async def body(spool: Spool, dest: Destination) -> None:
        for i in range(200):
            await spool.put(reading(i, "dev-a" if i % 2 else "dev-b"))
        await asyncio.to_thread(sub.wait_for, lambda m: "telemetry" in m.topic, 15, count=200)
        await until(lambda: dest.stats.acked == 200)
        await dest.flush_acks()
        assert (await spool.stats()).depth == 0

    asyncio.run(with_destination(tmp_path, settings(mosquitto, protocol=protocol), body))
    docs = telemetry(sub)
    assert [d["seq"] for d in docs] == list(range(1, 201))
    # mosquitto logs the protocol of each client: p5 = MQTT 5, p2 = MQTT 3.1.1
    assert f"as gw-test (p{'5' if protocol == '5' else '2'}," in mosquitto.log_text()
    for d in docs:
        i = d["seq"] - 1
        assert d["device"] == ("dev-a" if i % 2 else "dev-b")
        assert d["readings"]["level"] == {"value": i * 0.5, "unit": "m", "quality": "good"}
    status = [m for m in sub.messages("swm/gw-1/status")]
    assert status[0].json()["state"] == "online" and status[0].json()["gateway"] == "gw-1"
    assert status[-1].json() == {"state": "offline", "gateway": "gw-1"}


def test_broker_outage_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any
) -> None:
    sub = mqtt_collector(mosquitto, "swm/gw-1/+/telemetry")

    async def body(spool: Spool, dest: Destination) -> None:
        for i in range(50):
            await spool.put(reading(i))
        await until(lambda: dest.stats.acked == 50)
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: not dest.stats.connected)
        for i in range(50, 150):  # polling goes on into the buffer
            await spool.put(reading(i))
        await asyncio.sleep(1.0)
        await dest.flush_acks()
        assert (await spool.stats()).depth == 100
        await asyncio.to_thread(mosquitto.start)
        await asyncio.to_thread(sub.wait_subscribed, 2, 15)
        await until(lambda: dest.stats.acked >= 150, timeout=30)

    # The agent's first retry comes after >= 4 s, so the (non-persistent) test subscriber is
    # back before the backlog is sent: the broker keeps nothing for absent subscribers.
    asyncio.run(
        with_destination(tmp_path, settings(mosquitto, reconnect_min=4.0, reconnect_max=8.0), body)
    )
    seqs = sorted({d["seq"] for d in telemetry(sub)})
    assert seqs == list(range(1, 151))
    # oldest first: the backlog arrives in seq order
    after = [d["seq"] for d in telemetry(sub) if d["seq"] > 50]
    assert after == sorted(after)


def test_restart_does_not_resend_acked_readings(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any
) -> None:
    sub = mqtt_collector(mosquitto, "swm/gw-1/+/telemetry")

    async def first(spool: Spool, dest: Destination) -> None:
        for i in range(30):
            await spool.put(reading(i))
        await until(lambda: dest.stats.acked == 30)

    async def second(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(99))
        await until(lambda: dest.stats.acked == 1)

    asyncio.run(with_destination(tmp_path, settings(mosquitto), first))
    asyncio.run(with_destination(tmp_path, settings(mosquitto), second))
    seqs = [d["seq"] for d in telemetry(sub)]
    assert seqs == list(range(1, 32))  # seq continues after the restart, nothing re-sent


def test_inflight_window_is_respected(tmp_path: Path, mosquitto: Mosquitto) -> None:
    peak = 0

    async def body(spool: Spool, dest: Destination) -> None:
        nonlocal peak
        for i in range(500):
            await spool.put(reading(i))
        deadline = time.monotonic() + 20
        while dest.stats.acked < 500 and time.monotonic() < deadline:
            peak = max(peak, len(dest._inflight))
            await asyncio.sleep(0)
        assert dest.stats.acked == 500

    asyncio.run(with_destination(tmp_path, settings(mosquitto, inflight=4), body))
    assert 1 <= peak <= 4


def test_tls_with_verification(
    tmp_path: Path, mosquitto_factory: Any, tls_files: Any, mqtt_collector: Any
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    tls_port = broker.tls_port
    sub = mqtt_collector(broker, "swm/gw-1/+/telemetry")

    async def good(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(1))
        await until(lambda: dest.stats.acked == 1)

    cfg = settings(broker, port=tls_port, tls=True, ca_file=str(tls_files.ca_cert))
    asyncio.run(with_destination(tmp_path / "ok", cfg, good))
    assert [d["seq"] for d in telemetry(sub)] == [1]

    # A CA that did not sign the broker's certificate: no connection, a clear error, data kept.
    from swm_edge.testing import make_test_certificates

    other = make_test_certificates(tmp_path / "other-ca")

    async def refused(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(2))
        await until(lambda: dest.stats.last_error is not None)
        await asyncio.sleep(0.5)
        assert not dest.stats.connected
        assert "certificate verify failed" in (dest.stats.last_error or "").lower()
        assert (await spool.stats()).depth == 1

    cfg = settings(broker, port=tls_port, tls=True, ca_file=str(other.ca_cert))
    asyncio.run(with_destination(tmp_path / "bad", cfg, refused))


def test_password_never_logged_and_auth_works(
    tmp_path: Path, mosquitto_factory: Any, mqtt_collector: Any, caplog: Any
) -> None:
    broker = mosquitto_factory(users={"gw": "s3cret-pass"}, allow_anonymous=False)
    sub = mqtt_collector(broker, "swm/gw-1/+/telemetry", username="gw", password="s3cret-pass")

    async def ok(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(1))
        await until(lambda: dest.stats.acked == 1)

    caplog.set_level("DEBUG")
    cfg = settings(broker, username="gw", password="s3cret-pass")
    assert "s3cret" not in repr(cfg)
    asyncio.run(with_destination(tmp_path / "ok", cfg, ok))
    assert len(telemetry(sub)) == 1

    async def refused(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(2))
        await until(lambda: dest.stats.last_error is not None)
        assert "refused" in (dest.stats.last_error or "")

    bad = settings(broker, username="gw", password="wrong-pass")
    asyncio.run(with_destination(tmp_path / "bad", bad, refused))
    assert "s3cret" not in caplog.text and "wrong-pass" not in caplog.text
    assert json.dumps([r.getMessage() for r in caplog.records]).count("refused") >= 1


def test_a_reading_the_format_cannot_carry_is_skipped_not_blocking(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any
) -> None:
    sub = mqtt_collector(mosquitto, "swm/#")

    async def body(spool: Spool, dest: Destination) -> None:
        await spool.put(reading(0, "dev-a"))
        # a NaN time: json_v1 refuses it (strict JSON backends would choke on it)
        await spool.put(Reading("dev-a", math.nan, {"level": PointValue.good(1.0, "m")}))
        await spool.put(reading(2, "dev-a"))
        await asyncio.to_thread(sub.wait_for, lambda m: "telemetry" in m.topic, 15, count=2)
        await until(lambda: dest.stats.acked == 2 and dest.stats.unencodable == 1)
        await dest.flush_acks()
        assert (await spool.stats()).depth == 0

    asyncio.run(with_destination(tmp_path, settings(mosquitto), body))
    assert [d["seq"] for d in telemetry(sub)] == [1, 3]


def test_a_backlog_goes_out_in_batches_per_device(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Any
) -> None:
    """``batch: 10``: a 300-row backlog of three devices arrives as batch messages of one
    device each, every seq exactly once, each device in seq order; live readings too."""
    sub = mqtt_collector(mosquitto, "swm/gw-1/+/telemetry")
    devices = ("dev-a", "dev-b", "dev-c")
    with Buffer(tmp_path / "buf.sqlite", max_bytes=8 << 20) as buffer:
        buffer.append([reading(i, devices[i % 3]) for i in range(300)])

    async def body(spool: Spool, dest: Destination) -> None:
        await until(lambda: dest.stats.acked == 300)
        await spool.put(reading(300, "dev-b"))  # live, caught up: a plain message
        await until(lambda: dest.stats.acked == 301)
        await dest.flush_acks()
        assert (await spool.stats()).depth == 0

    asyncio.run(with_destination(tmp_path, settings(mosquitto, batch=10, inflight=4), body))
    docs = telemetry(sub)
    batches = [d for d in docs if "batch" in d]
    assert len(batches) >= 27, len(batches)  # 300 rows, up to 10 a message
    assert all(1 < len(d["batch"]) <= 10 for d in batches)
    entries = [(d["device"], e) for d in batches for e in d["batch"]]
    plain = [(d["device"], d) for d in docs if "batch" not in d]
    seqs = sorted(e["seq"] for _, e in entries + plain)
    assert seqs == list(range(1, 302))
    for device, e in entries + plain:
        i = e["seq"] - 1
        assert device == (devices[i % 3] if i < 300 else "dev-b")
        assert e["readings"]["level"] == {"value": i * 0.5, "unit": "m", "quality": "good"}
    for device in devices:
        mine = [e["seq"] for d, e in entries + plain if d == device]
        assert mine == sorted(mine)  # each device's readings in seq order
    assert [d["seq"] for _, d in plain] == [301]
