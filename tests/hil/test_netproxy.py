"""The fault-injecting TCP proxy (hil/netproxy.py) and its MQTT in-flight counter."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from swm_edge_hil.netproxy import MqttInflight, NetProxy

from swm_edge.testing import Mosquitto


# ---- MQTT packets ------------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(
    pid: int, qos: int = 1, payload: bytes = b"x", topic: str = "a/b", dup: bool = False
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode()
    if qos:
        body += struct.pack("!H", pid)
    body += payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes([first]) + varint(len(body)) + body


def ack(kind: int, pid: int, extra: bytes = b"") -> bytes:
    body = struct.pack("!H", pid) + extra
    flags = 0x02 if kind == 6 else 0
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


PINGREQ = b"\xc0\x00"


def feed_split(feed: object, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        feed(data[i : i + size])  # type: ignore[operator]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_counts_qos1_publishes_until_their_puback_across_any_split(size: int) -> None:
    m = MqttInflight()
    big = b"p" * 20000  # a 3-byte remaining length
    stream = PINGREQ + publish(1) + publish(2, payload=big) + publish(3, qos=0) + publish(4)
    feed_split(m.from_client, stream, size)
    assert m.outstanding == {(1 << 16) | 1, (1 << 16) | 2, (1 << 16) | 4}
    assert m.max_outstanding == 3 and m.publishes == 3
    feed_split(m.from_broker, ack(4, 2) + b"\xd0\x00" + ack(4, 1), size)
    assert m.outstanding == {(1 << 16) | 4}
    feed_split(m.from_client, publish(5), size)
    assert m.max_outstanding == 3
    feed_split(m.from_broker, ack(4, 4) + ack(4, 5, extra=b"\x10\x00"), size)  # MQTT 5 reason
    assert not m.outstanding and m.acks == 4 and m.malformed is None


def test_qos2_is_in_flight_until_pubcomp_and_a_dup_resend_counts_once() -> None:
    m = MqttInflight()
    m.from_client(publish(7, qos=2) + publish(7, qos=2, dup=True))
    assert m.max_outstanding == 1 and m.publishes == 2
    m.from_broker(ack(5, 7))  # PUBREC
    m.from_client(ack(6, 7))  # PUBREL
    assert m.outstanding
    m.from_broker(ack(7, 7))  # PUBCOMP
    assert not m.outstanding
    # a PUBACK for an id only in flight at QoS 2 does not release it
    m.from_client(publish(8, qos=2))
    m.from_broker(ack(4, 8))
    assert m.outstanding


def test_a_stream_that_is_not_mqtt_is_flagged_and_no_longer_followed() -> None:
    m = MqttInflight()
    m.from_client(b"\x30\xff\xff\xff\xff\x01")
    assert m.malformed is not None and "4 bytes" in m.malformed
    m.from_client(publish(1))
    assert m.publishes == 0
    short = MqttInflight()
    short.from_broker(b"\x40\x01\x00")  # a PUBACK without room for its id
    assert short.malformed is not None


def test_four_byte_remaining_length_is_skipped_without_keeping_the_body() -> None:
    m = MqttInflight()
    header = bytes([0x32]) + varint(2_100_000)
    m.from_client(header + struct.pack("!H", 1) + b"t" + struct.pack("!H", 9))
    for _ in range(2_100_000 // 65536):
        m.from_client(b"\x00" * 65536)
    m.from_client(b"\x00" * (2_100_000 - 5 - (2_100_000 // 65536) * 65536))
    m.from_client(publish(10))
    assert m.publishes == 2 and m.max_outstanding == 2 and m.malformed is None


# ---- the proxy -----------------------------------------------------------------------------
@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP echo server; its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(2)
    srv.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[NetProxy]:
    with NetProxy("127.0.0.1", echo) as p:
        yield p


def connect(proxy: NetProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        if not data:
            raise EOFError(out)
        out += data
    return out


def test_pass_forwards_both_ways(proxy: NetProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"
    assert len(proxy.connections) == 1


def test_blackhole_holds_everything_without_closing_then_lets_it_through(
    proxy: NetProxy,
) -> None:
    with connect(proxy) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        proxy.blackhole()
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)  # no data, and no FIN/RST either (that would return b"" / raise)
        s.settimeout(5)
        proxy.passthrough()
        assert recv_exactly(s, 4) == b"held"


def test_reset_closes_with_rst_and_refuse_refuses(proxy: NetProxy) -> None:
    s = connect(proxy)
    s.sendall(b"x")
    recv_exactly(s, 1)
    assert proxy.reset(refuse=True) == 1
    with pytest.raises(ConnectionResetError):
        s.recv(10)
        s.sendall(b"y")  # pragma: no cover - in case the RST is seen only on the next send
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    proxy.refuse(False)
    with connect(proxy) as s2:
        s2.sendall(b"z")
        assert recv_exactly(s2, 1) == b"z"
    assert proxy.resets == 1
    assert proxy.connections[0].how == "reset"


def test_delay_adds_latency_each_way(proxy: NetProxy) -> None:
    proxy.delay(0.2)
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        recv_exactly(s, 4)
        rtt = time.monotonic() - t0
    assert 0.4 <= rtt < 1.5


def test_throttle_caps_the_rate(proxy: NetProxy) -> None:
    proxy.throttle(20_000)
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(b"q" * 10_000)
        recv_exactly(s, 10_000)
        took = time.monotonic() - t0
    # 10 kB up at 20 kB/s, and back down at 20 kB/s (pipelined): about 0.5 s
    assert 0.4 <= took < 3
    proxy.passthrough()


def test_upstream_down_resets_the_client(echo: int) -> None:
    port = socket.create_server(("127.0.0.1", 0))
    dead = port.getsockname()[1]
    port.close()
    # the RST may already come during connect() on a fast machine
    with (
        NetProxy("127.0.0.1", dead) as p,
        pytest.raises((ConnectionResetError, EOFError)),
        connect(p) as s,
    ):
        s.sendall(b"x")
        recv_exactly(s, 1)


def test_counts_a_paho_clients_inflight_window_through_mosquitto(mosquitto: Mosquitto) -> None:
    with NetProxy(mosquitto.host, mosquitto.port) as p:
        p.delay(0.05)  # acks come late, so the client fills its window
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.max_inflight_messages_set(5)
        client.connect("127.0.0.1", p.port)
        client.loop_start()
        try:
            infos = [client.publish("t/x", b"%d" % i, qos=1) for i in range(40)]
            for info in infos:
                info.wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()
        assert p.publishes == 40
        assert p.max_inflight == 5
        assert p.malformed == []
