"""The running agent's state, served on a local Unix socket for ``swm-edge status``.

Three parts:

* :func:`build_snapshot` turns the agent's counters (:class:`~swm_edge.scheduler.DeviceStats`,
  :class:`~swm_edge.publish.mqtt.DestinationStats`, :class:`~swm_edge.buffer.BufferStats`, the
  buses' state) into a JSON-ready :class:`StatusSnapshot`. It is pure and holds no secret:
  the broker's host and port, never its user name, password or key files.
* :class:`StatusServer`, an asyncio server the agent starts once its buffer is open and stops
  on shutdown.
* :func:`query` and :func:`request_status`, a small blocking client for the CLI.

Permission model: the socket is created mode 0660 (by umask, so it is never more open, not
even for a moment) and belongs to the agent's user and group. The systemd unit runs the
agent as ``swm-edge:swm-edge``, so root and members of the ``swm-edge`` group (technicians:
``usermod -aG swm-edge NAME``) can query it; nobody else can connect. The folder it lives in
(by default the buffer's, ``/var/lib/swm-edge`` = the unit's StateDirectory) must let them
reach it. The socket only reports state; no request changes anything.

Protocol: the client sends one JSON object on one line, at most :data:`MAX_REQUEST` bytes
with its newline, e.g. ``{"command": "status"}``; the server answers with one JSON line,
``{"ok": true, "status": {...}}``, or ``{"ok": false, "error": "..."}`` for anything it does
not accept, then closes the connection. Commands: ``status`` and ``ping`` (which answers
``{"ok": true, "pid": ..., "version": ...}``, used to tell a live agent from a stale socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

# pydantic validates only typing_extensions' TypedDict on Python < 3.12 (it is one of
# pydantic's own dependencies).
from typing_extensions import TypedDict

from swm_edge import __version__
from swm_edge.buffer import BufferStats
from swm_edge.clock import ClockSnapshot
from swm_edge.model import DeviceSpec
from swm_edge.publish.encoders.json_v1 import iso_ms
from swm_edge.publish.mqtt import DestinationStats
from swm_edge.scheduler import DeviceStats

if TYPE_CHECKING:
    from swm_edge.agent import Agent

__all__ = [
    "COMMANDS",
    "MAX_REQUEST",
    "MAX_RESPONSE",
    "SOCKET_MODE",
    "AgentRunningError",
    "BufferStatus",
    "BusState",
    "BusStatus",
    "ClockStatus",
    "ClockStepStatus",
    "DeviceStatus",
    "MqttStatus",
    "NoAgentError",
    "StatusError",
    "StatusServer",
    "StatusSnapshot",
    "agent_snapshot",
    "build_snapshot",
    "query",
    "request_status",
]

log = logging.getLogger(__name__)

#: Largest request, newline included: a command name needs a few dozen bytes.
MAX_REQUEST = 1024
#: Largest answer the client reads: a snapshot is about 400 bytes per device.
MAX_RESPONSE = 4 * 1024 * 1024
#: rw for the agent's user and group, nothing for others.
SOCKET_MODE = 0o660
#: What the server understands.
COMMANDS = ("ping", "status")

# Seconds a connected client has to send its request line: a client that connects and
# says nothing must not hold one of the few connection slots.
REQUEST_TIMEOUT = 5.0
# Connections served at once; more are answered "busy" (status is for a person or a probe,
# not for a crowd, and each answer may wait on the buffer's thread).
MAX_CLIENTS = 8
# How long a status waits for the buffer's figures: the buffer thread may be busy with a
# large commit on a slow SD card, and the rest of the status is worth having meanwhile.
BUFFER_STATS_TIMEOUT = 2.0
# How long a starting agent waits for an answer from whatever listens on its socket.
PROBE_TIMEOUT = 2.0
# umask while the socket is bound: 0777 & ~0117 = 0660.
_BIND_UMASK = 0o777 & ~SOCKET_MODE


# ---- the snapshot -------------------------------------------------------------------


@with_config(ConfigDict(extra="allow"))
class MqttStatus(TypedDict):
    """The broker connection. No credentials, only where it goes."""

    connected: bool
    host: str
    port: int
    last_error: str | None
    published: int
    acked: int
    resent: int
    connects: int
    connected_since: str | None


class DestinationStatus(MqttStatus):
    """One destination of several: its connection, name and payload format."""

    name: str
    payload: str
    endpoint: str | None  # the host:port of the connection, one of the destination's hosts


@dataclass(frozen=True)
class DestinationView:
    """What the snapshot shows of one destination."""

    name: str
    payload: str
    host: str
    port: int
    stats: DestinationStats


@with_config(ConfigDict(extra="allow"))
class BufferStatus(TypedDict):
    """The buffer. The figures are ``None`` only when ``error`` says why they are missing."""

    depth: int | None
    oldest_age_s: float | None
    dropped: int | None
    size_bytes: int | None
    queued: int
    error: str | None
    #: What is wrong with the storage now (disk full, read-only, ...), and the readings held
    #: in memory meanwhile and dropped from memory; missing from older agents.
    condition: NotRequired[str | None]
    held: NotRequired[int]
    lost: NotRequired[int]


@with_config(ConfigDict(extra="allow"))
class DeviceStatus(TypedDict):
    """One device: when it was last read, how that went, and its counters."""

    bus: str
    interval: float
    last_read: str | None
    last_read_age_s: float | None
    quality: str | None
    polls: int
    good_polls: int
    errors: int
    overruns: int
    offline: bool
    consecutive_failures: int
    last_error: str | None


@with_config(ConfigDict(extra="allow"))
class BusStatus(TypedDict):
    """One bus (line or connection)."""

    type: str
    open: bool
    opens: int
    last_error: str | None


@with_config(ConfigDict(extra="allow"))
class ClockStepStatus(TypedDict):
    """The last step of the wall clock: seconds (+ forward) and when (ISO 8601, new time)."""

    size_s: float
    at: str | None


@with_config(ConfigDict(extra="allow"))
class ClockStatus(TypedDict):
    """The wall clock (see :class:`~swm_edge.clock.ClockMonitor`).

    ``synchronized``: the kernel's word (``None``: unknown); ``trusted``: readings taken now
    are not flagged; ``flagged_readings``: readings flagged ``unsynchronized`` since start.
    """

    synchronized: bool | None
    trusted: bool
    steps: int
    last_step: ClockStepStatus | None
    flagged_readings: int


@with_config(ConfigDict(extra="allow"))
class StatusSnapshot(TypedDict):
    """What ``swm-edge status --json`` prints. Times are ISO 8601 UTC, ages in seconds.

    ``clock`` is missing from an agent that does not watch its clock (older versions).
    """

    gateway: str
    version: str
    pid: int
    started: str
    now: str
    uptime_s: float
    mqtt: MqttStatus
    buffer: BufferStatus
    devices: dict[str, DeviceStatus]
    buses: dict[str, BusStatus]
    clock: NotRequired[ClockStatus]
    #: Every destination (``mqtt`` is the first of them); missing from older agents.
    destinations: NotRequired[list[DestinationStatus]]


@functools.cache
def _snapshot_adapter() -> TypeAdapter[StatusSnapshot]:
    # Built on first use: the agent never validates, only the client does.
    return TypeAdapter(StatusSnapshot)


@dataclass(frozen=True)
class BusState:
    """A bus's state as the snapshot shows it (see :class:`~swm_edge.bus.Bus`)."""

    type: str
    open: bool
    opens: int
    last_error: str | None


