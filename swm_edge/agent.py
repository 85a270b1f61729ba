"""The agent: builds the data path from a validated config, runs it, stops it cleanly.

drivers → bus → scheduler → spool/buffer (SQLite) → publish (MQTT)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swm_edge.buffer import Buffer, BufferFileError, last_seq_of, move_aside
from swm_edge.bus import Bus
from swm_edge.clock import ClockMonitor
from swm_edge.config import ConfigError, LoadedConfig, load_config
from swm_edge.driver import load_driver
from swm_edge.lograte import FailureLog
from swm_edge.model import BusSpec, DeviceSpec, Reading
from swm_edge.notify import Notifier
from swm_edge.publish.mqtt import BrokerSettings, Destination
from swm_edge.publish.wire import make_wire
from swm_edge.scheduler import DevicePoller, Sink
from swm_edge.spool import Spool
from swm_edge.status import StatusServer, agent_snapshot

log = logging.getLogger(__name__)

# How long a stop waits for polls in flight (a serial poll with retries can take seconds).
STOP_GRACE = 10.0
# A poller without progress for this long (or longer, see DevicePoller.stall_limit) is hung.
STALL_MIN = 300.0
# A buffer write that has not returned after this long means the storage hangs.
SPOOL_STALL = 120.0
# Seconds between STATUS= updates when no watchdog asks for more.
STATUS_EVERY = 5.0


def broker_settings(loaded: LoadedConfig) -> list[BrokerSettings]:
    """Each destination's settings from the config, passwords read from their file/env."""
    cfg = loaded.config
    out = []
    for m in cfg.destinations:
        tls = m.tls
        (host, port), *more = m.endpoints()
        spb = m.sparkplug
        out.append(
            BrokerSettings(
                host=host,
                port=port,
                fallback_hosts=tuple(more),
                name=m.name,
                payload=m.payload,
                sparkplug_group_id=spb.group_id if spb is not None else None,
                sparkplug_edge_node_id=(spb.edge_node_id or cfg.gateway.id) if spb else None,
                client_id=m.client_id,
                gateway_id=cfg.gateway.id,
                topic_prefix=m.topic_prefix,
                username=m.username,
                password=m.read_password(),
                tls=tls is not None,
                ca_file=str(tls.ca_file) if tls is not None and tls.ca_file else None,
                cert_file=str(tls.cert_file) if tls is not None and tls.cert_file else None,
                key_file=str(tls.key_file) if tls is not None and tls.key_file else None,
                qos=m.qos,
                keepalive=m.keepalive,
                protocol=str(m.protocol),
                inflight=m.inflight,
                batch=m.batch,
                reconnect_min=m.reconnect_min,
                reconnect_max=m.reconnect_max,
            )
        )
    return out


def _with_bus_defaults(device: DeviceSpec, bus: BusSpec) -> DeviceSpec:
    if device.timeout is None:
        return dataclasses.replace(device, timeout=bus.timeout)
    return device


def clock_monitor(loaded: LoadedConfig) -> ClockMonitor:
    """The wall-clock watcher as configured (``clock:``)."""
    cfg = loaded.config.clock
    if cfg.require_sync:
        return ClockMonitor(step_threshold=cfg.step_threshold)
    return ClockMonitor(step_threshold=cfg.step_threshold, synchronized=lambda: None)


def build_pollers(
    loaded: LoadedConfig,
    buses: dict[str, Bus],
    sink: Sink,
    device_ids: Sequence[str] = (),
    clock: ClockMonitor | None = None,
) -> list[DevicePoller]:
    """A poller per configured device (or per listed id), each with its driver; readings
    are stamped by ``clock`` (default: one built from the config)."""
    clock = clock if clock is not None else clock_monitor(loaded)
    pollers = []
    for device in loaded.devices:
        if device_ids and device.id not in device_ids:
            continue
        bus = buses[device.bus]
        device = _with_bus_defaults(device, bus.spec)
        driver = load_driver(device.driver)(device)
        pollers.append(DevicePoller(device, driver, bus, sink, stamp=clock.stamp))
    return pollers


@dataclass
class _Poll:
    """A poller with its own stop signal, so a reload can stop one device alone."""

    poller: DevicePoller
    stop: asyncio.Event
    task: asyncio.Task[None]


