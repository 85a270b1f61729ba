"""Delivery of buffered readings to one MQTT broker.

A :class:`Destination` pages readings out of the buffer in seq order, publishes them
within a bounded in-flight window, and acknowledges them to the buffer only when the
broker acknowledged them (PUBACK at QoS 1, PUBCOMP at QoS 2). Nothing else ever removes a
reading from the buffer, so a broker that drops, a network that black-holes or a process
that is killed costs at most a re-send (the backend de-duplicates on ``seq``).

paho runs on the agent's asyncio loop, not in a network thread of its own: the loop watches
the socket and calls paho's ``loop_read``/``loop_write``/``loop_misc`` (paho's documented
external-loop mode). Only the blocking TCP connect and TLS handshake run in a short-lived
thread. One thread for delivery means no lock contention with paho's network thread and
no thread hand-off per acknowledgement, which were most of a backlog drain's CPU (see
docs/performance.md). A fresh paho client is made for every connection attempt, so
messages of a dead session can never be re-sent behind our back: what to re-send is
decided here, from the buffer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
# Rows fetched from the buffer at once: a backlog drains without a buffer round trip per
# in-flight window.
FETCH_AHEAD = 512
# Largest payload of a batch message (well under the 128 KiB some cloud brokers accept).
BATCH_BYTES = 64 * 1024
# Seconds between paho's housekeeping calls (keepalive pings, ping timeouts).
MISC_INTERVAL = 1.0
# Longest wait at stop for readings committed by the last polls to be acknowledged.
STOP_DRAIN = 2.0

T = TypeVar("T")


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
    #: Readings of one device per message at most (1: one message per reading).
    batch: int = 1
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
        self._wake = spool.listen()
        self._client: paho.Client | None = None  # the connected client (after CONNACK)
        # Which connection's callbacks count: events of an older paho client are dropped.
        self._active = 0
        self._generation = 0
        # mid -> the rows its message carries (one, or a batch of one device's rows)
        self._inflight: dict[int, list[Row]] = {}
        # Rows to publish next, in seq order: re-sends first, then rows fetched ahead.
        self._pending: deque[Row] = deque()
        self._cursor = 0  # the highest seq taken from the buffer
        self._caught_up = False  # the last look at the buffer found nothing new
        self._epoch = spool.epoch
        self._acked: list[int] = []
        self._acks_pending = asyncio.Event()
        self._control_waiters: dict[int, asyncio.Future[None]] = {}
        self._stopping = asyncio.Event()
        self._session_ended = asyncio.Event()
        self._session_ok = False  # did the current connection get a CONNACK
        self._connector: asyncio.Task[None] | None = None
        self.failures = FailureLog(log, f"mqtt {name}")
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=settings.reconnect_min, max=settings.reconnect_max
        )

    # ---- delivery ---------------------------------------------------------------------
    async def run(self) -> None:
        """Connect (and reconnect) and deliver until cancelled."""
        self._connector = asyncio.create_task(self._connection_loop(), name=f"mqtt-{self.name}")
        acker = asyncio.create_task(self._ack_loop(), name=f"acks-{self.name}")
        try:
            await self._deliver_loop()
        finally:
            for task in (self._connector, acker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

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
                self._pending.clear()
                self._acked.clear()
                continue
            if not self._pending:
                # Caught up: the rows the spool just committed are the next ones, so they
                # need no trip to the buffer; and once they are taken there is nothing more
                # until the next commit wakes us.
                rows = self.spool.committed_after(self._cursor)
                last = self.spool.last_committed
                if not rows and not (last and self._cursor >= last):
                    rows = await self.spool.fetch(self.name, self._cursor, max(room, FETCH_AHEAD))
                self._caught_up = not rows
                if not rows:
                    await self._wake.wait()
                    continue
                self._cursor = rows[-1].seq
                if self.settings.batch > 1:
                    # Each device's rows together (stable: each in seq order), so a
                    # backlog goes out as batches.
                    first: dict[str, int] = {}
                    rows = sorted(
                        rows, key=lambda r: first.setdefault(r.reading.device_id, len(first))
                    )
                self._pending.extend(rows)
            self._publish_pending(room)

    def _take(self) -> list[Row]:
        """The next rows for one message: one, or up to ``batch`` of one device."""
        pending = self._pending
        rows = [pending.popleft()]
        device = rows[0].reading.device_id
        limit = self.settings.batch
        while pending and len(rows) < limit and pending[0].reading.device_id == device:
            rows.append(pending.popleft())
        return rows

    def _publish_pending(self, room: int) -> None:
        pending = self._pending
        while room > 0 and pending:
            if self._client is None or not self.stats.connected:
                return
            rows = self._take()
            try:
                if len(rows) > 1:
                    message, used = self.wire.encode_batch(rows, BATCH_BYTES)
                    pending.extendleft(reversed(rows[used:]))
                    del rows[used:]
                    messages = [message]
                else:
                    messages = self.wire.encode(rows[0].seq, rows[0].reading)
            except Exception:  # a row this format cannot carry must not stop delivery
                self.stats.unencodable += len(rows)
                log.exception(
                    "mqtt %s: seq %d-%d cannot be encoded as %s; skipped (%d so far)",
                    self.name,
                    rows[0].seq,
                    rows[-1].seq,
                    self.settings.payload,
                    self.stats.unencodable,
                )
                messages = []
            if not messages:  # nothing to send for them: they are done for this destination
                self._acked.extend(r.seq for r in rows)
                self._acks_pending.set()
                continue
            *control, data = messages
            self._send(control)
            mid = self._publish(data)
            if mid is None:
                pending.extendleft(reversed(rows))
                return
            self._inflight[mid] = rows
            self.stats.published += len(rows)
            room -= 1
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
        if generation != self._generation:
            return
        self._session_ok = True
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
        if generation != self._generation:
            return
        self._session_ended.set()
        if generation != self._active:
            return
        was_connected = self.stats.connected
        self.stats.connected = False
        self._client = None
        # Everything not acknowledged goes out again, first and in order, on the next session.
        unacked = [
            r for rows in sorted(self._inflight.values(), key=lambda rs: rs[0].seq) for r in rows
        ]
        self._inflight.clear()
        self.stats.resent += len(unacked)
        self._pending.extendleft(reversed(unacked))
        if was_connected and not self._stopping.is_set():  # a close is not a failure
            self.failures.failure(f"connection lost ({reason})", "reconnecting with backoff")
        self._wake.set()

    def _on_published(self, generation: int, mid: int) -> None:
        if generation != self._active:
            return
        rows = self._inflight.pop(mid, None)
        if rows is not None:
            self._acked.extend(r.seq for r in rows)
            self._acks_pending.set()
            self.stats.acked += len(rows)
            self._wake.set()
        else:
            waiter = self._control_waiters.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _delivered(self) -> bool:
        """Everything committed so far has been published and acknowledged."""
        return (
            self._caught_up and not self._wake.is_set() and not self._pending and not self._inflight
        )

    async def close(self, *, timeout: float = 5.0, drain: float = STOP_DRAIN) -> None:
        """Deliver what the last polls committed (up to ``drain`` seconds), publish the
        wire's farewell (offline status, NDEATH), disconnect cleanly."""
        deadline = time.monotonic() + drain
        while self.stats.connected and not self._delivered() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stopping.set()
        client = self._client
        if client is not None and self.stats.connected:
            farewell = self.wire.closing()
            if farewell is not None:
                info = client.publish(
                    farewell.topic, farewell.payload, qos=farewell.qos, retain=farewell.retain
                )
                if farewell.qos > 0:
                    waiter = asyncio.get_running_loop().create_future()
                    self._control_waiters[info.mid] = waiter
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, timeout)
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._session_ended.wait(), timeout)
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.flush_acks()
        self.spool.unlisten(self._wake)

    # ---- connection -------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            # One round: every host in order (a cluster's nodes, a primary then its standby),
            # starting again from the first, so the gateway returns to the primary.
            for host, port in self.settings.endpoints:
                if self._stopping.is_set():
                    return
                if await self._session(host, port):
                    attempt = 0
                    break  # the session ended: start the next round at the first host
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._backoff(attempt))

    async def _session(self, host: str, port: int) -> bool:
        """One connection to one host, run until it ends; whether it got a session."""
        self._generation += 1
        generation = self._generation
        self._session_ok = False
        self._session_ended = asyncio.Event()
        endpoint = f"{host}:{port}"
        client = self._new_client(generation, endpoint)
        try:
            await _in_thread(lambda: self._connect(client, host, port), _close_socket(client))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._note_error(f"cannot connect to {endpoint}: {exc}")
            return False
        loop = asyncio.get_running_loop()
        sock = client.socket()
        if not isinstance(sock, socket.socket):
            self._note_error(f"cannot connect to {endpoint}: no socket")
            return False
        misc: asyncio.TimerHandle | None = None

        def housekeeping() -> None:
            nonlocal misc
            if client.loop_misc() == paho.MQTT_ERR_SUCCESS:
                misc = loop.call_later(MISC_INTERVAL, housekeeping)

        tls = sock if isinstance(sock, ssl.SSLSocket) else None

        def readable() -> None:
            client.loop_read()
            # TLS: records already decrypted into the SSL object do not wake epoll.
            if tls is not None and tls.pending() and client.socket() is tls:
                loop.call_soon(readable)

        def closed(_c: Any, _u: Any, s: Any) -> None:
            # paho tells why (on_disconnect) right after closing the socket.
            loop.remove_reader(s)
            loop.remove_writer(s)
            self._session_ended.set()

        def want_write(_c: Any, _u: Any, s: Any) -> None:
            loop.add_writer(s, client.loop_write)

        def written(_c: Any, _u: Any, s: Any) -> None:
            loop.remove_writer(s)

        client.on_socket_close = closed
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = written
        loop.add_reader(sock, readable)
        if client.want_write():
            loop.add_writer(sock, client.loop_write)
        misc = loop.call_later(MISC_INTERVAL, housekeeping)
        try:
            await self._session_ended.wait()
        finally:
            if misc is not None:
                misc.cancel()
            if client.socket() is not None:
                loop.remove_reader(sock)
                loop.remove_writer(sock)
                _close_socket(client)()
            if generation == self._generation:
                self._on_disconnected(generation, "network loop ended")
        return self._session_ok

    def _connect(self, client: paho.Client, host: str, port: int) -> None:
        """Blocking TCP connect and TLS handshake (in a thread); sends CONNECT."""
        s = self.settings
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            client.connect(host, port, s.keepalive, clean_start=True, properties=props)
        else:
            client.connect(host, port, s.keepalive)

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

        # Callbacks run on the event loop, inside loop_read/loop_write.
        def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc.is_failure:
                self._note_error(f"broker refused the connection: {rc}")
            else:
                self._on_connected(generation, c, endpoint)

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            self._on_disconnected(generation, str(rc))

        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
            self._on_published(generation, mid)

        def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
            if len(message.payload) <= MAX_INCOMING:
                self._on_message(generation, message.topic, bytes(message.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    def _note_error(self, message: str) -> None:
        self.failures.failure(message, "retrying with backoff; readings stay in the buffer")
        self.stats.last_error = message

    def _backoff(self, attempt: int) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))


def _close_socket(client: paho.Client) -> Callable[[], None]:
    """A function closing ``client``'s socket, if it has one (after a cancelled connect)."""

    def close() -> None:
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    return close


async def _in_thread(fn: Callable[[], T], cleanup: Callable[[], None]) -> T:
    """Run blocking ``fn`` in a daemon thread (a connect to a black-holed host must not
    hold up the process's exit); if the caller is cancelled meanwhile, ``cleanup`` runs
    once ``fn`` has returned."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the awaiting side
            future.set_exception(exc)

    threading.Thread(target=work, name="mqtt-connect", daemon=True).start()
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda _f: cleanup())
        raise