def _age(now: float, ts: float | None) -> float | None:
    if ts is None or not math.isfinite(ts):
        return None  # a NaN ts is a row stored under a broken clock: its age is unknown
    # A clock stepped back by NTP must not show a negative age.
    return round(max(0.0, now - ts), 3)


def _iso(ts: float | None) -> str | None:
    return iso_ms(ts) if ts is not None and math.isfinite(ts) else None


def build_snapshot(
    *,
    gateway_id: str,
    pid: int,
    started: float,
    now: float,
    uptime_s: float,
    broker_host: str,
    broker_port: int,
    mqtt: DestinationStats,
    buffer: BufferStats | None,
    queued: int,
    devices: Iterable[tuple[DeviceSpec, DeviceStats]],
    buses: Mapping[str, BusState],
    buffer_error: str | None = None,
    clock: ClockSnapshot | None = None,
    destinations: Sequence[DestinationView] = (),
    storage: tuple[str | None, int, int] = (None, 0, 0),
) -> StatusSnapshot:
    """The agent's state as a JSON-ready mapping (pure: no clock, no I/O).

    ``started`` and ``now`` are wall-clock times; ``uptime_s`` comes from a monotonic clock
    so a clock step does not change it. ``buffer`` is ``None`` when its figures could not
    be read, with the reason in ``buffer_error``. ``clock`` is the clock monitor's
    snapshot; without it the snapshot has no ``clock`` section.
    """
    device_docs: dict[str, DeviceStatus] = {}
    for spec, stats in devices:
        device_docs[spec.id] = {
            "bus": spec.bus,
            "interval": spec.interval,
            "last_read": _iso(stats.last_read),
            "last_read_age_s": _age(now, stats.last_read),
            "quality": None if stats.last_quality is None else str(stats.last_quality),
            "polls": stats.polls,
            "good_polls": stats.good_polls,
            "errors": stats.errors,
            "overruns": stats.overruns,
            "offline": stats.offline,
            "consecutive_failures": stats.consecutive_failures,
            "last_error": stats.last_error,
        }
    snap: StatusSnapshot = {
        "gateway": gateway_id,
        "version": __version__,
        "pid": pid,
        "started": iso_ms(started),
        "now": iso_ms(now),
        "uptime_s": round(max(0.0, uptime_s), 3),
        "mqtt": {
            "connected": mqtt.connected,
            "host": broker_host,
            "port": broker_port,
            "last_error": mqtt.last_error,
            "published": mqtt.published,
            "acked": mqtt.acked,
            "resent": mqtt.resent,
            "connects": mqtt.connects,
            "connected_since": _iso(mqtt.connected_since) if mqtt.connected else None,
        },
        "buffer": {
            "depth": None if buffer is None else buffer.depth,
            "oldest_age_s": None if buffer is None else _age(now, buffer.oldest_ts),
            "dropped": None if buffer is None else buffer.dropped,
            "size_bytes": None if buffer is None else buffer.size_bytes,
            "queued": queued,
            "error": buffer_error if buffer is None else None,
            "condition": storage[0],
            "held": storage[1],
            "lost": storage[2],
        },
        "devices": device_docs,
        "buses": {
            bus_id: {
                "type": state.type,
                "open": state.open,
                "opens": state.opens,
                "last_error": state.last_error,
            }
            for bus_id, state in buses.items()
        },
    }
    if destinations:
        snap["destinations"] = [
            {
                "name": d.name,
                "payload": d.payload,
                "endpoint": d.stats.endpoint,
                "connected": d.stats.connected,
                "host": d.host,
                "port": d.port,
                "last_error": d.stats.last_error,
                "published": d.stats.published,
                "acked": d.stats.acked,
                "resent": d.stats.resent,
                "connects": d.stats.connects,
                "connected_since": _iso(d.stats.connected_since) if d.stats.connected else None,
            }
            for d in destinations
        ]
    if clock is not None:
        step = clock["last_step"]
        snap["clock"] = {
            "synchronized": clock["synchronized"],
            "trusted": clock["trusted"],
            "steps": clock["steps"],
            "last_step": None if step is None else {"size_s": step["size_s"], "at": step["at"]},
            "flagged_readings": clock["flagged_readings"],
        }
    return snap


