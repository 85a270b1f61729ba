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
import json
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

from swm_edge import __version__
from swm_edge.buffer import Row
from swm_edge.lograte import FailureLog
from swm_edge.model import Reading
from swm_edge.spool import Spool

log = logging.getLogger(__name__)

Encoder = Callable[[str, int, Reading], bytes]


@dataclass(frozen=True)
class BrokerSettings:
    """Everything needed to talk to one broker. ``password`` is never logged (repr=False)."""

    host: str
    port: int
    client_id: str
    gateway_id: str
    topic_prefix: str = "swm"
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
    last_error: str | None = None
    connected_since: float | None = None


def offline_payload(gateway_id: str) -> bytes:
    return json.dumps({"state": "offline", "gateway": gateway_id}).encode()


class Destination:
    """One broker: connection supervision, in-flight window, acked delete."""

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        spool: Spool,
        encoder: Encoder,
        *,
        ack_interval: float = 0.1,
    ) -> None:
        self.name = name
        self.settings = settings
        self.spool = spool
        self.encoder = encoder
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
        client, s = self._client, self.settings
        for i, row in enumerate(rows):
            if client is None or not self.stats.connected:
                self._resend[:0] = rows[i:]
                return
            payload = self.encoder(s.gateway_id, row.seq, row.reading)
            info = client.publish(s.telemetry_topic(row.reading.device_id), payload, qos=s.qos)
            self._inflight[info.mid] = row
            self.stats.published += 1
            if s.qos == 0:
                # QoS 0 has no acknowledgement: handing it to the socket is all we get.
                self._on_published(self._active, info.mid)

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

    def _on_connected(self, generation: int, client: paho.Client) -> None:
        self._active = generation
        self._client = client
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = time.time()
        self.stats.last_error = None
        if self.stats.connects == 1:
            log.info(
                "mqtt %s: connected to %s:%d", self.name, self.settings.host, self.settings.port
            )
        self.failures.success()
        status = {
            "state": "online",
            "gateway": self.settings.gateway_id,
            "version": __version__,
            "since": int(time.time()),
        }
        client.publish(self.settings.status_topic, json.dumps(status), qos=1, retain=True)
        self._wake.set()

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
        """Publish the offline status, disconnect cleanly, stop the network thread."""
        self._stop.set()
        client = self._client
        if client is not None and self.stats.connected:
            info = client.publish(
                self.settings.status_topic,
                offline_payload(self.settings.gateway_id),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(Exception):
                await asyncio.to_thread(info.wait_for_publish, timeout)
            client.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
        await self.flush_acks()
        self.spool.unlisten(self._wake)

    # ---- network thread -----------------------------------------------------------
    def _new_client(self, generation: int) -> paho.Client:
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
        client.will_set(s.status_topic, offline_payload(s.gateway_id), qos=1, retain=True)

        def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc.is_failure:
                self._post(self._note_error, f"broker refused the connection: {rc}")
            else:
                self._session_ok = True
                self._post(self._on_connected, generation, c)

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            self._post(self._on_disconnected, generation, str(rc))

        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
            self._post(self._on_published, generation, mid)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        return client

    def _note_error(self, message: str) -> None:
        self.failures.failure(message, "retrying with backoff; readings stay in the buffer")
        self.stats.last_error = message

    def _network_main(self) -> None:
        s = self.settings
        attempt = 0
        generation = 0
        while not self._stop.is_set():
            generation += 1
            self._session_ok = False
            client = self._new_client(generation)
            try:
                if s.protocol == "5":
                    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                    props.SessionExpiryInterval = 0
                    client.connect(s.host, s.port, s.keepalive, clean_start=True, properties=props)
                else:
                    client.connect(s.host, s.port, s.keepalive)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._post(self._note_error, f"cannot connect to {s.host}:{s.port}: {exc}")
            else:
                client.loop_forever()
                if self._session_ok:
                    attempt = 0
                self._post(self._on_disconnected, generation, "network loop ended")
            attempt += 1
            self._stop.wait(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))
