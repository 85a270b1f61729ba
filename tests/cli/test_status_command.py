"""``swm-edge status`` against the real agent (a subprocess) polling the simulated site and
publishing to a real mosquitto: what it reports is what happens."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from swm_edge_hil.harness import GATEWAY, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.broker import free_port
from swm_edge.buffer import BufferStats
from swm_edge.cli.status import render
from swm_edge.clock import ClockSnapshot
from swm_edge.publish.mqtt import DestinationStats
from swm_edge.status import build_snapshot
from swm_edge.testing import Mosquitto, MqttCollector, RunningAgent

DEVICES = ("flow-1", "pressure-1", "quality-1")


class _NoBroker:
    host = "127.0.0.1"
    port = free_port()


@pytest.fixture
def agents() -> Iterator[Callable[[Path], RunningAgent]]:
    started: list[RunningAgent] = []

    def start(config: Path) -> RunningAgent:
        agent = RunningAgent(config)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.running:
            agent.kill()


def swm_edge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_json(config: Path) -> dict[str, Any]:
    result = swm_edge("status", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def wait_status(
    config: Path, agent: RunningAgent, ok: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """Ask ``swm-edge status`` until ``ok(doc)``; fail with the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert agent.running, agent.log_tail()
        result = swm_edge("status", "--config", config, "--json")
        if result.returncode == 0:
            last = json.loads(result.stdout)
            if ok(last):
                return last  # type: ignore[no-any-return]
        else:
            last = result.stderr
        time.sleep(0.2)
    pytest.fail(f"status never matched; last: {json.dumps(last, indent=1)}")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def raw(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer


def test_status_reports_what_the_agent_does(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., MqttCollector],
    agents: Callable[[Path], RunningAgent],
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    config = site_config(tmp_path, mosquitto, site, interval=1)
    sock = tmp_path / "swm-edge.sock"  # default: next to the buffer
    began = time.time()
    agent = agents(config)

    def settled(doc: dict[str, Any]) -> bool:
        return (
            doc["mqtt"]["connected"]
            and doc["buffer"]["depth"] == 0
            and doc["buffer"]["queued"] == 0
            and all(doc["devices"][d]["polls"] >= 3 for d in DEVICES)
        )

    doc = wait_status(config, agent, settled)
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660

    assert doc["gateway"] == GATEWAY and doc["pid"] == agent.proc.pid
    assert 0 < doc["uptime_s"] < time.time() - began + 1
    assert doc["mqtt"]["host"] == mosquitto.host and doc["mqtt"]["port"] == mosquitto.port
    assert doc["mqtt"]["last_error"] is None and doc["mqtt"]["connects"] == 1
    assert doc["buffer"]["oldest_age_s"] is None and doc["buffer"]["dropped"] == 0
    assert doc["buffer"]["size_bytes"] > 0
    assert doc["buses"] == {
        "plant-lan": {"type": "modbus-tcp", "open": True, "opens": 1, "last_error": None},
        "rs485-1": {"type": "modbus-rtu", "open": True, "opens": 1, "last_error": None},
    }
    # Every poll the status counts reached the broker (depth 0): the same count and the
    # same last timestamp as the telemetry that arrived.
    for device in DEVICES:
        d = doc["devices"][device]
        assert d["quality"] == "good" and d["errors"] == 0 and d["offline"] is False, d
        assert d["bus"] in doc["buses"] and d["interval"] == 1
        last = epoch(d["last_read"])
        assert d["last_read"].endswith("Z") and began < last <= epoch(doc["now"])
        received = sub.wait_for(
            lambda m, dev=device, t=last: m.json()["device"] == dev and epoch(m.json()["ts"]) <= t,
            10,
            count=d["polls"],
        )
        assert len(received) == d["polls"]
        assert received[-1].json()["ts"] == d["last_read"]
    total = sum(doc["devices"][d]["polls"] for d in DEVICES)
    assert doc["mqtt"]["published"] >= total and doc["mqtt"]["acked"] >= total

    # The table, for a person.
    table = swm_edge("status", "--config", config)
    assert table.returncode == 0, table.stderr
    if "clock" in doc:  # an agent that watches its clock (this machine's kernel decides)
        assert re.search(r"^Clock: ", table.stdout, re.M), table.stdout
        flagged = [m.get("clock") for m in sub.json_messages()]
        if doc["clock"]["trusted"] and doc["clock"]["flagged_readings"] == 0:
            assert set(flagged) == {None}
        elif not doc["clock"]["trusted"]:
            assert "unsynchronized" in flagged
    assert f"gateway {GATEWAY}" in table.stdout and "connected" in table.stdout
    assert "pressure-1" in table.stdout and "rs485-1" in table.stdout
    assert re.search(r"^Buffer: \d+ readings waiting", table.stdout, re.M), table.stdout
    assert re.search(r"^ flow-1 +[\d.]+ s +good +\d+ +0 +0 *$", table.stdout, re.M), table.stdout

    # Garbage on the socket gets an error answer; the agent keeps serving and polling.
    assert "too long" in raw(sock, b"x" * 5000 + b"\n")["error"]
    assert "not JSON" in raw(sock, b"\x00garbage\n")["error"]
    assert "unknown command 'restart'" in raw(sock, b'{"command": "restart"}\n')["error"]
    assert raw(sock, b'{"command": "ping"}\n')["pid"] == agent.proc.pid

    # The broker goes away: not connected, readings pile up in the buffer and age.
    mosquitto.stop()
    stopped = time.time()
    down = wait_status(
        config, agent, lambda s: not s["mqtt"]["connected"] and s["buffer"]["depth"] >= 3
    )
    time.sleep(2.5)
    later = wait_status(
        config, agent, lambda s: s["buffer"]["depth"] >= down["buffer"]["depth"] + 6
    )
    assert later["mqtt"]["connected"] is False and later["mqtt"]["connected_since"] is None
    assert later["mqtt"]["last_error"]  # why it is not connected
    assert later["buffer"]["oldest_age_s"] > down["buffer"]["oldest_age_s"]
    assert later["buffer"]["oldest_age_s"] <= time.time() - stopped + 2
    assert all(later["devices"][d]["quality"] == "good" for d in DEVICES)  # polling goes on
    down_table = swm_edge("status", "--config", config)
    assert "not connected" in down_table.stdout and "readings waiting" in down_table.stdout

    # It comes back: the backlog drains to zero.
    mosquitto.start()
    back = wait_status(config, agent, settled)
    assert back["mqtt"]["connects"] == 2 and back["buffer"]["dropped"] == 0

    # A clean stop removes the socket; then there is no agent to ask.
    assert agent.stop() == 0
    assert not sock.exists()
    gone = swm_edge("status", "--config", config)
    assert gone.returncode == 3 and gone.stdout == ""
    assert gone.stderr == (
        f"swm-edge: no agent is running with this config (no status socket {sock})\n"
    )
    assert "Traceback" not in agent.log()


def test_no_agent_is_exit_3_with_one_line(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site)
    for args in ((), ("--json",)):
        result = swm_edge("status", "--config", config, *args)
        assert result.returncode == 3 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "no agent is running" in result.stderr
    bad = swm_edge("status", "--config", tmp_path / "missing.yaml")
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_stale_socket_of_a_killed_agent(
    tmp_path: Path, site: DemoSite, agents: Callable[[Path], RunningAgent]
) -> None:
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    sock = tmp_path / "swm-edge.sock"
    first = agents(config)
    wait_status(config, first, lambda s: s["devices"]["flow-1"]["polls"] >= 1)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)  # left behind

    stale = swm_edge("status", "--config", config)
    assert stale.returncode == 3 and stale.stdout == ""
    assert stale.stderr.startswith("swm-edge: no agent is running with this config")
    assert "stale" in stale.stderr and stale.stderr.count("\n") == 1

    second = agents(config)
    doc = wait_status(config, second, lambda s: s["devices"]["flow-1"]["polls"] >= 1)
    assert doc["pid"] == second.proc.pid != first.proc.pid
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert "replaced the stale status socket" in second.log()
    assert second.stop() == 0