async def agent_snapshot(agent: Agent) -> StatusSnapshot:
    """Collect a running agent's figures and build its snapshot."""
    buffer: BufferStats | None = None
    buffer_error: str | None = None
    try:
        buffer = await asyncio.wait_for(agent.spool.stats(), BUFFER_STATS_TIMEOUT)
    except TimeoutError:
        buffer_error = (
            f"the buffer did not answer within {BUFFER_STATS_TIMEOUT:g} s (slow or busy disk?)"
        )
    except Exception as exc:  # a failing disk is exactly what a status must still show
        buffer_error = f"cannot read the buffer's figures: {exc}"
    settings = agent.destination.settings
    # getattr: the clock monitor is optional for this module (an agent built without one
    # reports no clock section). Its snapshot is cheap (at most one adjtimex) and never
    # raises for a clock problem: that is what it reports.
    monitor = getattr(agent, "clock", None)
    clock: ClockSnapshot | None = None if monitor is None else monitor.snapshot()
    return build_snapshot(
        gateway_id=agent.loaded.config.gateway.id,
        pid=os.getpid(),
        started=agent.started_wall,
        now=time.time(),
        uptime_s=time.monotonic() - agent.started_monotonic,
        broker_host=settings.host,
        broker_port=settings.port,
        mqtt=agent.destination.stats,
        buffer=buffer,
        queued=agent.spool.queued,
        devices=[(p.device, p.stats) for p in agent.pollers],
        buses={
            bus_id: BusState(bus.spec.type, bus.line.is_open, bus.opens, bus.last_error)
            for bus_id, bus in agent.buses.items()
        },
        buffer_error=buffer_error,
        clock=clock,
        destinations=[
            DestinationView(d.name, d.settings.payload, d.settings.host, d.settings.port, d.stats)
            for d in agent.destinations.values()
        ],
        storage=(agent.spool.condition, agent.spool.held, agent.spool.lost),
    )


