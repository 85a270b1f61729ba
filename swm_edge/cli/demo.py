"""``swm-edge demo``: simulated water devices, a broker, the real agent, and a live view.

Everything runs on this machine without root: the devices are the hil/ simulators (a
flow meter on Modbus TCP; a pressure transmitter and a water-quality probe sharing one
virtual RS-485 line), the broker is mosquitto or the embedded amqtt, and the agent is the
real ``swm-edge run`` in a subprocess, as a gateway would run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from swm_edge_hil.site import DemoSite

from swm_edge.broker import BrokerError, BrokerHandle, start_demo_broker
from swm_edge.testing import MqttCollector

GATEWAY = "gw-demo-0001"
INTERVAL = 2

CONFIG = """\
# Written by `swm-edge demo`: the agent's view of the simulated site.
gateway: {{id: {gateway}, site: demo-dma-7}}
mqtt: {{host: {mqtt_host}, port: {mqtt_port}, protocol: "3.1.1", reconnect_max: 5}}
buffer: {{path: {buffer}, max_mb: 16}}
buses:
  - {{id: plant-lan, type: modbus-tcp, host: {tcp_host}, port: {tcp_port}, timeout: 1.0}}
  - {{id: rs485-1, type: modbus-rtu, port: {serial}, baudrate: 9600, timeout: 0.5}}
devices:
  - {{id: inlet-flow, bus: plant-lan, unit: 1, interval: {interval}, profile: siemens-mag6000}}
  - {{id: inlet-pressure, bus: rs485-1, unit: 1, interval: {interval}, profile: keller-series30}}
  - {{id: reservoir-quality, bus: rs485-1, unit: 2, interval: {interval},
     profile: yosemitech-y4000}}
"""


class _Tally:
    """What arrived per device, from the broker's side."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = defaultdict(int)
        self.good: dict[str, int] = defaultdict(int)
        self.bad: dict[str, int] = defaultdict(int)
        self.last: dict[str, dict[str, Any]] = {}
        self.status = "?"

    def update(self, collector: MqttCollector, seen: int) -> int:
        messages = collector.messages()
        for msg in messages[seen:]:
            doc = msg.json()
            if msg.topic.endswith("/status"):
                self.status = str(doc.get("state"))
                continue
            device = str(doc["device"])
            self.messages[device] += 1
            for item in doc["readings"].values():
                if item["quality"] == "good":
                    self.good[device] += 1
                else:
                    self.bad[device] += 1
            self.last[device] = doc
        return len(messages)

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left", expand=False)
        for col in ("device", "msgs", "good", "bad", "seq", "read at (UTC)", "latest values"):
            table.add_column(col, overflow="fold")
        for device in sorted(self.last):
            doc = self.last[device]
            values = ", ".join(
                f"{name}={_fmt(item.get('value'))}{' ' + item['unit'] if item.get('unit') else ''}"
                if item["quality"] == "good"
                else f"{name}=[red]{item.get('error')}[/red]"
                for name, item in list(doc["readings"].items())[:4]
            )
            table.add_row(
                device,
                str(self.messages[device]),
                str(self.good[device]),
                str(self.bad[device]),
                str(doc["seq"]),
                str(doc["ts"])[11:23],
                values,
            )
        return table


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_demo(duration: float | None) -> int:
    """Run the demo; returns the exit status (0: every device's readings reached the broker)."""
    console = Console()
    try:
        return asyncio.run(_demo(console, duration))
    except BrokerError as exc:
        console.print(f"[red]cannot start a broker:[/red] {exc}")
        return 1


async def _demo(console: Console, duration: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="swm-edge-demo-") as tmp_name:
        tmp = Path(tmp_name)
        broker = await asyncio.to_thread(start_demo_broker)
        try:
            async with DemoSite(serial_link=tmp / "ttyRS485-by-id") as site:
                return await _run(console, tmp, broker, site, stop, duration)
        finally:
            await asyncio.to_thread(broker.stop)


async def _run(
    console: Console,
    tmp: Path,
    broker: BrokerHandle,
    site: DemoSite,
    stop: asyncio.Event,
    duration: float | None,
) -> int:
    config = tmp / "config.yaml"
    config.write_text(
        CONFIG.format(
            gateway=GATEWAY,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            buffer=json.dumps(str(tmp / "buffer.sqlite")),
            tcp_host=site.host,
            tcp_port=site.tcp_port,
            serial=json.dumps(site.serial_port),
            interval=INTERVAL,
        )
    )
    collector = await asyncio.to_thread(MqttCollector, broker.host, broker.port, f"swm/{GATEWAY}/#")
    log_path = tmp / "agent.log"
    console.print(
        f"broker: {broker.kind} on {broker.host}:{broker.port}   "
        f"flow meter: Modbus TCP {site.host}:{site.tcp_port}   "
        f"RS-485 line: {site.serial_port}"
    )
    with log_path.open("wb") as log_file:
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "swm_edge",
            "run",
            "--config",
            str(config),
            "--log-format",
            "text",
            stdout=log_file,
            stderr=log_file,
        )
        tally, seen, started = _Tally(), 0, time.monotonic()
        try:
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                while not stop.is_set() and agent.returncode is None:
                    elapsed = time.monotonic() - started
                    if duration is not None and elapsed >= duration:
                        break
                    seen = tally.update(collector, seen)
                    hint = "" if duration is not None else "   Ctrl-C to stop"
                    live.update(
                        Group(
                            tally.table(
                                f"arriving at the broker: swm/{GATEWAY}/+/telemetry   "
                                f"(gateway {tally.status}, {elapsed:4.0f} s){hint}"
                            )
                        )
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            if agent.returncode is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(agent.wait(), 15)
                except TimeoutError:
                    agent.kill()
                    await agent.wait()
            await asyncio.sleep(0.3)  # let the last messages and the offline status land
            tally.update(collector, seen)
            collector.close()
    return _summary(console, tally, agent.returncode, log_path)


def _summary(console: Console, tally: _Tally, returncode: int | None, log_path: Path) -> int:
    expected = ("inlet-flow", "inlet-pressure", "reservoir-quality")
    console.print(Text("readings that reached the broker, per device:", style="bold"))
    for device in expected:
        console.print(
            f"  {device}: {tally.messages[device]} messages, "
            f"{tally.good[device]} good readings, {tally.bad[device]} bad"
        )
    ok = returncode == 0 and all(tally.good[d] > 0 for d in expected)
    if not ok:
        console.print(f"[red]the agent exited with {returncode}[/red]; its log:")
        console.print(log_path.read_text(errors="replace")[-4000:], markup=False)
    return 0 if ok else 1
