"""Fault-injection suite: the real agent publishing through a fault-injecting TCP proxy
(hil/netproxy.py) to a real mosquitto with persistence, read by a backend-like subscriber
with a persistent session (nothing published while the broker restarts is missed).

Durations are short by default (CI). Longer runs: ``SWM_EDGE_LONG_FAULTS=1 pytest
tests/faults`` or ``pytest tests/faults --long-faults``. The command-line option is only
known when pytest loads this conftest before parsing the command line, i.e. when
``tests/faults`` (or a file in it) is named on the command line; a bare ``pytest`` (the
``testpaths``) does not know it, so CI jobs and scripts should use the environment
variable, which always works.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import GATEWAY, AgentProcess, site_config
from swm_edge_hil.netproxy import NetProxy
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, MqttCollector

LONG_ENV = "SWM_EDGE_LONG_FAULTS"
INFLIGHT = 8
KEEPALIVE = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long-faults",
        action="store_true",
        default=False,
        help=f"fault-injection suite: longer durations and more cycles (or {LONG_ENV}=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The other files of this suite read the environment variable only: make the option
    # reach them too (and the agents they start).
    if config.getoption("--long-faults", default=False):
        os.environ[LONG_ENV] = "1"


@pytest.fixture
def long_faults(request: pytest.FixtureRequest) -> bool:
    """Whether the long durations were asked for (option or environment variable)."""
    option = bool(request.config.getoption("--long-faults", default=False))
    return option or os.environ.get(LONG_ENV, "") not in ("", "0")


@pytest.fixture
def scale(long_faults: bool) -> Callable[[float, float], float]:
    """``scale(ci, long)``: the CI value, or the long one."""
    return lambda ci, long: long if long_faults else ci


@dataclass
class FaultRig:
    """The agent -> proxy -> broker -> subscriber chain of one test."""

    tmp_path: Path
    site: DemoSite
    broker: Mosquitto
    proxy: NetProxy
    sub: MqttCollector
    config: Path
    agent: AgentProcess | None = None
    inflight: int = INFLIGHT
    keepalive: int = KEEPALIVE
    notes: list[str] = field(default_factory=list)

    def start_agent(self) -> AgentProcess:
        self.agent = AgentProcess(self.config)
        return self.agent

    def telemetry(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.messages() if m.topic.endswith("/telemetry")]

    def seqs(self) -> set[int]:
        return {d["seq"] for d in self.telemetry()}

    def wait_seq(self, seq: int, timeout: float) -> bool:
        """Wait until a telemetry message with ``seq`` or above was received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s >= seq for s in self.seqs()):
                return True
            time.sleep(0.1)
        return False

    def buffer_state(self) -> tuple[int, dict[int, float]]:
        """(the last seq the agent gave a reading, {seq: ts} of the rows still in its
        buffer, i.e. not acknowledged by the broker); read once the agent has stopped."""
        db = sqlite3.connect(f"file:{self.tmp_path / 'buffer.sqlite'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
            buffered = dict(db.execute("SELECT seq, ts FROM readings").fetchall())
        finally:
            db.close()
        return (int(row[0]) if row else 0), buffered


@pytest.fixture
def fault_rig(
    tmp_path: Path,
    site: DemoSite,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., MqttCollector],
) -> Iterator[FaultRig]:
    broker = mosquitto_factory(persistence=True)
    sub = mqtt_collector(broker, f"swm/{GATEWAY}/#", client_id="backend-faults", persistent=True)
    with NetProxy(broker.host, broker.port) as proxy:
        config = site_config(
            tmp_path, proxy, site, interval=1, mqtt_extra=f", inflight: {INFLIGHT}"
        )
        text = config.read_text()
        for old, new in (
            ("keepalive: 5,", f"keepalive: {KEEPALIVE},"),
            ("reconnect_min: 0.5,", "reconnect_min: 0.2,"),
            ("reconnect_max: 2", "reconnect_max: 1"),
        ):
            assert old in text, f"site_config changed: {old!r} not in the config"
            text = text.replace(old, new)
        config.write_text(text)
        rig = FaultRig(tmp_path, site, broker, proxy, sub, config)
        try:
            yield rig
        finally:
            if rig.agent is not None and rig.agent.proc.poll() is None:
                rig.agent.kill()
