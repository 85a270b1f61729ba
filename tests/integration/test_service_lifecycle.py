"""The agent as systemd runs it (a real subprocess): sd_notify readiness, status, watchdog,
reload on SIGHUP, stop on SIGTERM, rate-limited logs. systemd itself is not PID 1 here, so
the test plays the service manager: it binds the $NOTIFY_SOCKET datagram socket and sends
the signals systemctl would send."""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import GATEWAY, per_device, site_config, telemetry
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, MqttCollector, wait_until


class ServiceManager:
    """The notify side of systemd: collects ``(monotonic time, {KEY: value})`` datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def env(self, watchdog_sec: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_sec:
            env["WATCHDOG_USEC"] = str(int(watchdog_sec * 1_000_000))
        return env

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    def wait(self, key: str, count: int = 1, timeout: float = 20) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for _t, m in self.with_key(key)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {key} within {timeout} s: {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServiceManager]:
    m = ServiceManager(tmp_path / "notify.sock")
    yield m
    m.close()


def test_ready_status_watchdog_and_stop_as_systemd_sees_them(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Any,
    manager: ServiceManager,
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
    config = site_config(tmp_path, mosquitto, site)
    agent = run_agent(config, env=manager.env(watchdog_sec=1.5))
    ready = manager.wait("READY")[0]
    # READY only after the buffer is open and the status socket is listening.
    assert (tmp_path / "buffer.sqlite").exists()
    assert (tmp_path / "swm-edge.sock").exists()
    assert ready["MAINPID"] == str(agent.proc.pid)
    assert ready["STATUS"].startswith("3 devices (0 offline) on 2 buses (0 down)")
    ready_at = manager.with_key("READY")[0][0]
    time.sleep(3)
    pings = [t for t, _m in manager.with_key("WATCHDOG")]
    # three pings per 1.5 s watchdog period, none missed
    assert len(pings) >= 5, pings
    gaps = [b - a for a, b in zip([ready_at, *pings], pings, strict=False)]
    assert max(gaps) < 1.0, gaps
    # STATUS= follows the state: the broker connection comes a moment after READY.
    wait_until(
        lambda: any("mqtt connected" in m["STATUS"] for _t, m in manager.with_key("STATUS")),
        what="STATUS with mqtt connected",
    )

    wait_until(lambda: len(telemetry(sub.messages())) >= 6, what="telemetry")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(20) == 0
    assert manager.wait("STOPPING")[0]["STATUS"] == "stopping"
    status = [m.json() for m in sub.messages(f"swm/{GATEWAY}/status")]
    assert status[-1]["state"] == "offline"
    # Nothing read before the signal is lost: seqs are contiguous and all arrived.
    seqs = sorted(d["seq"] for d in telemetry(sub.messages()))
    assert seqs == list(range(1, len(seqs) + 1))
    assert "agent stopped" in agent.log() and len(seqs) >= 6


# A driver with a loop-blocking bug (see its docstring).
STUCK_DRIVER = Path(__file__).parent.parent / "stuckdrv"


def test_a_blocked_event_loop_stops_the_watchdog_pings(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    run_agent: Any,
    manager: ServiceManager,
) -> None:
    trigger = tmp_path / "hang-now"
    config = site_config(
        tmp_path,
        mosquitto,
        site,
        extra_device=f"  - {{id: stuck-1, bus: plant-lan, interval: 1, driver: stuck, "
        f"trigger: '{trigger}'}}\n",
    )
    env = manager.env(watchdog_sec=1.2)
    env["PYTHONPATH"] = os.pathsep.join([str(STUCK_DRIVER), os.environ.get("PYTHONPATH", "")])
    agent = run_agent(config, env=env)
    manager.wait("READY")
    manager.wait("WATCHDOG", count=4)
    trigger.write_text("block")
    time.sleep(1.5)  # the next poll of stuck-1 blocks within a second
    hung_at = time.monotonic()
    time.sleep(3)
    late = [t for t, _m in manager.with_key("WATCHDOG") if t > hung_at]
    # systemd would kill it now (1.2 s watchdog); we only check it went silent while alive
    assert late == []
    assert agent.proc.poll() is None
    agent.kill()


def test_reload_applies_a_valid_config_and_keeps_the_session(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Any,
    manager: ServiceManager,
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
    config = site_config(tmp_path, mosquitto, site)
    agent = run_agent(config, env=manager.env())
    manager.wait("READY")
    wait_until(lambda: len(per_device(telemetry(sub.messages()), "quality-1")) >= 2)

    # The technician's edit: quality-1 removed, pressure-1 every 0.5 s, a second flow meter.
    text = config.read_text()
    text = text.replace(
        "  - {id: quality-1, bus: rs485-1, unit: 2, interval: 1, profile: yosemitech-y4000,\n"
        "     retries: 0, offline_after: 1000}\n",
        "",
    )
    text = text.replace(
        "id: pressure-1, bus: rs485-1, unit: 1, interval: 1",
        "id: pressure-1, bus: rs485-1, unit: 1, interval: 0.5",
    )
    text += "  - {id: flow-2, bus: plant-lan, unit: 1, interval: 1, profile: siemens-mag6000}\n"
    assert "quality-1" not in text and "interval: 0.5" in text
    config.write_text(text)
    agent.proc.send_signal(signal.SIGHUP)
    reloaded = manager.wait("READY", count=2)[1]
    assert manager.with_key("RELOADING"), "RELOADING=1 before the new READY=1"
    assert reloaded["STATUS"].startswith("3 devices")
    wait_until(lambda: len(per_device(telemetry(sub.messages()), "flow-2")) >= 3, what="flow-2")
    time.sleep(1)
    assert agent.stop() == 0

    docs = telemetry(sub.messages())
    seqs = [d["seq"] for d in docs]
    # one session: not a single message sent twice, none lost
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert "connection lost" not in agent.log()
    online = [m for m in sub.messages(f"swm/{GATEWAY}/status") if m.json()["state"] == "online"]
    assert len(online) == 1
    # quality-1 stopped (its last poll, if one was in flight, was still delivered)
    quality = per_device(docs, "quality-1")
    assert quality and all(
        d["seq"] < min(x["seq"] for x in per_device(docs, "flow-2")) for d in quality
    )
    # pressure-1 now on the half-second grid
    millis = [d["ts"][20:23] for d in per_device(docs, "pressure-1")][-4:]
    assert sorted({m[0] for m in millis}) == ["0", "5"], millis
    log = agent.log()
    assert "config reloaded: 2 buses, 3 devices (1 restarted, 1 removed, 1 added)" in log


def test_reload_with_a_broken_config_keeps_running_on_the_old_one(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Any,
    manager: ServiceManager,
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    config = site_config(tmp_path, mosquitto, site)
    agent = run_agent(config, env=manager.env())
    manager.wait("READY")
    good = config.read_text()
    config.write_text(
        good.replace(
            "interval: 1, profile: siemens-mag6000", "interval: -5, profile: nope"
        ).replace("baudrate: 9600", "baudrate: fast")
    )
    agent.proc.send_signal(signal.SIGHUP)
    manager.wait("READY", count=2)
    before = len(sub.messages())
    time.sleep(2.5)
    assert len(sub.messages()) >= before + 6  # all three devices still polled every second
    assert agent.proc.poll() is None
    log = agent.log()
    # every error, each at FILE:LINE:COL, then the verdict
    assert f"{config}:7:" in log and f"{config}:10:" in log, log
    assert "interval" in log and "baudrate" in log
    assert "config reload failed: " in log and "still running on the previous config" in log
    config.write_text(good)
    assert agent.stop() == 0


def test_reload_with_new_broker_settings_reconnects_without_loss(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Any,
    manager: ServiceManager,
) -> None:
    sub = mqtt_collector(mosquitto, "#")
    config = site_config(tmp_path, mosquitto, site)
    agent = run_agent(config, env=manager.env())
    manager.wait("READY")
    wait_until(lambda: len(telemetry(sub.messages())) >= 3)
    config.write_text(
        config.read_text().replace("reconnect_max: 2", "reconnect_max: 2, topic_prefix: water")
    )
    agent.proc.send_signal(signal.SIGHUP)
    manager.wait("READY", count=2)
    wait_until(
        lambda: any(m.topic.startswith(f"water/{GATEWAY}/") for m in sub.messages()),
        what="telemetry on the new prefix",
    )
    time.sleep(1)
    assert agent.stop() == 0
    docs = telemetry(sub.messages())
    seqs = sorted({d["seq"] for d in docs})
    assert seqs == list(range(1, seqs[-1] + 1)), "a reading was lost across the switch"
    old_status = [m.json()["state"] for m in sub.messages(f"swm/{GATEWAY}/status")]
    new_status = [m.json()["state"] for m in sub.messages(f"water/{GATEWAY}/status")]
    assert old_status[-1] == "offline" and new_status == ["online", "offline"]


def test_a_dead_device_writes_a_handful_of_lines(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, run_agent: Any
) -> None:
    # unit 9 does not exist on the TCP gateway: every poll times out
    config = site_config(
        tmp_path,
        mosquitto,
        site,
        interval=0.2,
        extra_device="  - {id: ghost-1, bus: plant-lan, unit: 9, interval: 0.2, "
        "profile: siemens-mag6000, retries: 0, offline_after: 2, offline_backoff_max: 0.2}\n",
    )
    agent = run_agent(config, log_format="json", log_level="info")
    time.sleep(8)
    assert agent.stop() == 0
    records = [json.loads(line) for line in agent.log().splitlines() if line.startswith("{")]
    ghost = [r["msg"] for r in records if "ghost-1" in r["msg"]]
    # ~40 failed polls: the first is told, then one reminder after a minute (not yet)
    assert len(ghost) == 1, ghost
    assert ghost[0].startswith("device ghost-1: ") and "backing off" in ghost[0]
    assert all(r["level"] in {"info", "warning", "error", "debug"} for r in records)


def test_journal_prefixes_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = textwrap.dedent(
        """
        import logging
        from swm_edge.service import setup_logging
        setup_logging("info", "auto")
        logging.getLogger("swm_edge.bus").warning("bus rs485-1: no answer")
        logging.getLogger("swm_edge.agent").info("agent running")
        """
    )
    out = tmp_path / "stream"
    with out.open("wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        subprocess.run([sys.executable, "-c", script], stderr=f, env=env, check=True)
    assert out.read_text().splitlines() == [
        "<4>swm_edge.bus: bus rs485-1: no answer",
        "<6>swm_edge.agent: agent running",
    ]
    # the variable inherited, but stderr is a pipe: plain text
    piped = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert "WARNING swm_edge.bus: bus rs485-1: no answer" in piped.stderr
    assert "<4>" not in piped.stderr


def test_sigterm_during_a_broker_outage_keeps_every_reading_for_later(
    tmp_path: Path,
    site: DemoSite,
    mosquitto_factory: Any,
    mqtt_collector: Any,
    run_agent: Any,
) -> None:
    broker = mosquitto_factory(persistence=True)
    sub: MqttCollector = mqtt_collector(
        broker, f"swm/{GATEWAY}/+/telemetry", client_id="backend-2", persistent=True
    )
    config = site_config(tmp_path, broker, site)
    first = run_agent(config)
    wait_until(lambda: len(sub.messages()) >= 3)
    broker.stop()
    time.sleep(2.5)
    started = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - started < 15  # well within TimeoutStopSec=30s
    broker.start()
    second = run_agent(config)
    wait_until(lambda: len(sub.messages()) >= 15, timeout=30)
    assert second.stop() == 0
    seqs = sorted({d["seq"] for d in telemetry(sub.messages())})
    assert seqs == list(range(1, seqs[-1] + 1))