class Agent:
    """One running gateway: buses, pollers, the buffer and the MQTT destination.

    It tells the service manager (``notifier``) when it is ready, what it is doing and,
    while every part of the data path makes progress, that it is alive (the watchdog).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        notifier: Notifier | None = None,
        stall_min: float = STALL_MIN,
    ) -> None:
        self.loaded = loaded
        self.notifier = notifier if notifier is not None else Notifier({})
        self.stall_min = stall_min
        cfg = loaded.config
        path = Path(cfg.buffer.path)
        max_bytes = int(cfg.buffer.max_mb * 1024 * 1024)
        destinations = broker_settings(loaded)

        def open_buffer(fresh: bool) -> Buffer:
            path.parent.mkdir(parents=True, exist_ok=True)
            names = [d.name for d in destinations]
            if not fresh:
                try:
                    return Buffer(path, max_bytes=max_bytes, destinations=names)
                except BufferFileError as exc:
                    if not exc.damaged:
                        raise
            # Damaged: keep it for `sqlite3 .recover`, start a new buffer whose seqs go on
            # after the old one's (or, if its last seq cannot be read, after any seq a
            # gateway could have used: milliseconds since 1970).
            last = last_seq_of(path)
            aside = move_aside(path)
            log.error(
                "buffer %s is damaged: moved to %s (nothing deleted; `sqlite3 %s .recover` may "
                "save its readings); starting a new buffer",
                path,
                aside,
                aside,
            )
            buffer = Buffer(path, max_bytes=max_bytes, destinations=names)
            buffer.raise_seq_floor(last if last is not None else int(time.time() * 1000))
            return buffer

        self.spool = Spool(open_buffer)
        self.clock = clock_monitor(loaded)
        self.buses = {spec.id: Bus(spec) for spec in loaded.buses}
        self._polls: dict[str, _Poll] = {}
        self._state_dir = path.parent
        self.destinations = {
            d.name: Destination(d, self.spool, make_wire(d, self._state_dir)) for d in destinations
        }
        self._publish_tasks: dict[str, asyncio.Task[None]] = {}
        self._spool_task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.reloads = 0  # applied reloads, for the status command and the tests
        self.watchdog_log = FailureLog(log, "watchdog")
        # Wall clock for display, monotonic for the uptime (a clock step must not change it).
        self.started_wall = time.time()
        self.started_monotonic = time.monotonic()
        self.status = StatusServer(cfg.status_socket_path(), lambda: agent_snapshot(self))

    @property
    def pollers(self) -> list[DevicePoller]:
        """The device pollers, in config order."""
        return [p.poller for p in self._polls.values()]

    async def run(self) -> None:
        """Run until :meth:`stop` is called; then finish polls in flight and shut down."""
        await self.spool.open()
        supervisor: asyncio.Task[None] | None = None
        try:
            # First, before any line is opened: a second agent on the same config stops
            # here (AgentRunningError) instead of fighting the first for its serial ports.
            await self.status.start()
            for bus in self.buses.values():
                await bus.start()
            self._spool_task = asyncio.create_task(self.spool.run(), name="spool")
            for destination in self.destinations.values():
                self._start_destination(destination)
            for poller in build_pollers(self.loaded, self.buses, self.spool.put, clock=self.clock):
                self._start_poll(poller)
            self.started.set()
            log.info(
                "agent %s running: %d buses, %d devices",
                self.loaded.config.gateway.id,
                len(self.buses),
                len(self._polls),
            )
            self.notifier.ready(self.summary())
            supervisor = asyncio.create_task(self._supervise(), name="supervisor")
            while not self.stopping.is_set():
                await _first(self.stopping, self._reload_requested)
                if self._reload_requested.is_set() and not self.stopping.is_set():
                    self._reload_requested.clear()
                    await self._reload()
            self.notifier.stopping()
            await self._stop_polls(list(self._polls))
            await self.spool.drain()
        finally:
            if supervisor is not None:
                supervisor.cancel()
            for name in list(self.destinations):
                await self._stop_destination(name)
            for task in (self._spool_task, supervisor):
                await _cancelled(task)
            for bus in self.buses.values():
                await bus.stop()
            # Stopped last but one, so `swm-edge status` still answers while polls finish
            # and the last acks are written.
            await self.status.stop()
            await self.spool.close()
            log.info("agent stopped")

    def stop(self) -> None:
        """Ask the agent to stop (safe from a signal handler on the loop)."""
        self.stopping.set()

    def request_reload(self) -> None:
        """Ask the agent to read its config file again (SIGHUP)."""
        self._reload_requested.set()

    @property
    def destination(self) -> Destination:
        """The first destination (the one a single ``mqtt:`` mapping configures)."""
        return next(iter(self.destinations.values()))

    # ---- destinations -----------------------------------------------------------------
    def _start_destination(self, destination: Destination) -> None:
        self.destinations[destination.name] = destination
        self._publish_tasks[destination.name] = asyncio.create_task(
            destination.run(), name=f"publish-{destination.name}"
        )

    async def _stop_destination(self, name: str) -> None:
        """Say goodbye on the wire, disconnect cleanly, stop delivering."""
        destination = self.destinations.pop(name)
        await destination.close()
        await _cancelled(self._publish_tasks.pop(name, None))

    # ---- pollers ----------------------------------------------------------------------
    def _start_poll(self, poller: DevicePoller) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop), name=f"poll-{poller.device.id}")
        self._polls[poller.device.id] = _Poll(poller, stop, task)

    async def _stop_polls(self, device_ids: Sequence[str]) -> None:
        """Stop these pollers: a poll in flight is finished and its reading queued."""
        polls = [self._polls.pop(i) for i in device_ids]
        for poll in polls:
            poll.stop.set()
        if polls:
            _done, late = await asyncio.wait([p.task for p in polls], timeout=STOP_GRACE)
            for task in late:
                task.cancel()
                await _cancelled(task)

    # ---- reload -----------------------------------------------------------------------
    async def _reload(self) -> None:
        path = self.loaded.path
        log.info("reloading the config from %s", path)
        self.notifier.reloading()
        try:
            loaded = await asyncio.to_thread(load_config, path)
            settings = broker_settings(loaded)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("%s", issue)
            log.error(
                "config reload failed: %d error(s) in %s; still running on the previous config",
                len(exc.issues),
                path,
            )
        except (OSError, LookupError) as exc:  # password file or variable missing
            log.error("config reload failed: %s; still running on the previous config", exc)
        else:
            await self.apply(loaded, settings)
        self.notifier.ready(self.summary())

    async def apply(
        self, loaded: LoadedConfig, settings: list[BrokerSettings] | None = None
    ) -> None:
        """Switch to a new, validated config without restarting: changed buses and devices
        are replaced (their polls in flight finished first), the MQTT session is kept when
        the broker settings did not change, and the buffer is kept as it is."""
        old = self.loaded.config
        new = loaded.config
        for what, before, after in (
            ("buffer.path", old.buffer.path, new.buffer.path),
            ("status socket", old.status_socket_path(), new.status_socket_path()),
        ):
            if before != after:
                log.warning("%s changed (%s -> %s): applies after a restart", what, before, after)
        if new.buffer.max_mb != old.buffer.max_mb:
            await self.spool.set_max_bytes(int(new.buffer.max_mb * 1024 * 1024))

        new_buses = {spec.id: spec for spec in loaded.buses}
        gone_buses = [i for i, bus in self.buses.items() if new_buses.get(i) != bus.spec]
        wanted = {d.id: d for d in loaded.devices}
        stale = []  # devices to stop: removed, changed, or on a bus that changed
        for device_id, poll in self._polls.items():
            device = wanted.get(device_id)
            if (
                device is None
                or poll.poller.device.bus in gone_buses
                or _with_bus_defaults(device, new_buses[device.bus]) != poll.poller.device
            ):
                stale.append(device_id)
        await self._stop_polls(stale)
        for bus_id in gone_buses:
            await self.buses.pop(bus_id).stop()
        for spec in loaded.buses:
            if spec.id not in self.buses:
                self.buses[spec.id] = bus = Bus(spec)
                await bus.start()
        self.loaded = loaded
        fresh = [d.id for d in loaded.devices if d.id not in self._polls]
        if new.clock != old.clock:
            self.clock = clock_monitor(loaded)
            for poll in self._polls.values():
                poll.poller.stamp = self.clock.stamp
        for poller in build_pollers(loaded, self.buses, self.spool.put, fresh, self.clock):
            self._start_poll(poller)
        # Keep the devices in config order (the status command lists them that way).
        self._polls = {d.id: self._polls[d.id] for d in loaded.devices}

        await self._apply_destinations(
            settings if settings is not None else broker_settings(loaded)
        )
        self.reloads += 1
        log.info(
            "config reloaded: %d buses, %d devices (%d restarted, %d removed, %d added)",
            len(self.buses),
            len(self._polls),
            len([i for i in stale if i in wanted]),
            len([i for i in stale if i not in wanted]),
            len([i for i in fresh if i not in stale]),
        )

    async def _apply_destinations(self, settings: list[BrokerSettings]) -> None:
        """Keep the destinations whose settings did not change (their sessions stay up),
        replace the changed ones, stop removed ones and start new ones."""
        wanted = {s.name: s for s in settings}
        for name, destination in list(self.destinations.items()):
            if wanted.get(name) != destination.settings:
                if name in wanted:
                    log.info("mqtt %s: settings changed, reconnecting", name)
                else:
                    log.info("mqtt %s: removed; its undelivered readings are discarded", name)
                await self._stop_destination(name)
        # The buffer's delivery bookkeeping follows: a new destination needs every stored
        # reading, a removed one no longer holds any back.
        await self.spool.set_destinations(list(wanted))
        for name, s in wanted.items():
            if name not in self.destinations:
                self._start_destination(Destination(s, self.spool, make_wire(s, self._state_dir)))
        # Keep config order (status lists them that way).
        self.destinations = {name: self.destinations[name] for name in wanted}

    # ---- health -----------------------------------------------------------------------
    def summary(self) -> str:
        """One line for ``systemctl status``."""
        pollers = self.pollers
        offline = sum(1 for p in pollers if p.stats.offline)
        down = sum(1 for b in self.buses.values() if not b.line.is_open)
        up = sum(1 for d in self.destinations.values() if d.stats.connected)
        mqtt = "connected" if up == len(self.destinations) else "disconnected"
        if 0 < up < len(self.destinations):
            mqtt = f"{up} of {len(self.destinations)} connected"
        clock = "" if self.clock.snapshot()["trusted"] else "; clock not synchronised"
        storage = "; BUFFER FAILING" if self.spool.condition else ""
        return (
            f"{len(pollers)} devices ({offline} offline) on {len(self.buses)} buses "
            f"({down} down); mqtt {mqtt}{clock}{storage}"
        )

    def stalled(self) -> str | None:
        """Why the data path is not making progress, or None when it is."""
        now = time.monotonic()
        tasks = [(f"publisher {n}", t) for n, t in self._publish_tasks.items()]
        for name, task in [*tasks, ("buffer writer", self._spool_task)]:
            if task is not None and task.done():
                return f"the {name} task ended"
        if (age := self.spool.busy_for(now)) > SPOOL_STALL:
            return f"a buffer write has not returned for {age:.0f} s"
        for poll in self._polls.values():
            poller = poll.poller
            if poll.task.done():
                return f"the poller of device {poller.device.id} ended"
            age = now - poller.heartbeat
            if age > poller.stall_limit(self.stall_min):
                return f"device {poller.device.id}: no progress for {age:.0f} s"
        return None

    async def _supervise(self) -> None:
        """Ping the watchdog while the data path makes progress; keep STATUS= current."""
        interval = self.notifier.watchdog_interval
        # Three pings per watchdog period: one late tick must not cost a restart.
        tick = min(interval / 3, STATUS_EVERY) if interval else STATUS_EVERY
        last_status = ""
        last_problems: dict[str, str] = {}
        while True:
            await asyncio.sleep(tick)
            problems = {"buffer": self.spool.condition} if self.spool.condition else {}
            if problems != last_problems:  # e.g. the disk filled up, or has room again
                for destination in self.destinations.values():
                    destination.update_health(problems)
                last_problems = problems
            problem = self.stalled()
            if problem is None:
                if interval:
                    self.notifier.watchdog()
                self.watchdog_log.success()
            else:
                self.watchdog_log.failure(
                    problem, "not pinging the watchdog, so systemd restarts the service"
                )
            line = self.summary() if problem is None else f"stalled: {problem}"
            if line != last_status:
                self.notifier.status(line)
                last_status = line


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_once(loaded: LoadedConfig, device_ids: Sequence[str] = ()) -> list[Reading]:
    """Poll each device (or the listed ones) once, without buffer or MQTT."""
    buses = {spec.id: Bus(spec) for spec in loaded.buses}

    async def no_sink(_reading: Reading) -> None:
        return None

    pollers = build_pollers(loaded, buses, no_sink, device_ids)
    try:
        for bus_id in {p.device.bus for p in pollers}:
            await buses[bus_id].start()
        return [await p.poll_once() for p in pollers]
    finally:
        for bus in buses.values():
            await bus.stop()
