"""Tests of the test kit itself (swm_edge.testing, swm_edge.broker) against real brokers."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from swm_edge.broker import BrokerHandle, amqtt_available, start_demo_broker
from swm_edge.testing import (
    BrokerStartError,
    CollectorFactory,
    Message,
    Mosquitto,
    MqttCollector,
    TlsFiles,
    free_port,
    make_test_certificates,
    mqtt_publish,
)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_free_port_is_bindable(free_tcp_port: int) -> None:
    for port in (free_port(), free_tcp_port):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_start_stop_restart_on_same_port(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    port = mosquitto.port
    collector = mqtt_collector(mosquitto, "swm/#")
    mqtt_publish(mosquitto.host, port, "swm/before", b"1")
    [msg] = collector.wait_for(1, timeout=5)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("swm/before", b"1", 1, False)

    mosquitto.stop()
    assert not mosquitto.running
    assert not _accepts(mosquitto.host, port)
    with pytest.raises(ConnectionRefusedError):
        mqtt_publish(mosquitto.host, port, "swm/while-down", b"x")
    mosquitto.stop()  # idempotent

    subscriptions = collector.subscribe_count
    mosquitto.start()
    assert mosquitto.running and mosquitto.port == port
    # The existing collector reconnects and subscribes again on its own.
    collector.wait_subscribed(subscriptions + 1, timeout=10)
    mqtt_publish(mosquitto.host, port, "swm/after", b"2")
    assert [m.topic for m in collector.wait_for(2, timeout=5)] == ["swm/before", "swm/after"]

    pid = mosquitto.pid
    mosquitto.restart()
    assert mosquitto.pid != pid and mosquitto.port == port
    fresh = mqtt_collector(mosquitto, "swm/#")
    mqtt_publish(mosquitto.host, port, "swm/after-restart", b"3")
    assert fresh.wait_for(1, timeout=5)[0].payload == b"3"
    assert "mosquitto version" in mosquitto.log_text()


def test_collector_wait_for_count_predicate_and_filters(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    collector = mqtt_collector(mosquitto, "site/+/meter/#")
    mqtt_publish(mosquitto.host, mosquitto.port, "other/topic", b"ignored")
    for i in range(3):
        mqtt_publish(mosquitto.host, mosquitto.port, f"site/a/meter/{i}", json.dumps({"v": i}))
    mqtt_publish(mosquitto.host, mosquitto.port, "site/b/meter/9", json.dumps({"v": 9}))

    assert len(collector.wait_for(4, timeout=5)) == 4
    matching = collector.wait_for(lambda m: m.topic.startswith("site/a/"), timeout=5, count=3)
    assert [m.json()["v"] for m in matching] == [0, 1, 2]
    assert collector.json_messages("site/b/#") == [{"v": 9}]
    assert [m.topic for m in collector.messages("site/+/meter/1")] == ["site/a/meter/1"]
    assert collector.json_messages() == [{"v": 0}, {"v": 1}, {"v": 2}, {"v": 9}]
    first = collector.messages()[0]
    assert first.received_at == pytest.approx(time.time(), abs=30)
    assert first.text == '{"v": 0}'

    collector.clear()
    assert collector.messages() == []


def test_collector_wait_for_times_out_with_what_it_got(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    collector = mqtt_collector(mosquitto, "t/#")
    mqtt_publish(mosquitto.host, mosquitto.port, "t/one", b"only-one")
    collector.wait_for(1, timeout=5)

    started = time.monotonic()
    with pytest.raises(TimeoutError) as excinfo:
        collector.wait_for(2, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 2
    assert "t/one" in str(excinfo.value) and "only-one" in str(excinfo.value)

    with pytest.raises(TimeoutError, match="1 received"):
        collector.wait_for(lambda m: m.topic == "t/never", timeout=0.2)


def test_collector_wait_for_wakes_up_on_arrival(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    collector = mqtt_collector(mosquitto, "late/#")
    timer = threading.Timer(
        0.3, mqtt_publish, args=(mosquitto.host, mosquitto.port, "late/x", b"ok")
    )
    timer.start()
    try:
        started = time.monotonic()
        [msg] = collector.wait_for(lambda m: m.payload == b"ok", timeout=10)
        assert msg.topic == "late/x"
        assert time.monotonic() - started < 5
    finally:
        timer.join()


def test_json_messages_reports_bad_payload(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    collector = mqtt_collector(mosquitto, "j/#")
    mqtt_publish(mosquitto.host, mosquitto.port, "j/bad", b"not json")
    collector.wait_for(1, timeout=5)
    with pytest.raises(ValueError, match="j/bad"):
        collector.json_messages()


def test_retained_message_seen_by_late_subscriber(
    mosquitto: Mosquitto, mqtt_collector: CollectorFactory
) -> None:
    mqtt_publish(mosquitto.host, mosquitto.port, "state/gw1", b"online", retain=True)
    late = mqtt_collector(mosquitto, "state/#")
    [msg] = late.wait_for(1, timeout=5)
    assert (msg.topic, msg.payload, msg.retain) == ("state/gw1", b"online", True)

    # The same topic published live reaches an existing subscriber without the retain flag.
    mqtt_publish(mosquitto.host, mosquitto.port, "state/gw1", b"still-online", retain=True)
    live = late.wait_for(2, timeout=5)[1]
    assert (live.payload, live.retain) == (b"still-online", False)


def test_password_file(
    mosquitto_factory: Callable[..., Mosquitto], mqtt_collector: CollectorFactory
) -> None:
    broker = mosquitto_factory(users={"agent": "s3cret:with$chars"}, allow_anonymous=False)
    collector = mqtt_collector(broker, "#", username="agent", password="s3cret:with$chars")
    mqtt_publish(
        broker.host, broker.port, "auth/ok", b"1", username="agent", password="s3cret:with$chars"
    )
    assert collector.wait_for(1, timeout=5)[0].topic == "auth/ok"

    with pytest.raises(ConnectionError, match="refused"):
        MqttCollector(broker.host, broker.port, username="agent", password="wrong")
    with pytest.raises(ConnectionError, match="refused"):
        mqtt_publish(broker.host, broker.port, "auth/anon", b"x")


def _tls_connect(port: int, ca: Path) -> None:
    """Connect a verifying paho client (TLS handshake happens inside connect())."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=str(ca))
    try:
        client.connect("127.0.0.1", port)
    finally:
        client.disconnect()