def test_a_second_agent_on_the_same_config_refuses_to_start(
    tmp_path: Path, site: DemoSite, agents: Callable[[Path], RunningAgent]
) -> None:
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    first = agents(config)
    wait_status(config, first, lambda s: s["devices"]["flow-1"]["polls"] >= 1)
    second = agents(config)
    assert second.proc.wait(30) == 1
    log = second.log()
    assert f"another swm-edge agent (pid {first.proc.pid}) is running with this config" in log
    assert "Traceback" not in log and "running: 2 buses" not in log
    # The first one was not disturbed: same socket, still answering, still polling.
    before = status_json(config)["devices"]["flow-1"]["polls"]
    after = wait_status(config, first, lambda s: s["devices"]["flow-1"]["polls"] > before)
    assert after["pid"] == first.proc.pid
    assert first.stop() == 0


# ---- the clock line, rendered from a snapshot (no agent needed) ---------------------------


def rendered(clock: ClockSnapshot | None) -> str:
    snap = build_snapshot(
        gateway_id="gw-1",
        pid=1,
        started=1_795_000_000.0,
        now=1_795_000_100.0,
        uptime_s=100.0,
        broker_host="127.0.0.1",
        broker_port=1883,
        mqtt=DestinationStats(),
        buffer=BufferStats(depth=0, oldest_ts=None, dropped=0, size_bytes=4096),
        queued=0,
        devices=[],
        buses={},
        clock=clock,
    )
    out = io.StringIO()
    render(Console(file=out, width=200, highlight=False), snap)
    return out.getvalue()


