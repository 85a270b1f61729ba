"""A small, realistic water site to run the agent against: the demo, tests and benchmarks.

* a Siemens SITRANS F M MAG 6000 flow meter on Modbus TCP (unit 1);
* a KELLER Series 30 pressure transmitter (unit 1) and a Yosemitech Y4000 sonde (unit 2)
  sharing one virtual RS-485 line (a :class:`~swm_edge_hil.nullmodem.NullModem`);
* every value ticking once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.servers import SimServer, serve_rtu, serve_tcp

__all__ = ["DemoSite", "tick_forever"]


async def tick_forever(devices: Iterable[SimulatedDevice], interval: float = 1.0) -> None:
    """Tick ``devices`` every ``interval`` seconds, on whole multiples of it, until cancelled."""
    devices = list(devices)
    while True:
        # Aligned to the wall clock, so values change at the same moment on every run.
        await asyncio.sleep(interval - (time.time() % interval))
        now = time.time()
        for device in devices:
            device.tick(now)


class DemoSite:
    """Start the demo site; use as ``async with DemoSite() as site:``.

    Args:
        seed: seed of every device's values.
        tick: seconds between value updates; ``0`` never ticks (values stay as built).
        host: TCP address of the flow meter.
        tcp_port: its port; 0 picks a free one (see :attr:`tcp_port` once started).
        serial_link: a stable symlink for the agent side of the RS-485 line, e.g. a path
            under a temporary folder standing in for ``/dev/serial/by-id/...``.
        baudrate: the RS-485 line settings announced to the agent (8N1).
        line_speed: deliver bytes on the line only as fast as ``baudrate`` would.
        start: time the first values are computed for (default: now).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tick: float = 1.0,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        serial_link: str | Path | None = None,
        baudrate: int = 9600,
        line_speed: bool = False,
        start: float | None = None,
    ) -> None:
        self.seed = seed
        self.tick_interval = tick
        self.host = host
        self.baudrate = baudrate
        self._requested_port = tcp_port
        self.flow_meter = SimulatedDevice(
            "siemens-mag6000", unit=1, seed=seed, start=start, name="flow-meter"
        )
        self.pressure = SimulatedDevice(
            "keller-series30", unit=1, seed=seed, start=start, name="pressure"
        )
        self.sonde = SimulatedDevice(
            "yosemitech-y4000", unit=2, seed=seed, start=start, name="sonde"
        )
        #: Every device by its name.
        self.devices: dict[str, SimulatedDevice] = {
            d.name: d for d in (self.flow_meter, self.pressure, self.sonde)
        }
        self.null_modem = NullModem(
            agent_link=serial_link, baudrate=baudrate if line_speed else None
        )
        self.tcp_server: SimServer | None = None
        self.rtu_server: SimServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def tcp_port(self) -> int:
        """The flow meter's bound TCP port."""
        if self.tcp_server is None:
            raise RuntimeError("the site is not started")
        return self.tcp_server.port

    @property
    def serial_port(self) -> str:
        """The agent side of the RS-485 line (the symlink, if one was asked for)."""
        return self.null_modem.agent_port

    async def start(self) -> DemoSite:
        """Start the servers, the line and the ticker."""
        try:
            self.tcp_server = await serve_tcp(
                self.flow_meter, host=self.host, port=self._requested_port
            )
            self.null_modem.start()
            self.rtu_server = await serve_rtu(
                [self.pressure, self.sonde], self.null_modem.device_port, baudrate=self.baudrate
            )
        except BaseException:
            await self.stop()
            raise
        if self.tick_interval > 0:
            self._ticker = asyncio.create_task(
                tick_forever(self.devices.values(), self.tick_interval), name="demo-site-ticker"
            )
        return self

    async def stop(self) -> None:
        """Stop everything; safe to call twice."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for server in (self.rtu_server, self.tcp_server):
            if server is not None:
                await server.stop()
        self.null_modem.close()

    async def __aenter__(self) -> DemoSite:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def freeze(self) -> None:
        """Static mode on every device (see :meth:`SimulatedDevice.freeze`)."""
        for device in self.devices.values():
            device.freeze()

    def unfreeze(self) -> None:
        """Leave static mode on every device."""
        for device in self.devices.values():
            device.unfreeze()

    def info(self) -> dict[str, Any]:
        """Where to reach every device, JSON-ready (what ``python -m swm_edge_hil site``
        prints)."""

        def describe(device: SimulatedDevice) -> dict[str, Any]:
            profile = device.profile.name if device.profile is not None else None
            return {"name": device.name, "unit": device.unit, "profile": profile}

        return {
            "tcp": {
                "host": self.host,
                "port": self.tcp_port,
                "devices": [describe(self.flow_meter)],
            },
            "serial": {
                "port": self.serial_port,
                "baudrate": self.baudrate,
                "parity": "N",
                "stopbits": 1,
                "bytesize": 8,
                "devices": [describe(self.pressure), describe(self.sonde)],
            },
            "tick": self.tick_interval,
            "seed": self.seed,
        }
