"""Test kit for swm-edge and for integrators: real brokers and an MQTT message collector.

Use it as a pytest plugin by putting ``pytest_plugins = ["swm_edge.testing"]`` in a
top-level ``conftest.py`` (or ``-p swm_edge.testing`` in pytest's ``addopts``); that
provides the fixtures

* ``mosquitto`` -- a started :class:`Mosquitto` per test (stop/restart it freely),
* ``mosquitto_factory`` -- ``make(**Mosquitto options) -> started Mosquitto``,
* ``mqtt_collector`` -- ``make(broker, topic_filter="#", **options) -> MqttCollector``,
* ``free_tcp_port`` -- a free port on 127.0.0.1,
* ``tls_files`` -- a fresh test CA plus a server certificate for 127.0.0.1/localhost,

and, for driver authors' end-to-end tests (see docs/drivers.md),

* ``serial_device`` -- ``make(handler, terminator=b"\\r") -> SerialDevice``: a simulated
  serial device on a pty pair; the agent opens ``device.port``,
* ``modbus_tcp_device`` -- ``make(profile_or_points, values={...}) -> ModbusTcpDevice``,
* ``pipeline`` -- ``make(bus=..., device=..., driver=...) -> Pipeline``: a config for one bus
  and one device, the real agent (``python -m swm_edge run``) publishing to the test's
  mosquitto, and the device's telemetry as it arrives.

:func:`run_pipeline` does the whole run in one call and returns the telemetry documents;
:func:`run_cli` runs other ``swm-edge`` commands (``validate``, ``drivers``...). All of them
take ``env`` and ``pythonpath`` for the subprocess, e.g. the folder a driver was installed
into with ``pip install --target``.

Everything the fixtures return is a plain class or function of this module that works
without pytest as well (pytest itself is only needed for the fixtures). The broker process
classes live in :mod:`swm_edge.broker` and are re-exported here. :func:`make_test_certificates`
uses the ``cryptography`` package (a runtime dependency, for ``swm-edge cert``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from swm_edge_hil.pty import PtyDevice

from swm_edge.broker import (
    BrokerError,
    BrokerNotFoundError,
    BrokerStartError,
    Mosquitto,
    TlsFiles,
    find_mosquitto,
    free_port,
)
from swm_edge.model import PointSpec

__all__ = [
    "TEST_BUS_ID",
    "TEST_DEVICE_ID",
    "TEST_GATEWAY",
    "TEST_INTERVAL",
    "BrokerAddress",
    "BrokerError",
    "BrokerNotFoundError",
    "BrokerStartError",
    "CollectorFactory",
    "FrameHandler",
    "Message",
    "ModbusTcpDevice",
    "ModbusTcpDeviceFactory",
    "Mosquitto",
    "MqttCollector",
    "Pipeline",
    "PipelineFactory",
    "PipelineResult",
    "RunningAgent",
    "SerialDevice",
    "SerialDeviceFactory",
    "TlsFiles",
    "agent_env",
    "config_line",
    "find_mosquitto",
    "free_port",
    "make_test_certificates",
    "mqtt_publish",
    "run_cli",
    "run_pipeline",
    "unavailable",
    "wait_until",
    "write_config",
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

    Uses the ``cryptography`` package.
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
# The driver author's kit: a simulated device, a config for one device, the real agent.

#: Gateway id of the configs written by :func:`write_config`.
TEST_GATEWAY = "gw-test-0001"
#: Poll interval of a device whose entry gives none: short, so tests finish quickly.
TEST_INTERVAL = 0.5
#: Bus and device ids of the configs written by :func:`write_config`, unless given.
TEST_BUS_ID = "bus-1"
TEST_DEVICE_ID = "dev-1"

# How much of the agent's log an error message quotes.
_LOG_TAIL_LINES = 40
# How often waiting loops look at whether the agent or a simulator thread died.
_POLL_STEP = 0.1

#: A simulated device's protocol: one request frame in, the reply out (``None``: stay silent).
FrameHandler = Callable[[bytes], bytes | None]


# swm_edge_hil is installed from hil/ under another name, which mypy cannot follow (see
# pyproject.toml), so the base class is Any to it; SerialDevice's own members stay checked.
# Where mypy can follow it (swm_edge_hil on its path), the class checks clean: unused-ignore.
class SerialDevice(PtyDevice):  # type: ignore[misc, unused-ignore]
    """A simulated serial device on a pseudo-terminal pair (``os.openpty``).

    The agent opens :attr:`port` as it would open ``/dev/ttyUSB0``; a thread reads what it
    sends on the other (master) side, cuts it into request frames, hands each frame to
    ``handler`` and writes the handler's reply back. The simulator sees the bytes exactly as
    the driver sent them (the pty is raw: no echo, no CR/LF translation). Baud rate, parity
    and line timing do not apply to a pty, and a break condition does not reach the
    simulator, so a driver's ``send_break`` succeeds at once.

    Args:
        handler: ``handler(frame) -> reply or None``; ``frame`` includes the terminator.
            It runs in the simulator's thread; replace :attr:`handler` at any time to
            change the device's behaviour (e.g. make it go silent).
        terminator: a request ends with these bytes (``b"\\r"`` for ``R\\r``); ``None``
            frames by silence instead: a request is what arrived before a pause of
            ``idle_gap`` seconds (binary protocols such as M-Bus or Modbus RTU).
        idle_gap: the pause that ends a frame when ``terminator`` is ``None``.
        link: also make this path a symlink to the port (created with its parent folders,
            removed on :meth:`close`), like a stable ``/dev/serial/by-id/...`` name.

    It runs from construction on. :attr:`pty_path` is the pty's own path, :meth:`write`
    sends bytes unasked (line noise, a late answer, an unsolicited frame).

    An exception raised by ``handler`` leaves that request unanswered and is raised again
    by :meth:`close`, so a broken simulator fails the test instead of looking like a
    silent device.
    """

    def __init__(
        self,
        handler: FrameHandler,
        *,
        terminator: bytes | None = b"\r",
        idle_gap: float = 0.02,
        link: str | Path | None = None,
    ) -> None:
        if terminator == b"":
            raise ValueError("terminator must not be empty (use None to frame by silence)")
        super().__init__(link=link, name="SerialDevice")
        self.handler: FrameHandler = handler
        self.terminator = terminator
        self.idle_gap = idle_gap
        self._buf = bytearray()
        self._last_rx = time.monotonic()
        self._cond = threading.Condition()
        self._requests: list[bytes] = []
        self._errors: list[BaseException] = []
        self.start()

    @property
    def requests(self) -> list[bytes]:
        """A copy of every request frame received so far, in order."""
        with self._cond:
            return list(self._requests)

    def wait_requests(self, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """Block until at least ``count`` request frames arrived; return all of them.

        Raises:
            TimeoutError: fewer arrived in time (the message lists what did).
        """
        with self._cond:
            if self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                return list(self._requests)
            got = list(self._requests)
        raise TimeoutError(
            f"{self.port}: {len(got)} request(s) within {timeout:g} s, wanted {count}: "
            f"{got[:_DESCRIBE_LIMIT]!r}"
        )

    def on_bytes(self, data: bytes, now: float) -> None:
        """Answer every request that ``data`` completes (framing by terminator)."""
        self._buf += data
        self._last_rx = now
        if self.terminator is None:
            return
        while (end := self._buf.find(self.terminator)) >= 0:
            cut = end + len(self.terminator)
            frame = bytes(self._buf[:cut])
            del self._buf[:cut]
            self._handle(frame)

    def on_idle(self, now: float) -> float | None:
        """Answer the request that a pause ended (framing by silence)."""
        if self.terminator is not None or not self._buf:
            return None
        left = self._last_rx + self.idle_gap - now
        if left > 0:
            return left
        frame = bytes(self._buf)
        self._buf.clear()
        self._handle(frame)
        return None

    def _handle(self, frame: bytes) -> None:
        with self._cond:
            self._requests.append(frame)
            self._cond.notify_all()
        try:
            reply = self.handler(frame)
        except Exception as exc:
            with self._cond:
                self._errors.append(exc)
            return
        if reply:
            self.write(reply)

    def close(self) -> None:
        """Stop the simulator and close the pty (the agent's port then fails). Idempotent.

        Raises:
            Exception: the first exception the handler raised, if any.
        """
        super().close()
        with self._cond:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"SerialDevice(port={self.port!r}, terminator={self.terminator!r})"


class ModbusTcpDevice:
    """A simulated Modbus device served over Modbus TCP on ``host`` by a background thread.

    The register map comes from a device profile (a built-in profile name or the path of
    your own profile file) or from a list of :class:`~swm_edge.model.PointSpec`. Values are
    static (the simulator from ``swm_edge_hil`` in frozen mode) until :meth:`set` changes
    them, so a test can compare published values with :meth:`values` without racing a
    ticking simulation.

    Args:
        points: built-in profile name, profile file path, or the points themselves.
        unit: the Modbus unit id it answers to.
        values: initial values by point name (engineering units, after scale/offset).
        host: address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).
        seed: seed of the simulated values of points not in ``values``.

    Raises:
        FileNotFoundError: no such profile.
        ValueError: a bad profile or value.
    """

    def __init__(
        self,
        points: str | Path | Sequence[PointSpec],
        *,
        unit: int = 1,
        values: Mapping[str, int | float | bool] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:

        # The simulators ship in the same distribution (swm_edge_hil) but are test kit, not
        # runtime: imported only when a test asks for a simulated device.
        from swm_edge_hil.devices import SimulatedDevice
        from swm_edge_hil.profiles import load_profile
        from swm_edge_hil.servers import serve_tcp

        source: Any = load_profile(points) if isinstance(points, Path) else points
        self.device: Any = SimulatedDevice(source, unit, seed=seed, frozen=True)
        for name, value in (values or {}).items():
            self.device.set(name, value)
        self.unit = unit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ModbusTcpDevice", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._server: Any = self._run(serve_tcp(self.device, host=host, port=port))
        except BaseException:
            self._stop_loop()
            raise
        self.host: str = host
        self.port: int = int(self._server.port)

    def _run(self, coro: Any) -> Any:

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _call(self, fn: Callable[[], Any]) -> Any:
        # The simulator is single-threaded (its loop's thread), like the server reading it.
        async def call() -> Any:
            return fn()

        return self._run(call())

    def set(self, name: str, value: int | float | bool) -> None:
        """Serve ``value`` for point ``name`` from now on (engineering units).

        Raises:
            KeyError: no such point.
            ValueError: the value does not fit the point's type.
        """
        self._call(lambda: self.device.set(name, value))

    def values(self) -> dict[str, int | float | bool]:
        """What a correct agent publishes for every point now (float32 rounding included)."""
        result: dict[str, int | float | bool] = self._call(self.device.values)
        return result

    def set_fault(self, fault: str | None) -> None:
        """Make the device misbehave: ``"silent"``, ``"exception:2"``, ``"garbage"``,
        ``"late:SECONDS"``, ...; ``None`` heals it (see ``swm_edge_hil.faults``)."""
        self._call(lambda: self._server.set_fault(self.unit, fault))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close(self) -> None:
        """Stop serving. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._server.stop())
        finally:
            self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModbusTcpDevice({self.host}:{self.port}, unit={self.unit})"


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until it is true; after ``timeout`` seconds fail the test with
    ``timed out waiting for <what>`` (an AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def agent_env(
    env: Mapping[str, str] | None = None, pythonpath: Sequence[str | Path] = ()
) -> dict[str, str]:
    """The environment for an agent or CLI subprocess: this process's environment, updated
    with ``env``, with ``pythonpath`` put in front of ``PYTHONPATH`` (e.g. the folder a
    driver package was installed into with ``pip install --target``)."""

    merged = dict(os.environ)
    merged.update(env or {})
    merged["PYTHONUNBUFFERED"] = "1"  # the log file is read while the agent runs
    if pythonpath:
        parts = [str(Path(p)) for p in pythonpath]
        if merged.get("PYTHONPATH"):
            parts.append(merged["PYTHONPATH"])
        merged["PYTHONPATH"] = os.pathsep.join(parts)
    return merged


def run_cli(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[str | Path] = (),
    cwd: str | Path | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m swm_edge ARGS`` (the ``swm-edge`` command) and capture its output.

    The exit status is returned, not checked: ``validate`` exits 2 on a bad config.
    ``env`` and ``pythonpath`` are applied as by :func:`agent_env`.

    >>> run_cli("drivers", "--json").returncode
    0
    """
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *(str(a) for a in args)],
        env=agent_env(env, pythonpath),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _yaml_block(entry: Mapping[str, Any], indent: str) -> str:
    """A mapping as one YAML sequence item, one key per line.

    Every value is written as JSON (which YAML reads as flow style), so nothing needs YAML
    quoting rules, and each key sits on a line of its own, so an error in a driver option
    points at a line a test can find with ``config_line``.
    """
    lines = []
    for i, (key, value) in enumerate(entry.items()):
        lead = f"{indent}- " if i == 0 else f"{indent}  "
        lines.append(f"{lead}{key}: {json.dumps(value, allow_nan=False, default=str)}")
    return "\n".join(lines)


def write_config(
    path: str | Path,
    *,
    broker: BrokerAddress,
    bus: Mapping[str, Any],
    device: Mapping[str, Any],
    driver: str | None = None,
    gateway: str = TEST_GATEWAY,
    profiles: Sequence[str | Path] = (),
    mqtt: Mapping[str, Any] | None = None,
) -> Path:
    """Write a config for one bus and one device, publishing to ``broker``.

    Args:
        path: the config file to write; the buffer and ``profiles/`` go next to it.
        broker: where the agent publishes (a :class:`Mosquitto`, or anything with
            ``host`` and ``port``).
        bus: the bus entry, e.g. ``{"type": "sdi12", "port": device.port}``; ``id``
            defaults to ``bus-1``.
        device: the device entry (core keys and driver options); ``id`` defaults to
            ``dev-1``, ``bus`` to the bus's id and ``interval`` to 0.5 s.
        driver: sets the device's ``driver:`` key (the driver's entry-point name).
        gateway: the gateway id.
        profiles: profile files copied to ``profiles/`` next to the config, where
            ``profile: NAME`` finds ``NAME.yaml`` before any driver's built-in ones.
        mqtt: extra keys of the ``mqtt`` section (e.g. ``{"topic_prefix": "x"}``).

    Values are written as JSON, one key per line (see :func:`config_line`); NaN and
    infinity cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bus_entry = {"id": TEST_BUS_ID, **bus}
    device_entry: dict[str, Any] = {
        "id": TEST_DEVICE_ID,
        "bus": bus_entry["id"],
        "interval": TEST_INTERVAL,
    }
    if driver is not None:
        device_entry["driver"] = driver
    device_entry.update(device)
    if "id" in device:  # keep the id first: it names the entry in error messages
        device_entry = {"id": device["id"], **device_entry}
    mqtt_section = {
        "host": broker.host,
        "port": broker.port,
        # Short keepalive and reconnect waits: tests restart brokers and want it noticed.
        "keepalive": 5,
        "reconnect_min": 0.5,
        "reconnect_max": 2,
        **(mqtt or {}),
    }
    for profile in profiles:
        source = Path(profile)
        target = path.parent / "profiles" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    path.write_text(
        f"gateway: {json.dumps({'id': gateway})}\n"
        f"mqtt: {json.dumps(mqtt_section)}\n"
        f"buffer: {json.dumps({'path': str(path.parent / 'buffer.sqlite'), 'max_mb': 16})}\n"
        "buses:\n"
        f"{_yaml_block(bus_entry, '  ')}\n"
        "devices:\n"
        f"{_yaml_block(device_entry, '  ')}\n",
        encoding="utf-8",
    )
    return path


def config_line(
    path: str | Path,
    key: str,
    *,
    section: Literal["buses", "devices"] = "devices",
    at: Literal["key", "value"] = "value",
) -> tuple[int, int]:
    """``(line, column)``, 1-based, of ``key`` in the one entry of ``section`` of a config
    written by :func:`write_config`: where ``swm-edge validate`` reports an error in it.

    ``at="value"`` (a wrong value) gives the value's position, ``at="key"`` (an unknown
    key) the key's.

    Raises:
        KeyError: the key is not in that section.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    inside = False
    for number, text in enumerate(lines, start=1):
        if not text.startswith(" "):
            inside = text.startswith(f"{section}:")
            continue
        stripped = text.lstrip(" -")
        if inside and stripped.startswith(f"{key}: "):
            key_col = len(text) - len(stripped) + 1
            return number, key_col if at == "key" else key_col + len(key) + 2
    raise KeyError(f"{key!r} is not a key of the {section} entry in {path}")


class RunningAgent:
    """``python -m swm_edge run`` in a subprocess, as on a gateway, logging to a file.

    Args:
        config: the config file.
        env: extra environment variables (see :func:`agent_env`).
        pythonpath: folders put in front of ``PYTHONPATH``, e.g. a ``pip install
            --target`` folder holding the driver under test.
        log_level: the agent's ``--log-level``.
        log_path: where its output goes; default next to the config.
    """

    def __init__(
        self,
        config: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | Path] = (),
        log_level: str = "debug",
        log_path: str | Path | None = None,
    ) -> None:
        self.config = Path(config)
        self.log_path = (
            Path(log_path)
            if log_path is not None
            else self.config.with_suffix(f".{time.monotonic_ns()}.log")
        )
        self._log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "swm_edge",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "text",
                    "--log-level",
                    log_level,
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=agent_env(env, pythonpath),
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while it runs."""
        return self.proc.poll()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a clean stop: polls in flight finish, the buffer is flushed) and wait.

        Returns the exit status (0 for a clean stop). Kills the process if it has not
        exited within ``timeout`` and raises ``subprocess.TimeoutExpired``.
        """

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL and reap (a power cut, as far as the agent can tell)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        """Everything the agent printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of :meth:`log`."""
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.running:
            self.kill()


@dataclass(frozen=True)
class PipelineResult:
    """What a :class:`Pipeline` run produced.

    Attributes:
        docs: the device's telemetry documents (wire contract, ``docs/wire-contract.md``),
            in order of arrival.
        status: the gateway's status documents published during the run (``online``
            first, ``offline`` last after a clean stop; an earlier run's retained status
            is left out).
        log: everything the agent printed.
        returncode: the agent's exit status (0 after a clean stop).
        config: the config file the agent ran with.
    """

    docs: list[dict[str, Any]]
    status: list[dict[str, Any]]
    log: str
    returncode: int
    config: Path

    def values(self, point: str) -> list[Any]:
        """The value of ``point`` in every document, in order (``None`` where it was bad)."""
        return [doc["readings"][point].get("value") for doc in self.docs]


def _state(message: Message) -> Any:
    try:
        doc = message.json()
    except ValueError:
        return None
    return doc.get("state") if isinstance(doc, dict) else None


class Pipeline:
    """One bus and one device of a driver, polled by the real agent, published to a real
    broker; the device's telemetry is collected as it arrives.

    Writes the config with :func:`write_config`, subscribes to the gateway's topics, then
    starts the agent (:class:`RunningAgent`). Use it as a context manager, or call
    :meth:`stop` (which returns the :class:`PipelineResult`) and :meth:`close`.

    Args:
        bus: the bus entry; see :func:`write_config`.
        device: the device entry; see :func:`write_config`.
        driver: the device's ``driver:``; ``None`` leaves it to the bus type's default.
        broker: a running broker; ``None`` starts a private :class:`Mosquitto` (closed with
            the pipeline).
        env: extra environment variables of the agent.
        pythonpath: folders put in front of the agent's ``PYTHONPATH``.
        workdir: where the config, buffer and log go; ``None``: a temporary folder,
            removed by :meth:`close`.
        gateway: the gateway id.
        profiles: profile files to put in ``profiles/`` next to the config.
        mqtt: extra keys of the config's ``mqtt`` section.

    Raises:
        BrokerNotFoundError: no broker given and mosquitto is not installed.
    """

    def __init__(
        self,
        *,
        bus: Mapping[str, Any],
        device: Mapping[str, Any],
        driver: str | None = None,
        broker: BrokerAddress | None = None,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | Path] = (),
        workdir: str | Path | None = None,
        gateway: str = TEST_GATEWAY,
        profiles: Sequence[str | Path] = (),
        mqtt: Mapping[str, Any] | None = None,
    ) -> None:

        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix="swm-pipeline-") if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._own_broker: Mosquitto | None = None
        self._collector: MqttCollector | None = None
        self.agent: RunningAgent | None = None
        self._result: PipelineResult | None = None
        try:
            if broker is None:
                self._own_broker = Mosquitto(workdir=self.workdir / "mosquitto").start()
                broker = self._own_broker
            self.broker: BrokerAddress = broker
            self.device_id: str = str(device.get("id", TEST_DEVICE_ID))
            self.config = write_config(
                self.workdir / "config.yaml",
                broker=broker,
                bus=bus,
                device=device,
                driver=driver,
                gateway=gateway,
                profiles=profiles,
                mqtt=mqtt,
            )
            prefix = str((mqtt or {}).get("topic_prefix", "swm"))
            #: Topic of the device's telemetry.
            self.telemetry_topic = f"{prefix}/{gateway}/{self.device_id}/telemetry"
            #: Topic of the gateway's retained status.
            self.status_topic = f"{prefix}/{gateway}/status"
            self._collector = MqttCollector(broker.host, broker.port, f"{prefix}/{gateway}/#")
            self.agent = RunningAgent(
                self.config,
                env=env,
                pythonpath=pythonpath,
                log_path=self.workdir / "agent.log",
            )
        except BaseException:
            self.close()
            raise

    @property
    def collector(self) -> MqttCollector:
        """The subscriber that receives everything the gateway publishes."""
        assert self._collector is not None
        return self._collector

    def _agent(self) -> RunningAgent:
        assert self.agent is not None
        return self.agent

    def docs(self) -> list[dict[str, Any]]:
        """The device's telemetry documents received so far, in order of arrival."""
        return self.collector.json_messages(self.telemetry_topic)

    def wait_docs(
        self,
        count: int = 1,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Block until ``count`` telemetry documents (that satisfy ``where``) arrived.

        Returns every document received so far that satisfies ``where`` (all of them
        without it), at least ``count``.

        Raises:
            RuntimeError: the agent exited first (e.g. it rejected the config); the
                message carries its output.
            TimeoutError: not enough arrived in time; the message carries what did and
                the end of the agent's log.
        """
        agent = self._agent()

        def match(message: Message) -> bool:
            if not topic_matches_sub(self.telemetry_topic, message.topic):
                return False
            return where is None or bool(where(message.json()))

        deadline = time.monotonic() + timeout
        while True:
            step = min(_POLL_STEP * 2, max(0.0, deadline - time.monotonic()))
            try:
                return [m.json() for m in self.collector.wait_for(match, step, count=count)]
            except TimeoutError:
                pass
            if not agent.running:
                raise RuntimeError(
                    f"the agent exited with status {agent.returncode} before {count} "
                    f"telemetry message(s) arrived on {self.telemetry_topic}; its output:\n"
                    f"{agent.log_tail()}"
                )
            if time.monotonic() >= deadline:
                got = [m.json() for m in self.collector.messages(self.telemetry_topic)]
                raise TimeoutError(
                    f"{sum(1 for m in self.collector.messages() if match(m))} of {count} "
                    f"telemetry message(s) on {self.telemetry_topic} within {timeout:g} s; "
                    f"received: {got[-3:]!r}\nagent log (end):\n{agent.log_tail()}"
                )

    def stop(self, timeout: float = 20.0) -> PipelineResult:
        """Stop the agent cleanly and return what the run produced. Idempotent."""
        if self._result is not None:
            return self._result
        agent = self._agent()
        returncode = agent.stop(timeout)
        # A clean stop publishes the retained offline status last; once it is here, every
        # telemetry message the agent sent before it has been delivered too (one session,
        # in order).
        # Only live messages count: a retained status on a shared broker may be an earlier
        # run's.
        with contextlib.suppress(TimeoutError):
            self.collector.wait_for(
                lambda m: m.topic == self.status_topic and not m.retain and _state(m) == "offline",
                timeout=2 if returncode == 0 else 0,
            )
        self._result = PipelineResult(
            docs=self.docs(),
            status=[m.json() for m in self.collector.messages(self.status_topic) if not m.retain],
            log=agent.log(),
            returncode=returncode,
            config=self.config,
        )
        return self._result

    def close(self) -> None:
        """Stop the agent (killing it if it does not stop), the collector and a broker of
        its own; remove a temporary workdir. Idempotent."""

        if self.agent is not None and self.agent.running:
            # On a timeout stop() has killed it: nothing more to do.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
        if self._collector is not None:
            self._collector.close()
        if self._own_broker is not None:
            self._own_broker.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_pipeline(
    *,
    bus: Mapping[str, Any],
    device: Mapping[str, Any],
    driver: str | None = None,
    count: int = 3,
    timeout: float = 30.0,
    broker: BrokerAddress | None = None,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[str | Path] = (),
    workdir: str | Path | None = None,
    gateway: str = TEST_GATEWAY,
    profiles: Sequence[str | Path] = (),
) -> PipelineResult:
    """Run the real agent on one bus and one device until ``count`` telemetry documents
    arrived, stop it cleanly and return the run's :class:`PipelineResult`, whose ``docs``
    are the first ``count`` documents.

    A driver's end-to-end test in a few lines::

        with SerialDevice(lambda frame: b"L=1.234\\r\\n") as sensor:
            run = run_pipeline(driver="example-level",
                               bus={"type": "sdi12", "port": sensor.port}, device={})
        assert run.values("level") == [1.234] * 3

    Arguments are those of :class:`Pipeline`.

    Raises:
        RuntimeError: the agent exited early (its output is in the message).
        TimeoutError: fewer documents arrived within ``timeout``.
    """
    with Pipeline(
        bus=bus,
        device=device,
        driver=driver,
        broker=broker,
        env=env,
        pythonpath=pythonpath,
        workdir=workdir,
        gateway=gateway,
        profiles=profiles,
    ) as pipeline:
        pipeline.wait_docs(count, timeout)
        result = pipeline.stop()
    return dataclasses.replace(result, docs=result.docs[:count])


class SerialDeviceFactory(Protocol):
    """Type of the ``serial_device`` fixture: makes :class:`SerialDevice` closed at teardown."""

    def __call__(self, handler: FrameHandler, **options: Any) -> SerialDevice:
        """Start a :class:`SerialDevice` (options go to its constructor)."""
        ...


class ModbusTcpDeviceFactory(Protocol):
    """Type of the ``modbus_tcp_device`` fixture: makes :class:`ModbusTcpDevice` closed at
    teardown."""

    def __call__(self, points: str | Path | Sequence[PointSpec], **options: Any) -> ModbusTcpDevice:
        """Start a :class:`ModbusTcpDevice` (options go to its constructor)."""
        ...


class PipelineFactory(Protocol):
    """Type of the ``pipeline`` fixture: starts :class:`Pipeline` runs, closed at teardown."""

    def __call__(
        self, *, bus: Mapping[str, Any], device: Mapping[str, Any], **options: Any
    ) -> Pipeline:
        """Start a :class:`Pipeline` against the test's broker (options go to its
        constructor)."""
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

    def unavailable(reason: str) -> None:
        """A test's prerequisite (a tool, root) is missing: skip on a developer's machine,
        but fail when ``$CI`` is set, where a skip would hide a dependency CI should have."""
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)

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

    @pytest.fixture
    def serial_device() -> Iterator[SerialDeviceFactory]:
        """``make(handler, terminator=b"\\r", ...) -> SerialDevice`` on a pty pair; closed at
        teardown, where an exception its handler raised fails the test."""
        made: list[SerialDevice] = []

        def make(handler: FrameHandler, **options: Any) -> SerialDevice:
            device = SerialDevice(handler, **options)
            made.append(device)
            return device

        yield make
        for device in made:
            device.close()

    @pytest.fixture
    def modbus_tcp_device() -> Iterator[ModbusTcpDeviceFactory]:
        """``make(profile_or_points, unit=1, values={...}) -> ModbusTcpDevice`` serving
        on 127.0.0.1; closed at teardown."""
        made: list[ModbusTcpDevice] = []

        def make(points: str | Path | Sequence[PointSpec], **options: Any) -> ModbusTcpDevice:
            device = ModbusTcpDevice(points, **options)
            made.append(device)
            return device

        yield make
        for device in made:
            device.close()

    @pytest.fixture
    def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PipelineFactory]:
        """``make(bus=..., device=..., driver=None, **options) -> Pipeline``: the real agent
        on one device, publishing to the test's ``mosquitto`` unless ``broker=`` is given;
        config, buffer and log under ``tmp_path``; stopped at teardown."""
        made: list[Pipeline] = []

        def make(*, bus: Mapping[str, Any], device: Mapping[str, Any], **options: Any) -> Pipeline:
            if options.get("broker") is None:
                # Requested only now, so a test passing its own broker starts no other.
                options["broker"] = request.getfixturevalue("mosquitto")
            options.setdefault("workdir", tmp_path / f"pipeline-{len(made)}")
            run = Pipeline(bus=bus, device=device, **options)
            made.append(run)
            return run

        yield make
        for run in made:
            run.close()
