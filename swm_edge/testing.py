"""Test kit for swm-edge and for integrators: real brokers and an MQTT message collector.

Use it as a pytest plugin by putting ``pytest_plugins = ["swm_edge.testing"]`` in a
``conftest.py``; that provides the fixtures

* ``mosquitto`` -- a started :class:`Mosquitto` per test (stop/restart it freely),
* ``mosquitto_factory`` -- ``make(**Mosquitto options) -> started Mosquitto``,
* ``mqtt_collector`` -- ``make(broker, topic_filter="#", **options) -> MqttCollector``,
* ``free_tcp_port`` -- a free port on 127.0.0.1,
* ``tls_files`` -- a fresh test CA plus a server certificate for 127.0.0.1/localhost.

Everything they return is a plain class or function of this module that works without
pytest as well (pytest itself is only needed for the fixtures). The broker process classes
live in :mod:`swm_edge.broker` and are re-exported here. :func:`make_test_certificates`
needs the ``cryptography`` package (a development dependency, not a runtime one).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from swm_edge.broker import (
    BrokerError,
    BrokerNotFoundError,
    BrokerStartError,
    Mosquitto,
    TlsFiles,
    find_mosquitto,
    free_port,
)

__all__ = [
    "BrokerAddress",
    "BrokerError",
    "BrokerNotFoundError",
    "BrokerStartError",
    "CollectorFactory",
    "Message",
    "Mosquitto",
    "MqttCollector",
    "TlsFiles",
    "find_mosquitto",
    "free_port",
    "make_test_certificates",
    "mqtt_publish",
]

_DESCRIBE_LIMIT = 10
_RECONNECT_INTERVAL = 0.2


class BrokerAddress(Protocol):
    """Anything with a ``host`` and a ``port``: :class:`Mosquitto`, ``BrokerHandle``..."""

    @property
    def host(self) -> str:
        """Address clients connect to."""
        ...

    @property
    def port(self) -> int:
        """Plain MQTT port."""
        ...


@dataclass(frozen=True)
class Message:
    """One MQTT message as a subscriber received it.

    Attributes:
        topic: topic name the message was published to.
        payload: raw payload bytes.
        qos: QoS of the delivery (the minimum of publish and subscription QoS).
        retain: True when the broker delivered it from its retained store.
        received_at: wall-clock receive time (``time.time()``), comparable with timestamps
            inside payloads.
        received_monotonic: ``time.monotonic()`` at receipt, for latency measurements.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at: float
    received_monotonic: float

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON.

        Raises:
            ValueError: the payload is not valid JSON (the message names the topic).
        """
        try:
            return json.loads(self.payload)
        except ValueError as exc:
            raise ValueError(
                f"payload on {self.topic!r} is not JSON: {self.payload[:80]!r}"
            ) from exc


def _describe(messages: Sequence[Message]) -> str:
    shown = [
        f"  {m.topic} qos={m.qos} retain={m.retain} {m.payload[:80]!r}"
        for m in messages[:_DESCRIBE_LIMIT]
    ]
    if len(messages) > _DESCRIBE_LIMIT:
        shown.append(f"  ... and {len(messages) - _DESCRIBE_LIMIT} more")
    return "\n".join(shown) if shown else "  (nothing)"


def _new_client(
    client_id: str | None,
    username: str | None,
    password: str | None,
    tls_ca: str | Path | None,
    protocol: MQTTProtocolVersion,
    persistent: bool = False,
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"swm-test-{secrets.token_hex(4)}",
        # MQTT 5 has no clean_session flag (clean_start is a connect option instead).
        clean_session=(not persistent) if protocol != MQTTProtocolVersion.MQTTv5 else None,
        protocol=protocol,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls_ca is not None:
        # Verifies the broker's chain against this CA and its name against the host we dial.
        client.tls_set(ca_certs=str(tls_ca))
    return client


class MqttCollector:
    """Subscribes to a topic filter and records every message it receives, thread-safely.

    The constructor returns only once the subscription is acknowledged, so anything
    published afterwards is seen. When the broker goes away, the collector tries to reconnect
    every 0.2 s and subscribes again; :meth:`wait_subscribed` tells when that happened.

    Args:
        host: broker address.
        port: broker port (the TLS port when ``tls_ca`` is given).
        topic_filter: MQTT topic filter to subscribe to (wildcards allowed).
        qos: subscription QoS (1 by default, so the broker acknowledges deliveries).
        client_id: MQTT client id; a random ``swm-test-...`` one if None.
        username: optional username (with ``password``).
        password: optional password.
        tls_ca: CA file to verify the broker's TLS certificate with; enables TLS.
        protocol: MQTT protocol version (3.1.1 by default; amqtt speaks only 3.1.1).
        persistent: keep the session at the broker (MQTT 3.1.1 clean_session=False), so
            QoS 1 messages published while the collector is away are delivered when it
            is back, like a backend's subscriber; needs a fixed ``client_id``.
        connect_timeout: seconds to wait for CONNACK and SUBACK.

    Raises:
        OSError: the TCP connection or the TLS handshake failed (``ssl.SSLError`` is one).
        ConnectionError: the broker refused the connection or the subscription.
        TimeoutError: no CONNACK/SUBACK within ``connect_timeout``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str = "#",
        *,
        qos: int = 1,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | Path | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        connect_timeout: float = 10.0,
        persistent: bool = False,
    ) -> None:
        self._topic_filter = topic_filter
        self._qos = qos
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._subscribe_count = 0
        self._error: str | None = None
        self._stopping = threading.Event()
        self._client = _new_client(client_id, username, password, tls_ca, protocol, persistent)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        # Our own network thread instead of paho's loop_start(): paho's reconnect back-off
        # sleeps in 1 s slices, which would slow down every broker restart and close().
        self._thread = threading.Thread(
            target=self._network_loop, name=f"MqttCollector({topic_filter})", daemon=True
        )
        self._thread.start()
        try:
            self.wait_subscribed(timeout=connect_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def topic_filter(self) -> str:
        """The subscribed topic filter."""
        return self._topic_filter

    @property
    def subscribe_count(self) -> int:
        """How many times the subscription was acknowledged (1 + successful resubscriptions)."""
        with self._cond:
            return self._subscribe_count

    def _network_loop(self) -> None:
        client = self._client
        while not self._stopping.is_set():
            if client.loop(timeout=0.05) == mqtt.MQTT_ERR_SUCCESS:
                continue
            # Connection lost, refused or never re-established: retry until closed.
            if self._stopping.wait(_RECONNECT_INTERVAL):
                break
            with contextlib.suppress(OSError):  # broker still down (ssl.SSLError included)
                client.reconnect()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            with self._cond:
                self._error = f"broker refused the connection: {reason_code}"
                self._cond.notify_all()
            return
        with self._cond:
            self._error = None  # a refusal before a broker restart no longer applies
        # Clean sessions lose their subscriptions, so subscribe on every (re)connect.
        client.subscribe(self._topic_filter, qos=self._qos)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if any(rc.is_failure for rc in reason_codes):
                self._error = f"broker refused the subscription to {self._topic_filter!r}"
            else:
                self._subscribe_count += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            received_at=time.time(),
            received_monotonic=time.monotonic(),
        )
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def wait_subscribed(self, times: int = 1, timeout: float = 10.0) -> None:
        """Wait until the subscription has been acknowledged ``times`` times in total.

        After a broker restart, ``wait_subscribed(collector.subscribe_count + 1)`` (with the
        count read before the restart) waits for the collector to be back.

        Raises:
            ConnectionError: the broker refused the connection or subscription.
            TimeoutError: not subscribed in time.
        """
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._error is not None or self._subscribe_count >= times, timeout
            )
            if self._error is not None:
                raise ConnectionError(self._error)
            if not done:
                raise TimeoutError(
                    f"subscription to {self._topic_filter!r} acknowledged "
                    f"{self._subscribe_count} time(s), wanted {times}, within {timeout:g} s"
                )

    def wait_for(
        self,
        condition: int | Callable[[Message], bool] = 1,
        timeout: float = 10.0,
        *,
        count: int = 1,
    ) -> list[Message]:
        """Block until enough messages arrived and return them.

        Args:
            condition: an int N waits for at least N messages in total and returns all
                messages received so far; a predicate waits until at least ``count``
                messages satisfy it and returns those messages.
            timeout: seconds to wait at most.
            count: with a predicate, how many matching messages to wait for.

        Raises:
            TimeoutError: not satisfied in time; the message lists what was received.
        """
        if isinstance(condition, int):
            needed = condition

            def select() -> list[Message]:
                return list(self._messages)

        else:
            needed = count
            predicate = condition

            def select() -> list[Message]:
                return [m for m in self._messages if predicate(m)]

        with self._cond:
            selected: list[Message] = []

            def satisfied() -> bool:
                nonlocal selected
                selected = select()
                return len(selected) >= needed

            if self._cond.wait_for(satisfied, timeout):
                return selected
            got = list(self._messages)
        what = f"{needed} message(s)" if isinstance(condition, int) else f"{needed} matching"
        raise TimeoutError(
            f"timed out after {timeout:g} s waiting for {what} on {self._topic_filter!r}; "
            f"{len(selected)} qualified, {len(got)} received:\n{_describe(got)}"
        )

    def messages(self, topic_filter: str | None = None) -> list[Message]:
        """A copy of the messages received so far, optionally only those matching a filter."""
        with self._cond:
            got = list(self._messages)
        if topic_filter is None:
            return got
        return [m for m in got if topic_matches_sub(topic_filter, m.topic)]

    def json_messages(self, topic_filter: str | None = None) -> list[Any]:
        """The JSON-decoded payloads of :meth:`messages`, in order of receipt.

        Raises:
            ValueError: a payload is not valid JSON.
        """
        return [m.json() for m in self.messages(topic_filter)]

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._cond:
            self._messages.clear()

    def close(self) -> None:
        """Disconnect and stop the network thread. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join()
        # With no network thread running, paho writes the DISCONNECT packet right here.
        self._client.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def mqtt_publish(
    host: str,
    port: int,
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    username: str | None = None,
    password: str | None = None,
    tls_ca: str | Path | None = None,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    timeout: float = 10.0,
) -> None:
    """Publish one message with a short-lived client and return once the broker has it.

    For QoS 1/2 that means the broker acknowledged it; for QoS 0 that it was sent.

    Raises:
        OSError: the connection or TLS handshake failed.
        ConnectionError: the broker refused or dropped the connection.
        TimeoutError: no CONNACK or acknowledgement within ``timeout``.
    """
    client = _new_client(None, username, password, tls_ca, protocol)
    connack: list[ReasonCode] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        connack.append(reason_code)

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout

    def step(waiting_for: str) -> None:
        # Driving paho's loop in this thread keeps the helper free of background threads.
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting_for} from {host}:{port} within {timeout:g} s")
        rc = client.loop(timeout=0.05)
        refused = bool(connack) and connack[0].is_failure
        if rc != mqtt.MQTT_ERR_SUCCESS and not refused:  # a refusal is reported below
            raise ConnectionError(f"connection to {host}:{port} lost: {mqtt.error_string(rc)}")

    client.connect(host, port, keepalive=30)
    try:
        while not connack:
            step("no CONNACK")
        if connack[0].is_failure:
            raise ConnectionError(f"broker {host}:{port} refused the connection: {connack[0]}")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        while not info.is_published():
            step(f"publish to {topic!r} not acknowledged")
    finally:
        client.disconnect()


def make_test_certificates(
    directory: str | Path,
    *,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    valid_days: int = 2,
) -> TlsFiles:
    """Create a throw-away CA and a server certificate signed by it, as PEM files.

    Writes ``ca.pem``, ``server.pem`` and ``server.key`` (ECDSA P-256, fast to generate)
    into ``directory``. The server certificate names ``hostnames`` and ``ip_addresses`` so
    clients that verify the host name accept it. Each call makes a new CA, so a second call
    in another folder gives a CA that must *not* verify the first one's server.

    Needs the ``cryptography`` package (development dependency).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # Backdated so that a verifier whose clock lags a little still accepts the certificates.
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"swm-edge test CA {secrets.token_hex(4)}")]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    common_name = hostnames[0] if hostnames else ip_addresses[0]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(
        ca_cert=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key"
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


class CollectorFactory(Protocol):
    """Type of the ``mqtt_collector`` fixture: makes collectors closed at test teardown."""

    def __call__(
        self, broker: BrokerAddress, topic_filter: str = "#", **options: Any
    ) -> MqttCollector:
        """Connect a :class:`MqttCollector` to ``broker`` (options go to its constructor)."""
        ...


# ---------------------------------------------------------------------------------------
# pytest fixtures. pytest is optional so the classes above stay importable without it.
try:
    import pytest
except ModuleNotFoundError:  # pragma: no cover
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

_MOSQUITTO_MISSING = (
    "mosquitto is required for this test but was not found on PATH or in /usr/sbin; "
    "install it (e.g. `apt-get install mosquitto`)"
)

if _HAVE_PYTEST:

    @pytest.fixture
    def free_tcp_port() -> int:
        """A TCP port that was free on 127.0.0.1 when the test started."""
        return free_port()

    @pytest.fixture
    def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
        """``make(**options) -> Mosquitto``: started brokers, closed at teardown.

        Options are those of :class:`Mosquitto` (``users``, ``tls``, ``allow_anonymous``...).
        Fails the test (rather than skipping it) when mosquitto is not installed.
        """
        if find_mosquitto() is None:
            pytest.fail(_MOSQUITTO_MISSING, pytrace=False)
        made: list[Mosquitto] = []

        def make(**options: Any) -> Mosquitto:
            # Logs stay under tmp_path after the test, where pytest keeps them for a while.
            options.setdefault("workdir", tmp_path / f"mosquitto-{len(made)}")
            broker = Mosquitto(**options)
            made.append(broker)
            return broker.start()

        yield make
        for broker in made:
            broker.close()

    @pytest.fixture
    def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
        """A running mosquitto on 127.0.0.1 (anonymous access), stopped after the test.

        The test may ``stop()``, ``start()`` or ``restart()`` it; the port stays the same.
        """
        return mosquitto_factory()

    @pytest.fixture
    def mqtt_collector() -> Iterator[CollectorFactory]:
        """``make(broker, topic_filter="#", **options) -> MqttCollector``, closed at teardown."""
        made: list[MqttCollector] = []

        def make(broker: BrokerAddress, topic_filter: str = "#", **options: Any) -> MqttCollector:
            collector = MqttCollector(broker.host, broker.port, topic_filter, **options)
            made.append(collector)
            return collector

        yield make
        for collector in made:
            collector.close()

    @pytest.fixture
    def tls_files(tmp_path: Path) -> TlsFiles:
        """A fresh test CA and server certificate for 127.0.0.1, ::1 and localhost."""
        return make_test_certificates(tmp_path / "tls")
