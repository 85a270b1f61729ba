"""A TCP proxy with switchable network faults, and an MQTT in-flight counter.

Put it between the agent and its broker (the agent's ``mqtt.host``/``port`` point at the
proxy) and switch, at run time, between::

    pass        bytes are forwarded as they come
    blackhole   nothing is forwarded either way and the sockets stay open: no FIN, no RST,
                as when a link silently drops everything; only keepalive notices. Bytes
                are not read meanwhile (the senders' TCP windows fill up) and flow again,
                in order, when the hole closes, as TCP would retransmit them.
    delay       every chunk is held ``delay`` seconds each way (latency; throughput stays)
    throttle    at most ``rate`` bytes/s each way

and, at any time, :meth:`NetProxy.reset` closes every connection with an RST (``SO_LINGER``
0) on both sides, and :meth:`NetProxy.refuse` stops listening, so a new connection is
refused (ECONNREFUSED), until :meth:`NetProxy.refuse` ``(False)``.

The proxy runs its own event loop in a background thread, so synchronous tests drive it::

    with NetProxy("127.0.0.1", broker.port) as proxy:     # listens on proxy.port
        proxy.blackhole(); time.sleep(10); proxy.passthrough()
        assert proxy.max_inflight <= 8

It also follows MQTT 3.1.1/5 on every connection (:class:`MqttInflight`): the QoS 1/2
PUBLISH packets the client sent and the broker has not yet acknowledged (PUBACK for QoS 1,
PUBCOMP for QoS 2, by packet id), and the most of them at one time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

__all__ = ["ConnectionStats", "MqttInflight", "NetProxy"]

T = TypeVar("T")
Mode = Literal["pass", "blackhole", "delay", "throttle"]

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 3, 4, 5, 6, 7
_MAX_REMAINING = 268_435_455  # the largest remaining length MQTT can encode (4 bytes)
_CHUNK = 65536


class MqttInflight:
    """Follows one MQTT connection's two byte streams, packet by packet, and counts the
    client's QoS 1/2 publishes the broker has not acknowledged.

    Feed it what the client sent (:meth:`from_client`) and what the broker sent
    (:meth:`from_broker`), in chunks of any size: a packet may be split anywhere. Only the
    fixed header and the few bytes up to the packet id are kept, never a payload, so memory
    stays bounded whatever comes. A stream that is not MQTT (a remaining length longer
    than 4 bytes) is flagged in :attr:`malformed` and no longer followed.
    """

    def __init__(self) -> None:
        self.outstanding: set[int] = set()
        self.max_outstanding = 0
        self.publishes = 0  # QoS 1/2 PUBLISH packets from the client (resends included)
        self.acks = 0  # PUBACK/PUBCOMP from the broker that released one
        self.malformed: str | None = None
        self._client = _PacketStream(self._client_packet)
        self._broker = _PacketStream(self._broker_packet)

    def from_client(self, data: bytes) -> None:
        self._feed(self._client, data, "client")

    def from_broker(self, data: bytes) -> None:
        self._feed(self._broker, data, "broker")

    def _feed(self, stream: _PacketStream, data: bytes, side: str) -> None:
        if self.malformed is not None:
            return
        try:
            stream.feed(data)
        except ValueError as exc:
            self.malformed = f"{side}: {exc}"

    def _client_packet(self, first: int, head: bytes) -> None:
        if first >> 4 != PUBLISH:
            return
        qos = (first >> 1) & 3
        if qos == 0:
            return
        if qos == 3:
            raise ValueError("PUBLISH with QoS 3")
        # head: topic length (2), topic, packet id (2); _PacketStream gives enough of it
        topic_len = struct.unpack_from("!H", head)[0]
        (pid,) = struct.unpack_from("!H", head, 2 + topic_len)
        self.publishes += 1
        self.outstanding.add((qos << 16) | pid)
        self.max_outstanding = max(self.max_outstanding, len(self.outstanding))

    def _broker_packet(self, first: int, head: bytes) -> None:
        kind = first >> 4
        if kind not in (PUBACK, PUBCOMP):
            return
        (pid,) = struct.unpack_from("!H", head)
        key = ((1 if kind == PUBACK else 2) << 16) | pid
        if key in self.outstanding:
            self.outstanding.discard(key)
            self.acks += 1


class _PacketStream:
    """Splits one direction of an MQTT byte stream into packets, keeping only the bytes
    of the variable header a packet id is read from (see :meth:`_wanted`)."""

    def __init__(self, on_packet: Callable[[int, bytes], None]) -> None:
        self._on_packet = on_packet
        self._header = bytearray()  # fixed header being read: type byte + length bytes
        self._first = 0
        self._remaining = 0  # bytes of the current packet's body not consumed yet
        self._head = bytearray()  # the body's first bytes, as many as _wanted() says
        self._in_body = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i = 0
        n = len(view)
        while i < n:
            if not self._in_body:
                byte = view[i]
                i += 1
                self._header.append(byte)
                if len(self._header) == 1:
                    continue
                if byte & 0x80:
                    if len(self._header) == 5:
                        raise ValueError("remaining length longer than 4 bytes")
                    continue
                length = 0
                for k, b in enumerate(self._header[1:]):
                    length |= (b & 0x7F) << (7 * k)
                if length > _MAX_REMAINING:  # pragma: no cover - 4 bytes cannot exceed it
                    raise ValueError("remaining length too large")
                self._first = self._header[0]
                self._header.clear()
                self._remaining = length
                self._head.clear()
                self._in_body = True
                if length == 0:
                    self._finish()
                continue
            want = self._wanted()
            if len(self._head) < want:
                take = min(want - len(self._head), self._remaining, n - i)
                self._head += view[i : i + take]
            else:
                take = min(self._remaining, n - i)
            i += take
            self._remaining -= take
            if self._remaining == 0:
                self._finish()

    def _wanted(self) -> int:
        """How many body bytes the packet id needs: for a PUBLISH with QoS > 0, the topic
        length, the topic and the id; for the acknowledgements, the id; else none."""
        kind = self._first >> 4
        if kind == PUBLISH and (self._first >> 1) & 3:
            if len(self._head) < 2:
                return 2
            return 2 + int.from_bytes(self._head[:2], "big") + 2
        if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            return 2
        return 0

    def _finish(self) -> None:
        self._in_body = False
        if len(self._head) < self._wanted():
            raise ValueError(f"packet type {self._first >> 4} too short for its packet id")
        first, head = self._first, bytes(self._head)
        self._head.clear()
        self._on_packet(first, head)


@dataclass
class ConnectionStats:
    """One proxied connection."""

    opened: float
    closed: float | None = None
    how: str = ""  # "eof-client", "eof-broker", "error", "reset", "stopped"
    to_broker: int = 0  # bytes forwarded
    to_client: int = 0
    mqtt: MqttInflight = field(default_factory=MqttInflight)


class _Conn:
    def __init__(
        self, client: tuple[asyncio.StreamReader, asyncio.StreamWriter], stats: ConnectionStats
    ) -> None:
        self.client_reader, self.client_writer = client
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.stats = stats
        self.tasks: list[asyncio.Task[None]] = []
        self.done = asyncio.Event()


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class NetProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` with run-time faults; see the module
    docstring. ``port=0`` listens on a free port (:attr:`port` after :meth:`start`)."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._rate = 0.0
        self._refusing = False
        self.connections: list[ConnectionStats] = []
        self.resets = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None

    # ---- life cycle (any thread) ------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="NetProxy", daemon=True)
        self._thread.start()
        self._call(self._setup())
        return self

    def stop(self) -> None:
        """Close every connection (RST) and the listener, and end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- faults (any thread) ----------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    def passthrough(self) -> None:
        """Forward everything (also what a black hole held back)."""
        self._set("pass")

    def blackhole(self) -> None:
        """Forward nothing, either way, and keep the sockets open."""
        self._set("blackhole")

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it, each way."""
        self._set("delay", delay=seconds)

    def throttle(self, bytes_per_second: float) -> None:
        """Forward at most ``bytes_per_second`` each way."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")
        self._set("throttle", rate=bytes_per_second)

    def reset(self, *, refuse: bool | None = None) -> int:
        """Close every open connection with an RST; returns how many. With ``refuse``,
        also stop (True) or resume (False) accepting new connections."""
        if refuse is not None:
            self.refuse(refuse)
        return self._call(self._reset_all())

    def refuse(self, refusing: bool = True) -> None:
        """Stop listening, so connections are refused, or (False) listen again."""
        self._call(self._set_refusing(refusing))

    # ---- what was seen (any thread) ----------------------------------------------------
    @property
    def max_inflight(self) -> int:
        """The most QoS 1/2 publishes one connection had unacknowledged at one time."""
        with self._lock:
            return max((c.mqtt.max_outstanding for c in self.connections), default=0)

    @property
    def publishes(self) -> int:
        with self._lock:
            return sum(c.mqtt.publishes for c in self.connections)

    @property
    def malformed(self) -> list[str]:
        with self._lock:
            return [c.mqtt.malformed for c in self.connections if c.mqtt.malformed]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self.connections if c.closed is None)

    # ---- event loop side ---------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _set(self, mode: Mode, *, delay: float = 0.0, rate: float = 0.0) -> None:
        async def apply() -> None:
            self._mode, self._delay, self._rate = mode, delay, rate
            assert self._flowing is not None and self._changed is not None
            if mode == "blackhole":
                self._flowing.clear()
            else:
                self._flowing.set()
            self._changed.set()
            self._changed = asyncio.Event()

        self._call(apply())

    async def _setup(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._changed = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _set_refusing(self, refusing: bool) -> None:
        if refusing == self._refusing:
            return
        self._refusing = refusing
        if refusing:
            if self._server is not None:
                # close() stops listening at once; no wait_closed(), which (Python 3.12+)
                # would wait for the open connections to end
                self._server.close()
                self._server = None
        else:
            await self._listen()

    async def _reset_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            self._close(conn, "reset", rst=True)
        self.resets += len(conns)
        return len(conns)

    async def _shutdown(self) -> None:
        for conn in list(self._conns):
            self._close(conn, "stopped", rst=True)
        if self._server is not None:
            self._server.close()
            self._server = None
        await asyncio.sleep(0)

    def _close(self, conn: _Conn, how: str, *, rst: bool) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        with self._lock:
            conn.stats.closed = time.monotonic()
            conn.stats.how = how
        for writer in (conn.client_writer, conn.upstream_writer):
            if writer is None:
                continue
            if rst:
                _abort_with_rst(writer)
            else:
                writer.close()
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        conn.done.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = ConnectionStats(opened=time.monotonic())
        conn = _Conn((reader, writer), stats)
        with self._lock:
            self.connections.append(stats)
        self._conns.add(conn)
        assert self._flowing is not None
        try:
            await self._flowing.wait()  # a black hole lets no SYN through either
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            # the upstream is down: the client sees the connection reset, as when the
            # broker host answers a SYN with an RST
            self._close(conn, "upstream-refused", rst=True)
            return
        except asyncio.CancelledError:
            self._close(conn, "stopped", rst=True)
            raise
        if conn not in self._conns:  # reset while connecting
            _abort_with_rst(up_writer)
            return
        conn.upstream_writer = up_writer
        queue_up: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(64)
        queue_down: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(64)
        conn.tasks = [
            asyncio.create_task(self._read(conn, reader, queue_up, stats.mqtt.from_client)),
            asyncio.create_task(self._write(conn, up_writer, queue_up, "to_broker")),
            asyncio.create_task(self._read(conn, up_reader, queue_down, stats.mqtt.from_broker)),
            asyncio.create_task(self._write(conn, writer, queue_down, "to_client")),
        ]
        await conn.done.wait()

    async def _read(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        follow: Callable[[bytes], None],
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    await queue.put(None)
                    return
                with self._lock:
                    follow(data)
                await queue.put((time.monotonic(), data))
        except asyncio.CancelledError:
            raise
        except OSError:
            self._close(conn, "error", rst=True)

    async def _write(
        self,
        conn: _Conn,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        counter: str,
    ) -> None:
        assert self._flowing is not None
        pending: deque[bytes] = deque()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    await self._flowing.wait()
                    with contextlib.suppress(OSError):
                        await writer.drain()
                    self._close(
                        conn, f"eof-{'client' if counter == 'to_broker' else 'broker'}", rst=False
                    )
                    return
                read_at, data = item
                pending.append(data)
                while pending:
                    await self._flowing.wait()
                    if self._mode == "delay":
                        wait = read_at + self._delay - time.monotonic()
                        if wait > 0:
                            await self._sleep_or_change(wait)
                            continue  # the mode may have changed meanwhile
                    chunk = pending.popleft()
                    if self._mode == "throttle" and self._rate > 0:
                        piece = max(1, int(self._rate / 20))  # ~50 ms slices
                        if len(chunk) > piece:
                            pending.appendleft(chunk[piece:])
                            chunk = chunk[:piece]
                        await self._sleep_or_change(len(chunk) / self._rate)
                        await self._flowing.wait()
                    writer.write(chunk)
                    with self._lock:
                        setattr(conn.stats, counter, getattr(conn.stats, counter) + len(chunk))
                    await writer.drain()
        except asyncio.CancelledError:
            raise
        except OSError:
            self._close(conn, "error", rst=True)

    async def _sleep_or_change(self, seconds: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)
