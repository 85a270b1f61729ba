"""Run the real agent against the simulated site: used by the end-to-end tests and benches.

* :class:`SiteRunner` serves a :class:`~swm_edge_hil.site.DemoSite` from an event loop in a
  background thread, so a synchronous test can drive faults and values;
* :class:`AgentProcess` runs ``swm-edge run`` in a subprocess, as on a gateway;
* :func:`site_config` writes a config that points one at the other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from swm_edge_hil.site import DemoSite

T = TypeVar("T")
GATEWAY = "gw-it-0001"


class Broker(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class SiteRunner:
    """A :class:`DemoSite` served by an event loop in a thread, so tests stay synchronous."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.site: DemoSite = self.call(DemoSite(**options).start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.site.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def site_config(
    tmp_path: Path,
    broker: Broker,
    site: DemoSite,
    *,
    interval: float = 1,
    backend: str = "native",
    extra_device: str = "",
    mqtt_extra: str = "",
    name: str = "config.yaml",
) -> Path:
    """A config for the agent against ``site`` and ``broker``."""
    path = tmp_path / name
    path.write_text(
        f"""\
gateway: {{id: {GATEWAY}, site: test-site}}
mqtt: {{host: {broker.host}, port: {broker.port}, keepalive: 5, reconnect_min: 0.5,
       reconnect_max: 2{mqtt_extra}}}
buffer: {{path: {tmp_path / "buffer.sqlite"}, max_mb: 16}}
buses:
  - {{id: plant-lan, type: modbus-tcp, host: {site.host}, port: {site.tcp_port}, timeout: 0.5}}
  - {{id: rs485-1, type: modbus-rtu, port: "{site.serial_port}", baudrate: 9600,
     timeout: 0.3, backend: {backend}}}
devices:
  - {{id: flow-1, bus: plant-lan, unit: 1, interval: {interval}, profile: siemens-mag6000}}
  - {{id: pressure-1, bus: rs485-1, unit: 1, interval: {interval}, profile: keller-series30,
     retries: 0, offline_after: 1000}}
  - {{id: quality-1, bus: rs485-1, unit: 2, interval: {interval}, profile: yosemitech-y4000,
     retries: 0, offline_after: 1000}}
{extra_device}"""
    )
    return path


class AgentProcess:
    """``swm-edge run`` in a subprocess, logging to a file."""

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        log_format: str = "text",
        log_level: str = "debug",
    ) -> None:
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        self._log = self.log_path.open("wb")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swm_edge",
                "run",
                "--config",
                str(config),
                "--log-format",
                log_format,
                "--log-level",
                log_level,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def telemetry(messages: list[Any]) -> list[dict[str, Any]]:
    """The telemetry documents among collected messages, in arrival order."""
    return [m.json() for m in messages if m.topic.endswith("/telemetry")]


def per_device(docs: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """The documents of one device."""
    return [d for d in docs if d["device"] == device]