def clock_line(clock: ClockSnapshot | None) -> str | None:
    lines = [line for line in rendered(clock).splitlines() if line.startswith("Clock:")]
    assert len(lines) <= 1
    return lines[0] if lines else None


def test_clock_line() -> None:
    base: ClockSnapshot = {
        "synchronized": True,
        "trusted": True,
        "steps": 0,
        "last_step": None,
        "flagged_readings": 0,
    }
    assert clock_line(None) is None  # an agent of a version without the clock monitor
    assert clock_line(base) == "Clock: synchronised"
    assert clock_line({**base, "synchronized": None}) == (
        "Clock: trusted (synchronisation status unknown)"
    )
    assert clock_line(
        {**base, "synchronized": False, "trusted": False, "flagged_readings": 12}
    ) == ("Clock: NOT synchronised: readings are flagged unsynchronized (12 so far)")
    assert clock_line({**base, "synchronized": None, "trusted": False, "flagged_readings": 3}) == (
        "Clock: NOT trusted (date too early): readings are flagged unsynchronized (3 so far)"
    )
    synced_after_boot: ClockSnapshot = {
        "synchronized": True,
        "trusted": True,
        "steps": 2,
        "last_step": {"size_s": 1234.5, "at": "2026-11-23T04:00:10.000Z"},
        "flagged_readings": 40,
    }
    assert clock_line(synced_after_boot) == (
        "Clock: synchronised; 40 readings were flagged unsynchronized before; 2 steps, "
        "last +1234.5 s at 2026-11-23T04:00:10.000Z"
    )
    back: ClockSnapshot = {
        **base,
        "steps": 1,
        "last_step": {"size_s": -3600.0, "at": "2026-11-23T03:00:10.000Z"},
    }
    assert (
        clock_line(back)
        == "Clock: synchronised; 1 step, last -3600.0 s at 2026-11-23T03:00:10.000Z"
    )