def test_tls_listener_with_verifying_client(
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: CollectorFactory,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    assert broker.tls_port is not None and broker.tls_port != broker.port

    _tls_connect(broker.tls_port, tls_files.ca_cert)
    over_tls = MqttCollector(broker.host, broker.tls_port, "tls/#", tls_ca=tls_files.ca_cert)
    try:
        plain = mqtt_collector(broker, "tls/#")
        mqtt_publish(broker.host, broker.tls_port, "tls/a", b"secret", tls_ca=tls_files.ca_cert)
        assert over_tls.wait_for(1, timeout=5)[0].payload == b"secret"
        # Both listeners share one broker: a TLS publish reaches a plain subscriber too.
        assert plain.wait_for(1, timeout=5)[0].payload == b"secret"
    finally:
        over_tls.close()

    other_ca = make_test_certificates(tmp_path / "other").ca_cert
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_connect(broker.tls_port, other_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        MqttCollector(broker.host, broker.tls_port, tls_ca=other_ca)
    # The TLS listener drops a client that speaks plain MQTT.
    with pytest.raises(ConnectionError):
        mqtt_publish(broker.host, broker.tls_port, "tls/plain", b"x", timeout=1)


def test_tls_verification_checks_the_host_name(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    wrong_name = make_test_certificates(
        tmp_path / "wrong-name", hostnames=("gateway.invalid",), ip_addresses=("10.9.9.9",)
    )
    broker = mosquitto_factory(tls=wrong_name)
    assert broker.tls_port is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _tls_connect(broker.tls_port, wrong_name.ca_cert)


def test_start_fails_clearly_on_bad_config(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "bad", extra_config=["no_such_option 1"])
    with pytest.raises(BrokerStartError, match="no_such_option"):
        broker.start()
    assert not broker.running
    broker.close()
    assert (tmp_path / "bad").is_dir()  # a given workdir is kept for post-mortems


def test_start_fails_when_port_is_taken() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(BrokerStartError, match="already in use"):
            Mosquitto(holder.getsockname()[1]).start()


def test_context_manager_cleans_up() -> None:
    with Mosquitto() as broker:
        assert _accepts(broker.host, broker.port)
        workdir = broker.workdir
        assert broker.config_path.is_file()
    assert not broker.running
    assert not _accepts(broker.host, broker.port)
    assert not workdir.exists()


def _paho_qos1_round_trip(handle: BrokerHandle) -> Message:
    """Subscribe and publish at QoS 1 with plain paho clients; return what was received."""
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-sub")
    sub.on_connect = lambda c, *_: c.subscribe("demo/#", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append(message)
        got.set()

    sub.on_message = on_message
    sub.connect(handle.host, handle.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK"
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-pub")
        pub.connect(handle.host, handle.port)
        pub.loop_start()
        try:
            info = pub.publish("demo/meter1", b'{"flow": 1.5}', qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert got.wait(10), "message not delivered"
    finally:
        sub.disconnect()
        sub.loop_stop()
    m = received[0]
    return Message(m.topic, bytes(m.payload), m.qos, bool(m.retain), time.time(), time.monotonic())


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_demo_broker_round_trip(kind: str) -> None:
    if kind == "amqtt" and not amqtt_available():
        pytest.fail("amqtt is not installed: pip install 'swm-edge[demo]'")
    handle = start_demo_broker(kind=kind)  # type: ignore[arg-type]
    with handle:
        assert handle.kind == kind
        assert handle.host == "127.0.0.1"
        msg = _paho_qos1_round_trip(handle)
        assert (msg.topic, msg.payload, msg.qos) == ("demo/meter1", b'{"flow": 1.5}', 1)
    assert not _accepts(handle.host, handle.port)
    handle.stop()  # idempotent


def test_demo_broker_auto_prefers_mosquitto() -> None:
    with start_demo_broker() as handle:
        assert handle.kind == "mosquitto"
        assert _accepts(handle.host, handle.port)
