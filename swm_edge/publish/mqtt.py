"""Delivery of buffered readings to one MQTT broker.

A :class:`Destination` pages readings out of the buffer in seq order, publishes them
within a bounded in-flight window, and acknowledges them to the buffer only when the
broker acknowledged them (PUBACK at QoS 1, PUBCOMP at QoS 2). Nothing else ever removes a
reading from the buffer, so a broker that drops, a network that black-holes or a process
that is killed costs at most a re-send (the backend de-duplicates on ``seq``).

paho's network loop runs in a thread of its own per destination; its callbacks only hand
events to the asyncio loop (``call_soon_threadsafe``). A fresh paho client is made for every
connection attempt, so messages of a dead session can never be re-sent behind our back:
what to re-send is decided here, from the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import tenacity
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swm_edge.buffer import Row
from swm_edge.lograte import FailureLog
from swm_edge.publish.wire import Message, Wire
from swm_edge.spool import Spool

log = logging.getLogger(__name__)

# Largest message accepted on a subscription (Sparkplug NCMD): remote input is bounded.
MAX_INCOMING = 64 * 1024


@dataclass(frozen=True)
class BrokerSettings:
    """Everything needed to talk to one destination (a broker, or the nodes of a broker
    cluster tried in order). ``password`` is never logged (repr=False)."""

    host: str
    port: int
    client_id: str
    gateway_id: str
    topic_prefix: str = "swm"
    name: str = "default"
    #: More (host, port) pairs, tried in order after ``host``/``port`` (failover).
    fallback_hosts: tuple[tuple[str, int], ...] = ()
    #: Payload format: json | senml | senml-cbor | sparkplug (swm_edge.publish.wire).
    payload: str = "json"
    sparkplug_group_id: str | None = None
    #: Sparkplug edge node id (the config's default: the gateway id).
    sparkplug_edge_node_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    qos: int = 1
    keepalive: int = 30
    protocol: str = "5"
    inflight: int = 64
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """Every (host, port) to try, in order."""
        return ((self.host, self.port), *self.fallback_hosts)

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/{self.gateway_id}/status"

    def telemetry_topic(self, device_id: str) -> str:
        return f"{self.topic_prefix}/{self.gateway_id}/{device_id}/telemetry"


@dataclass
class DestinationStats:
    """Counters for status and tests."""

    connected: bool = False
    connects: int = 0
    published: int = 0
    acked: int = 0
    resent: int = 0
    unencodable: int = 0  # rows the wire format could not carry (skipped, logged)
    last_error: str | None = None
    connected_since: float | None = None
    #: ``host:port`` of the connection (one of the destination's hosts).
    endpoint: str | None = None


class Destination:
    """One destination: connection supervision with host failover, in-flight window,
    acked delete. What is sent, and around a connection, is its :class:`Wire`'s business."""

    def __init__(
        self,
        settings: BrokerSettings,
        spool: Spool,
        wire: Wire,
        *,
        ack_interval: float = 0.1,
    ) -> None:
        self.name = name = settings.name
        self.settings = settings
        self.spool = spool
        self.wire = wire
        self._content_types: dict[str, Properties] = {}
        self.stats = DestinationStats()
        self._ack_interval = ack_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = spool.listen()
        self._client: paho.Client | None = None
        # Which connection's callbacks count: events of an older paho client are dropped.
        self._active = 0
        self._inflight: dict[int, Row] = {}
        self._resend: list[Row] = []
        self._cursor = 0
        self._epoch = spool.epoch
        self._acked: list[int] = []
        self._acks_pending = asyncio.Event()
        self._stop = threading.Event()
        self._session_ok = False  # network thread only: did the last connection get a CONNACK
        self._thread: threading.Thread | None = None
        self.failures = FailureLog(log, f"mqtt {name}")
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=settings.reconnect_min, max=settings.reconnect_max
        )

    # ---- asyncio side -------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled; start the network thread first."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._network_main, name=f"mqtt-{self.name}", daemon=True
        )
        self._thread.start()
        acker = asyncio.create_task(self._ack_loop(), name=f"acks-{self.name}")
        try:
            await self._deliver_loop()
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker

    async def _deliver_loop(self) -> None:
        window = self.settings.inflight
        while True:
            self._wake.clear()
            room = window - len(self._inflight)
            if not self.stats.connected or room <= 0:
                await self._wake.wait()
                continue
            if self._epoch != self.spool.epoch:
                # A new buffer replaced a damaged one: its rows are all new to us, and
                # nothing in flight from the old one may ack a row of the new one.
                self._epoch = self.spool.epoch
                self._cursor = 0
                self._inflight.clear()
                self._resend.clear()
                self._acked.clear()
                continue
            if self._resend:
                rows, self._resend = self._resend[:room], self._resend[room:]
                self.stats.resent += len(rows)
            else:
                rows = await self.spool.fetch(self.name, self._cursor, room)
                if not rows:
                    await self._wake.wait()
                    continue
                self._cursor = rows[-1].seq
            self._publish_rows(rows)

    def _publish_rows(self, rows: list[Row]) -> None:
        for i, row in enumerate(rows):
            if self._client is None or not self.stats.connected:
                self._resend[:0] = rows[i:]
                return
            try:
                messages = self.wire.encode(row.seq, row.reading)
            except Exception:  # a row this format cannot carry must not stop delivery
                self.stats.unencodable += 1
                log.exception(
                    "mqtt %s: seq %d cannot be encoded as %s; skipped (%d so far)",
                    self.name,
                    row.seq,
                    self.settings.payload,
                    self.stats.unencodable,
                )
                messages = []
            if not messages:  # nothing to send for it: it is done for this destination
                self._acked.append(row.seq)
                self._acks_pending.set()
                continue
            *control, data = messages
            self._send(control)
            mid = self._publish(data)
            if mid is None:
                self._resend[:0] = rows[i:]
                return
            self._inflight[mid] = row
            self.stats.published += 1
            if data.qos == 0:
                # QoS 0 has no acknowledgement: handing it to the socket is all we get.
                self._on_published(self._active, mid)

    def _publish(self, message: Message) -> int | None:
        """Publish one message on the current connection; its mid, or None without one."""
        client = self._client
        if client is None:
            return None
        props = None
        if message.content_type and self.settings.protocol == "5":
            props = self._content_types.get(message.content_type)
            if props is None:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ContentType = message.content_type
                self._content_types[message.content_type] = props
        info = client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain, properties=props
        )
        return info.mid

    def _send(self, messages: list[Message]) -> None:
        """Publish control messages (births, status, answers): not tracked per row."""
        for message in messages:
            self._publish(message)

    async def _ack_loop(self) -> None:
        try:
            while True:
                # Sleep until something was acknowledged (no wake-ups on an idle gateway),
                # then linger so one transaction deletes a whole window's worth.
                await self._acks_pending.wait()
                await asyncio.sleep(self._ack_interval)
                self._acks_pending.clear()
                await self.flush_acks()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_acks())

    async def flush_acks(self) -> None:
        """Write the broker's acknowledgements to the buffer (deleting delivered rows)."""
        if self._acked:
            seqs, self._acked = self._acked, []
            await self.spool.ack(self.name, seqs)

    def _on_connected(self, generation: int, client: paho.Client, endpoint: str) -> None:
        self._active = generation
        self._client = client
        self.stats.endpoint = endpoint
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = time.time()
        self.stats.last_error = None
        if self.stats.connects == 1:  # reconnections are told by the failure log's recovery
            log.info("mqtt %s: connected to %s", self.name, endpoint)
        self.failures.success()
        self._send(self.wire.connected())
        for topic, qos in self.wire.subscriptions():
            client.subscribe(topic, qos)
        self._wake.set()

    def update_health(self, problems: dict[str, str]) -> None:
        """Tell the wire about the gateway's health; published now if connected."""
        messages = self.wire.health(problems)
        if self.stats.connected:
            self._send(messages)

    def _on_message(self, generation: int, topic: str, payload: bytes) -> None:
        if generation != self._active or not self.stats.connected:
            return
        self._send(self.wire.received(topic, payload))

    def _on_disconnected(self, generation: int, reason: str) -> None:
        if generation != self._active:
            return
        was_connected = self.stats.connected
        self.stats.connected = False
        self._client = None
        # Everything not acknowledged goes out again, first and in order, on the next session.
        unacked = sorted(self._inflight.values(), key=lambda r: r.seq)
        self._inflight.clear()
        self._resend = unacked + self._resend
        if was_connected and not self._stop.is_set():  # a close is not a failure
            self.failures.failure(f"connection lost ({reason})", "reconnecting with backoff")
        self._wake.set()

    def _on_published(self, generation: int, mid: int) -> None:
        if generation != self._active:
            return
        row = self._inflight.pop(mid, None)
        if row is not None:
            self._acked.append(row.seq)
            self._acks_pending.set()
            self.stats.acked += 1
            self._wake.set()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(fn, *args)

    async def close(self, *, timeout: float = 5.0) -> None:
        """Publish the wire's farewell (offline status, NDEATH), disconnect cleanly, stop
        the network thread."""
        self._stop.set()
        client = self._client
        if client is not None and self.stats.connected:
            farewell = self.wire.closing()
            if farewell is not None:
                info = client.publish(
                    farewell.topic, farewell.payload, qos=farewell.qos, retain=farewell.retain
                )
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(info.wait_for_publish, timeout)
            client.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
        await self.flush_acks()
        self.spool.unlisten(self._wake)

    # ---- network thread -----------------------------------------------------------
    def _new_client(self, generation: int, endpoint: str) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(s.inflight)
        client.max_queued_messages_set(0)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(
                ca_certs=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        will = self.wire.will()
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

        def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc.is_failure:
                self._post(self._note_error, f"broker refused the connection: {rc}")
            else:
                self._session_ok = True
                self._post(self._on_connected, generation, c, endpoint)

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            self._post(self._on_disconnected, generation, str(rc))

        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
            self._post(self._on_published, generation, mid)

        def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
            if len(message.payload) <= MAX_INCOMING:
                self._post(self._on_message, generation, message.topic, bytes(message.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    def _note_error(self, message: str) -> None:
        self.failures.failure(message, "retrying with backoff; readings stay in the buffer")
        self.stats.last_error = message

    def _network_main(self) -> None:
        s = self.settings
        attempt = 0
        generation = 0
        while not self._stop.is_set():
            # One round: every host in order (a cluster's nodes, a primary then its standby),
            # starting again from the first, so the gateway returns to the primary.
            for host, port in s.endpoints:
                if self._stop.is_set():
                    return
                generation += 1
                if self._connect_and_run(generation, host, port):
                    attempt = 0
                    break  # the session ended: start the next round at the first host
            attempt += 1
            self._stop.wait(self._backoff(attempt))

    def _connect_and_run(self, generation: int, host: str, port: int) -> bool:
        """One connection to one host, run until it ends; whether it got a session."""
        s = self.settings
        self._session_ok = False
        endpoint = f"{host}:{port}"
        client = self._new_client(generation, endpoint)
        try:
            if s.protocol == "5":
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0
                client.connect(host, port, s.keepalive, clean_start=True, properties=props)
            else:
                client.connect(host, port, s.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._post(self._note_error, f"cannot connect to {endpoint}: {exc}")
            return False
        client.loop_forever()
        self._post(self._on_disconnected, generation, "network loop ended")
        return self._session_ok

    def _backoff(self, attempt: int) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))