# ---- the server ---------------------------------------------------------------------


class AgentRunningError(OSError):
    """Another agent answers on the status socket: this one must not start.

    An ``OSError`` so that ``swm-edge run`` reports it like any other file it cannot use.
    """


class _BadRequest(Exception):
    pass


def _parse_request(line: bytes) -> str:
    """The command of one request line; :class:`_BadRequest` says what is wrong with it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("the request is not UTF-8") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise _BadRequest('the request is not JSON; send {"command": "status"}') from None
    if not isinstance(doc, dict):
        raise _BadRequest('the request must be a JSON object, e.g. {"command": "status"}')
    extra = sorted(str(k) for k in doc if k != "command")
    if extra:
        raise _BadRequest(f"unknown key(s) {', '.join(extra)[:100]}; a request has only 'command'")
    command = doc.get("command")
    if not isinstance(command, str):
        raise _BadRequest("'command' must be a string")
    if command not in COMMANDS:
        raise _BadRequest(f"unknown command {command[:40]!r}; known: {', '.join(COMMANDS)}")
    return command


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


class StatusServer:
    """Answers status requests on a Unix socket.

    Args:
        path: the socket. A stale socket (nothing listens on it: an agent was killed) is
            replaced; a live one makes :meth:`start` raise :class:`AgentRunningError`.
        snapshot: makes the current :class:`StatusSnapshot`.
    """

    def __init__(self, path: Path, snapshot: Callable[[], Awaitable[StatusSnapshot]]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (mode 0660) and serve.

        Raises:
            AgentRunningError: another agent answers on the socket, or the path is taken
                by something that is not a socket.
            OSError: the socket cannot be created (folder missing and not creatable...).
        """
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
        except AgentRunningError:
            raise
        except OSError as exc:
            raise OSError(f"cannot create the status socket {path}: {exc.strerror or exc}") from exc
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The umask is process-wide; the agent sets it only for this call, before it
            # starts the threads that publish or poll (the buffer's thread is idle here).
            old = os.umask(_BIND_UMASK)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST, backlog=MAX_CLIENTS
            )
        except OSError as exc:
            sock.close()
            self._unlink_own()
            if exc.errno == errno.EADDRINUSE:  # another agent bound it since we looked
                raise AgentRunningError(
                    f"another swm-edge agent is running with this config (status socket {path})"
                ) from None
            raise OSError(f"cannot create the status socket {path}: {exc.strerror or exc}") from exc
        log.info("status socket %s (mode 0660)", path)

    def _remove_stale(self) -> None:
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise AgentRunningError(
                f"{path} exists and is not a socket; move it away or set status_socket "
                "to another path"
            )
        answer = _probe(path)
        if answer is None:
            # Nothing listens: an agent that was killed (kill -9, power cut) left it.
            os.unlink(path)
            log.info("replaced the stale status socket %s of an agent that did not stop", path)
            return
        pid = answer.get("pid") if isinstance(answer, dict) else None
        who = f" (pid {pid})" if isinstance(pid, int) else ""
        raise AgentRunningError(
            f"another swm-edge agent{who} is running with this config: it answers on {path}; "
            "stop it first (systemctl stop swm-edge)"
        )

    async def stop(self) -> None:
        """Stop serving, end open connections and remove the socket (if still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            for task in list(self._handlers):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.wait_closed()
        self._unlink_own()

    def _unlink_own(self) -> None:
        # Only the socket this server bound: never one another agent made in the meantime.
        if self._inode is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self._handlers) > MAX_CLIENTS:
                answer: Mapping[str, Any] = _error("busy: too many status requests at once")
            else:
                answer = await self._answer(reader)
            writer.write(_encode(answer))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to tell anyone
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader) -> Mapping[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            # EOF without a newline (e.g. `printf ... | socat`): the bytes are the request.
            line = exc.partial
            if not line:
                return _error("empty request")
        except asyncio.LimitOverrunError:
            return _error(f"request too long: at most {MAX_REQUEST} bytes, one line")
        except TimeoutError:
            return _error(f"no request line within {REQUEST_TIMEOUT:g} s")
        if len(line) > MAX_REQUEST:
            return _error(f"request too long: at most {MAX_REQUEST} bytes, one line")
        try:
            command = _parse_request(line)
        except _BadRequest as exc:
            return _error(str(exc))
        if command == "ping":
            return {"ok": True, "pid": os.getpid(), "version": __version__}
        try:
            snapshot = await self._snapshot()
            # Encoded here so a value JSON cannot carry (a NaN) is an error answer, not a
            # dropped connection.
            _encode(snapshot)
        except Exception as exc:
            log.warning("status: cannot build the snapshot: %s", exc, exc_info=True)
            return _error(f"internal error: {exc}")
        return {"ok": True, "status": snapshot}


def _probe(path: Path) -> dict[str, Any] | None:
    """Ping whatever listens on ``path``: its answer, ``{}`` if it answered nonsense or
    not in time, or ``None`` when nothing listens (a stale socket)."""
    try:
        return query(path, "ping", timeout=PROBE_TIMEOUT)
    except NoAgentError:
        return None
    except StatusError:
        return {}  # something accepted the connection: it is alive, whatever it is


# ---- the client ---------------------------------------------------------------------


class StatusError(Exception):
    """The status could not be obtained; the message says why, in one line."""


class NoAgentError(StatusError):
    """No agent runs with this config: the socket is missing, or stale (nothing listens)."""


def query(path: Path, command: str = "status", *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the agent at ``path`` and return its answer (a JSON object).

    The answer may be an error object (``{"ok": false, ...}``); this only checks that it
    is one bounded JSON line.

    Raises:
        NoAgentError: the socket does not exist, or nothing listens on it.
        StatusError: anything else (no permission, no answer in time, a garbled answer).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise NoAgentError(
                f"no agent is running with this config (no status socket {path})"
            ) from None
        except ConnectionRefusedError:
            raise NoAgentError(
                f"no agent is running with this config ({path} is stale: left by an agent "
                "that did not stop cleanly; the next agent replaces it)"
            ) from None
        except PermissionError:
            raise StatusError(_permission_message(path)) from None
        except OSError as exc:
            raise StatusError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        buf = bytearray()
        try:
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_RESPONSE:
                    raise StatusError(f"the answer on {path} is larger than {MAX_RESPONSE} bytes")
        except TimeoutError:
            raise StatusError(f"the agent did not answer within {timeout:g} s on {path}") from None
        except OSError as exc:
            raise StatusError(f"lost the connection to {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    line = bytes(buf).split(b"\n", 1)[0]
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        raise StatusError(f"the answer on {path} is not JSON: is it a swm-edge agent?") from None
    if not isinstance(doc, dict):
        raise StatusError(f"the answer on {path} is not a JSON object")
    return doc


def _permission_message(path: Path) -> str:
    group = "the agent's group"
    with contextlib.suppress(OSError, KeyError, ImportError):
        import grp

        group = f"group {grp.getgrgid(os.stat(path).st_gid).gr_name}"
    return f"permission denied on {path}: run as root or as a member of {group}"


def request_status(path: Path, *, timeout: float = 5.0) -> tuple[StatusSnapshot, dict[str, Any]]:
    """The agent's snapshot: checked (for display) and as it came (for ``--json``, which
    keeps keys a newer agent may add).

    Raises:
        NoAgentError: no agent runs with this socket.
        StatusError: the agent could not be asked, or answered with an error.
    """
    answer = query(path, "status", timeout=timeout)
    if answer.get("ok") is not True:
        error = answer.get("error")
        raise StatusError(f"the agent answered: {error if isinstance(error, str) else answer}")
    raw = answer.get("status")
    try:
        checked = _snapshot_adapter().validate_python(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StatusError(
            f"unexpected status from the agent at {where}: {first['msg']} "
            "(is the agent the same version as this command?)"
        ) from None
    assert isinstance(raw, dict)
    return checked, raw
