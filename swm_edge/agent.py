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
from pathlib import Path

from swm_edge.buffer import Buffer
from swm_edge.bus import Bus
from swm_edge.config import LoadedConfig
from swm_edge.driver import load_driver
from swm_edge.model import DeviceSpec, Reading
from swm_edge.publish.encoders import encode_json_v1
from swm_edge.publish.mqtt import BrokerSettings, Destination
from swm_edge.scheduler import DevicePoller, Sink
from swm_edge.spool import Spool
from swm_edge.status import StatusServer, agent_snapshot

log = logging.getLogger(__name__)

# How long a stop waits for polls in flight (a serial poll with retries can take seconds).
STOP_GRACE = 10.0


def broker_settings(loaded: LoadedConfig) -> BrokerSettings:
    """The publisher's settings from the config, with the password read from its file/env."""
    cfg = loaded.config
    m = cfg.mqtt
    tls = m.tls
    return BrokerSettings(
        host=m.host,
        port=m.port,
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
        reconnect_min=m.reconnect_min,
        reconnect_max=m.reconnect_max,
    )


def _with_bus_defaults(device: DeviceSpec, bus: Bus) -> DeviceSpec:
    if device.timeout is None:
        return dataclasses.replace(device, timeout=bus.spec.timeout)
    return device


def build_pollers(
    loaded: LoadedConfig, buses: dict[str, Bus], sink: Sink, device_ids: Sequence[str] = ()
) -> list[DevicePoller]:
    """A poller per configured device (or per listed id), each with its driver."""
    pollers = []
    for device in loaded.devices:
        if device_ids and device.id not in device_ids:
            continue
        bus = buses[device.bus]
        device = _with_bus_defaults(device, bus)
        driver = load_driver(device.driver)(device)
        pollers.append(DevicePoller(device, driver, bus, sink))
    return pollers


class Agent:
    """One running gateway: buses, pollers, the buffer and the MQTT destination."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        cfg = loaded.config
        path = Path(cfg.buffer.path)
        max_bytes = int(cfg.buffer.max_mb * 1024 * 1024)

        def open_buffer() -> Buffer:
            path.parent.mkdir(parents=True, exist_ok=True)
            return Buffer(path, max_bytes=max_bytes, destinations=["default"])

        self.spool = Spool(open_buffer)
        self.buses = {spec.id: Bus(spec) for spec in loaded.buses}
        self.pollers = build_pollers(loaded, self.buses, self.spool.put)
        self.destination = Destination(
            "default", broker_settings(loaded), self.spool, encode_json_v1
        )
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        # Wall clock for display, monotonic for the uptime (a clock step must not change it).
        self.started_wall = time.time()
        self.started_monotonic = time.monotonic()
        self.status = StatusServer(cfg.status_socket_path(), lambda: agent_snapshot(self))

    async def run(self) -> None:
        """Run until :meth:`stop` is called; then finish polls in flight and shut down."""
        await self.spool.open()
        tasks: list[asyncio.Task[None]] = []
        try:
            # First, before any line is opened: a second agent on the same config stops
            # here (AgentRunningError) instead of fighting the first for its serial ports.
            await self.status.start()
            for bus in self.buses.values():
                await bus.start()
            tasks.append(asyncio.create_task(self.spool.run(), name="spool"))
            tasks.append(asyncio.create_task(self.destination.run(), name="publish"))
            polls = [
                asyncio.create_task(p.run(self.stopping), name=f"poll-{p.device.id}")
                for p in self.pollers
            ]
            self.started.set()
            log.info(
                "agent %s running: %d buses, %d devices",
                self.loaded.config.gateway.id,
                len(self.buses),
                len(self.pollers),
            )
            await self.stopping.wait()
            if polls:
                _done, late = await asyncio.wait(polls, timeout=STOP_GRACE)
                for task in late:
                    task.cancel()
            await self.spool.drain()
        finally:
            await self.destination.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
