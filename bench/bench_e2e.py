"""End-to-end benchmark: simulated Modbus TCP devices -> the real agent -> mosquitto -> subscriber.

Every part runs as it would in the field, each in its own process: the hil/ simulators
(``python -m swm_edge_hil tcp``), the agent (``python -m swm_edge run --config ...``, buffer
in a temporary folder), a real mosquitto on loopback, and a subscriber in this process that
records every telemetry message. Figures are taken over a steady window after a warm-up:

* delivered readings/s (a reading = one good point value) and messages/s, at the subscriber;
* the agent's CPU (user+system of the whole process, all threads) as % of one core and as
  CPU-seconds per 1000 delivered readings, and its peak and final RSS;
* publish latency: receive time at the subscriber minus the message's ``ts`` (poll start);
* missing seqs: gaps in the seq range the window saw that never arrived, even late.

Prints figures, asserts nothing: the machine may be noisy. Usage::

    python bench/bench_e2e.py                      # W1 and W2, under 2 minutes
    python bench/bench_e2e.py --workload W1 --seconds 60
    python bench/bench_e2e.py --workload custom --devices 100 --points 50 --interval 1
    python bench/bench_e2e.py --workload W2 --profile /tmp/prof   # py-spy the agent too
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from swm_edge.broker import Mosquitto
from swm_edge.testing import Message, MqttCollector

GATEWAY = "gw-bench-0001"
TOPIC_FILTER = f"swm/{GATEWAY}/+/telemetry"
PROFILE_NAME = "bench-sim"


@dataclass(frozen=True)
class Workload:
    """A fixed site shape: ``devices`` simulators with ``points`` float32 points each."""

    name: str
    title: str
    devices: int
    points: int
    interval: float
    # The goal, checked and printed (never asserted: this machine may be noisy).
    max_cpu_pct: float | None = None
    min_delivered: float | None = None

    @property
    def target(self) -> str:
        if self.max_cpu_pct is not None:
            return f"agent < {self.max_cpu_pct:g} % CPU"
        if self.min_delivered is not None:
            return f">= {self.min_delivered:,.0f} readings/s"
        return "-"

    def met(self, cpu_pct: float, delivered: float) -> bool | None:
        """Whether a run reached the target (None without one)."""
        if self.max_cpu_pct is not None:
            return cpu_pct < self.max_cpu_pct
        if self.min_delivered is not None:
            return delivered >= self.min_delivered
        return None

    @property
    def offered(self) -> float:
        """Readings per second the agent is asked to poll and publish."""
        return self.devices * self.points / self.interval

    @property
    def shape(self) -> str:
        return f"{self.devices} x {self.points} @ {self.interval:g} s"


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "typical site", 20, 10, 1.0, max_cpu_pct=3.0),
    # 100 float32 points = 200 registers = 2 requests per poll (max 125 registers each).
    # Few devices with many points: the simulators share this machine's cores with the
    # agent, and their cost grows with the number of requests, not of points.
    "W2": Workload("W2", "stress", 50, 100, 1.0, min_delivered=5000.0),
}


@dataclass
class Result:
    """Figures of one workload run (JSON-serialisable for --json)."""

    workload: str
    title: str
    shape: str
    target: str
    target_met: bool | None
    window_s: float
    offered_rps: float
    delivered_rps: float
    messages_ps: float
    bad_values: int
    agent_cpu_pct: float
    agent_system_share: float  # % of the agent's CPU time spent in the kernel
    cpu_s_per_1000: float
    rss_peak_mib: float
    rss_final_mib: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    missing_seqs: int
    duplicate_seqs: int
    sims_cpu_pct: float
    broker_cpu_pct: float
    bench_cpu_pct: float
    load_avg_1m: float
    agent_exit: int | None
    agent_log_problems: int
    profile: dict[str, Any] = field(default_factory=dict)


# ---- process hygiene ---------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM/SIGHUP arrived: unwind through every ``finally`` so children are stopped."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


# Runs in a process of its own and outlives the bench: when the bench dies without cleaning
# up (kill -9, OOM killer), its end of the pipe closes, and the watchdog stops what is left.
_WATCHDOG = """
import os, shutil, signal, sys, time
pids, dirs = set(), set()
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    if verb == "pid":
        pids.add(int(arg))
    elif verb == "done":
        pids.discard(int(arg))
    elif verb == "dir":
        dirs.add(arg)
    elif verb == "rmdir":
        dirs.discard(arg)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in list(pids):
        try:
            os.kill(pid, sig)
        except OSError:
            pids.discard(pid)
    if pids:
        time.sleep(5)
for folder in dirs:
    shutil.rmtree(folder, ignore_errors=True)
"""


class Watchdog:
    """Stops our children and removes our temp folders if the bench itself is killed.

    ``finally`` blocks handle Ctrl-C, SIGTERM and errors; this covers SIGKILL, including
    the mosquitto that :class:`Mosquitto` starts, which we cannot hand a death signal to.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            # Its own session, so Ctrl-C in the terminal does not stop it before the bench.
            start_new_session=True,
        )

    def _tell(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.write(f"{line}\n".encode())
                stdin.flush()

    def watch(self, pid: int) -> None:
        self._tell(f"pid {pid}")

    def forget(self, pid: int) -> None:
        self._tell(f"done {pid}")

    def watch_dir(self, folder: Path) -> None:
        self._tell(f"dir {folder}")

    def forget_dir(self, folder: Path) -> None:
        self._tell(f"rmdir {folder}")

    def close(self) -> None:
        """Everything was cleaned up normally: let the watchdog exit with nothing to do."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=15)


WATCHDOG: Watchdog | None = None


def _popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C in the terminal reaches only the bench, which then stops
    # the children in order (agent first, so it can publish its offline status and exit 0).
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    if WATCHDOG is not None:
        WATCHDOG.watch(proc.pid)
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit status of the SIGTERM stop."""
    try:
        if proc.poll() is not None:
            return proc.returncode
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    finally:
        if WATCHDOG is not None:
            WATCHDOG.forget(proc.pid)


@contextlib.contextmanager
def simulators(
    devices: int, points: int
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """``python -m swm_edge_hil tcp``: N simulators; yields the process and its JSON line."""
    argv = [sys.executable, "-m", "swm_edge_hil", "tcp", "--devices", str(devices)]
    argv += ["--points", str(points)]
    proc = _popen(argv, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        # The JSON line comes once every server listens; select() keeps a dead or hung
        # simulator from blocking the bench forever.
        ready, _, _ = select.select([proc.stdout], [], [], 60.0)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"simulators did not start (exit status {proc.poll()})")
        yield proc, json.loads(line)
    finally:
        _stop(proc, 5.0)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A private temporary folder for the config, the agent's buffer and log, the broker."""
    folder = Path(tempfile.mkdtemp(prefix="swm-bench-e2e-"))
    if WATCHDOG is not None:
        WATCHDOG.watch_dir(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if WATCHDOG is not None:
            WATCHDOG.forget_dir(folder)


@contextlib.contextmanager
def mosquitto(folder: Path) -> Iterator[Mosquitto]:
    """A started mosquitto on a free loopback port, watched by the watchdog while it runs."""
    # mosquitto drops QoS 1 messages queued for a subscriber beyond 1000 by default; the
    # subscriber stands in for a backend, so a drop there must not look like the agent's.
    broker = Mosquitto(workdir=folder, extra_config=["max_queued_messages 100000"])
    pid: int | None = None
    try:
        broker.start()
        pid = broker.pid
        if WATCHDOG is not None and pid is not None:
            WATCHDOG.watch(pid)
        yield broker
    finally:
        broker.close()
        if WATCHDOG is not None and pid is not None:
            WATCHDOG.forget(pid)


def write_config(folder: Path, workload: Workload, sims: dict[str, Any], broker: Mosquitto) -> Path:
    """The agent's config: one TCP bus per simulator (each listens on its own port)."""
    profiles = folder / "profiles"
    profiles.mkdir()
    # One profile for every device keeps the config short even at 100 devices x 100 points.
    profile_lines = [
        "manufacturer: swm-edge bench",
        f"model: hil simulator with {workload.points} float32 points",
        "kind: synthetic load",
        "source: python -m swm_edge_hil tcp (synthetic_points)",
        "points:",
    ]
    profile_lines += [
        f"  - {{name: p{i}, table: holding, address: {2 * i}, type: float32, unit: m3/h}}"
        for i in range(workload.points)
    ]
    (profiles / f"{PROFILE_NAME}.yaml").write_text("\n".join(profile_lines) + "\n")
    host = sims["host"]
    lines = [
        f"gateway: {{id: {GATEWAY}, site: bench}}",
        f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max: 5}}",
        f"buffer: {{path: {json.dumps(str(folder / 'buffer.sqlite'))}, max_mb: 256}}",
        "buses:",
    ]
    lines += [
        f"  - {{id: tcp-{i}, type: modbus-tcp, host: {host}, port: {port}, timeout: 1.0}}"
        for i, port in enumerate(sims["ports"])
    ]
    lines.append("devices:")
    lines += [
        f"  - {{id: dev-{i}, bus: tcp-{i}, unit: {sims['unit']}, "
        f"interval: {workload.interval:g}, profile: {PROFILE_NAME}}}"
        for i in range(len(sims["ports"]))
    ]
    config = folder / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


# ---- measurement -------------------------------------------------------------------------


def _cpu_times(proc: psutil.Process | None) -> tuple[float, float]:
    """(user, system) CPU-seconds of a process, all threads; zeros if it is gone."""
    if proc is None:
        return 0.0, 0.0
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0, 0.0
    return times.user, times.system


def _peak_rss(proc: psutil.Process, sampled: float) -> float:
    """VmHWM (the kernel's own high-water mark) where there is one, else our samples' max."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return sampled


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _parse_ts(text: str) -> float:
    # Python 3.11's fromisoformat takes the trailing "Z" of the wire contract.
    return datetime.datetime.fromisoformat(text).timestamp()


def _wait_for_all_devices(
    collector: MqttCollector, agent: subprocess.Popen[bytes], devices: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with status {agent.returncode}")
        seen = {m.topic for m in collector.messages()}
        if len(seen) >= devices:
            return
        time.sleep(0.2)
    raise RuntimeError(f"not every device published within {timeout:g} s")


def _sleep_until(wall: float, agent: subprocess.Popen[bytes], rss: list[float]) -> None:
    """Sleep until ``time.time() >= wall``, sampling the agent's RSS and watching it live."""
    proc = psutil.Process(agent.pid)
    while (left := wall - time.time()) > 0:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with status {agent.returncode}")
        with contextlib.suppress(psutil.Error):
            rss.append(float(proc.memory_info().rss))
        time.sleep(min(left, 0.25))


def analyse(
    messages: Sequence[Message], t0: float, t1: float
) -> tuple[int, int, int, list[float], int, int]:
    """(messages, good values, bad values, sorted latencies s, missing, duplicates) of [t0, t1)."""
    in_window = [m for m in messages if t0 <= m.received_at < t1]
    good = bad = 0
    latencies: list[float] = []
    window_seqs: list[int] = []
    for msg in in_window:
        doc = msg.json()
        window_seqs.append(int(doc["seq"]))
        latencies.append(msg.received_at - _parse_ts(doc["ts"]))
        for item in doc["readings"].values():
            if item["quality"] == "good":
                good += 1
            else:
                bad += 1
    missing = duplicates = 0
    if window_seqs:
        # A seq of the window's range that arrived late (after t1) is not missing; only one
        # that never arrived is. Parsing every message for its seq is cheap next to the rest.
        everything = {int(m.json()["seq"]) for m in messages}
        low, high = min(window_seqs), max(window_seqs)
        missing = sum(1 for s in range(low, high + 1) if s not in everything)
        duplicates = len(window_seqs) - len(set(window_seqs))
    latencies.sort()
    return len(in_window), good, bad, latencies, missing, duplicates


def _log_problems(log_path: Path) -> int:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if " WARNING " in line or " ERROR " in line)


def start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the agent for the window: collapsed stacks (``raw``), one line per stack."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(exe, os.X_OK):
        Console(stderr=True).print("[yellow]py-spy not found; --profile ignored[/yellow]")
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds))]
    # --nonblocking: py-spy reads the agent's memory without pausing it, so the agent's own
    # figures move as little as possible; --threads tells the loop from the workers.
    argv += ["--rate", "200", "--nonblocking", "--threads", "--format", "raw", "-o", str(out)]
    return _popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")

# Where a sample's time goes, by the first of these functions found on its stack (most
# specific first): the stages of the data path, so the figures read as "what to optimise".
STAGES: tuple[tuple[str, str, str], ...] = (
    (
        "Buffer.append",
        "swm_edge/buffer.py",
        "buffer: append (points to JSON, SQLite insert, commit)",
    ),
    ("Buffer.fetch", "swm_edge/buffer.py", "buffer: fetch (SQLite select, JSON to points)"),
    ("Buffer.ack", "swm_edge/buffer.py", "buffer: ack (SQLite delete, commit)"),
    ("encode", "swm_edge/publish/encoders/json_v1.py", "publish: JSON encode (wire v1)"),
    ("Destination._publish_rows", "swm_edge/publish/mqtt.py", "publish: paho publish()"),
    ("ModbusDriver.read", "drivers/modbus/__init__.py", "poll: Modbus driver (requests, decode)"),
    ("DevicePoller.run", "swm_edge/scheduler.py", "poll: scheduler, sink, other"),
    ("Client.loop_forever", "paho/mqtt/client.py", "mqtt network thread (socket I/O, PUBACKs)"),
    ("Destination._on_published", "swm_edge/publish/mqtt.py", "publish: PUBACK bookkeeping"),
    ("Spool.run", "swm_edge/spool.py", "spool: batching"),
)


def _split_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["func"], match["file"]) if match else (frame, "")


def _module_of(file: str) -> str:
    """Our own files one by one; anything else by its top-level package (json, paho...)."""
    if file.startswith(("swm_edge/", "drivers/")):
        return file
    return file.split("/", 1)[0].removesuffix(".py") or "?"


def summarise_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Sample shares by thread, data-path stage, module and function, from py-spy raw output.

    Shares are of all non-idle samples (py-spy leaves out threads that are waiting), so
    they split the agent's CPU time; line numbers are dropped so a function counts once.
    """
    counters: dict[str, collections.Counter[str]] = {
        key: collections.Counter() for key in ("threads", "stages", "modules", "self", "ours")
    }
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *raw_frames = stack.split(";")
        frames = [_split_frame(f) for f in raw_frames]
        total += count
        counters["threads"][thread.split(": ", 1)[-1]] += count
        stage = "event loop, other"
        for func, file, name in STAGES:
            if (func, file) in frames:
                stage = name
                break
        counters["stages"][stage] += count
        if frames:
            func, file = frames[-1]
            counters["modules"][_module_of(file)] += count
            counters["self"][f"{func} ({file})"] += count
        # Inclusive time of our own functions, counted once per sample even when recursive.
        ours = {f"{fn} ({fl})" for fn, fl in frames if fl.startswith(("swm_edge/", "drivers/"))}
        for name in ours - {"<module> (swm_edge/__main__.py)", "run (swm_edge/cli/__init__.py)"}:
            counters["ours"][name] += count
    if not total:
        return {}
    summary: dict[str, Any] = {"samples": total}
    for key, counter in counters.items():
        summary[key] = [(name, 100.0 * n / total) for name, n in counter.most_common(top)]
    return summary


def run_workload(
    workload: Workload,
    seconds: float,
    warmup: float,
    profile_dir: Path | None,
    console: Console,
    messages_out: list[Message] | None = None,
) -> Result:
    """Bring the whole chain up, measure one steady window, bring it down again."""
    interval = workload.interval
    # Whole poll rounds in the window, so every window holds the same number of polls.
    window = max(interval, math.ceil(seconds / interval) * interval)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir())
        console.print(f"[bold]{workload.name}[/bold] {workload.title}: {workload.shape}")
        sims_proc, sims = stack.enter_context(simulators(workload.devices, workload.points))
        broker = stack.enter_context(mosquitto(tmp / "mosquitto"))
        config = write_config(tmp, workload, sims, broker)
        log_path = tmp / "agent.log"
        log_file = stack.enter_context(log_path.open("wb"))
        argv = [sys.executable, "-m", "swm_edge", "run", "--config", str(config)]
        argv += ["--log-format", "text"]
        agent = _popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        exit_status: list[int | None] = []
        # Registered after the collector below, so runs before it closes: the agent's last
        # messages and offline status still find a subscriber.
        stop_agent = contextlib.ExitStack()
        stop_agent.callback(lambda: exit_status.append(_stop(agent, 20.0)))
        try:
            collector = MqttCollector(broker.host, broker.port, TOPIC_FILTER)
            stack.callback(collector.close)
            stack.push(stop_agent)
            _wait_for_all_devices(collector, agent, workload.devices, timeout=60.0)
        except BaseException:
            stop_agent.close()
            console.print(log_path.read_text(errors="replace")[-3000:], markup=False)
            raise

        agent_ps = psutil.Process(agent.pid)
        watched = {
            "agent": agent_ps,
            "sims": psutil.Process(sims_proc.pid),
            "broker": psutil.Process(broker.pid) if broker.pid is not None else None,
            "bench": psutil.Process(),
        }
        rss: list[float] = []
        # Start half an interval past a poll slot: the window's edges fall between bursts
        # of messages, not in the middle of one.
        t0 = math.floor((time.time() + warmup) / interval) * interval + interval / 2
        if t0 < time.time() + warmup:
            t0 += interval
        _sleep_until(t0, agent, rss)
        cpu0 = {name: _cpu_times(proc) for name, proc in watched.items()}
        wall0 = time.monotonic()
        profiler = None
        if profile_dir is not None:
            profile_out = profile_dir / f"{workload.name}-agent.pyspy.txt"
            profiler = start_profiler(agent.pid, window, profile_out)
            if profiler is not None:
                # Also on the error paths: a py-spy left running would outlive the bench.
                stack.callback(_stop, profiler, 5.0)
        t1 = t0 + window
        _sleep_until(t1, agent, rss)
        cpu1 = {name: _cpu_times(proc) for name, proc in watched.items()}
        wall = time.monotonic() - wall0
        rss_final = float(agent_ps.memory_info().rss)
        rss_peak = _peak_rss(agent_ps, max([*rss, rss_final]))
        load_1m = os.getloadavg()[0]
        # Late messages of the window must still count as arrived for the seq check.
        time.sleep(min(5.0, 2.0 + interval))
        profile: dict[str, Any] = {}
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=30)
            _stop(profiler, 5.0)
            if profile_out.exists():
                profile = summarise_profile(profile_out)
                profile["file"] = str(profile_out)
        stop_agent.close()
        messages = collector.messages()
        if messages_out is not None:
            # For bench/run.py: scheduling jitter from the same run's ts values.
            messages_out.extend(messages)

    count, good, bad, latencies, missing, duplicates = analyse(messages, t0, t1)

    def pct(name: str) -> float:
        return 100.0 * (sum(cpu1[name]) - sum(cpu0[name])) / wall

    agent_cpu = sum(cpu1["agent"]) - sum(cpu0["agent"])
    agent_system = cpu1["agent"][1] - cpu0["agent"][1]
    mib = 1024.0 * 1024.0
    return Result(
        workload=workload.name,
        title=workload.title,
        shape=workload.shape,
        target=workload.target,
        target_met=workload.met(pct("agent"), good / window),
        window_s=window,
        offered_rps=workload.offered,
        delivered_rps=good / window,
        messages_ps=count / window,
        bad_values=bad,
        agent_cpu_pct=pct("agent"),
        agent_system_share=100.0 * agent_system / agent_cpu if agent_cpu else math.nan,
        cpu_s_per_1000=1000.0 * agent_cpu / good if good else math.nan,
        rss_peak_mib=rss_peak / mib,
        rss_final_mib=rss_final / mib,
        latency_p50_ms=1000.0 * _quantile(latencies, 0.50),
        latency_p99_ms=1000.0 * _quantile(latencies, 0.99),
        latency_max_ms=1000.0 * (latencies[-1] if latencies else math.nan),
        missing_seqs=missing,
        duplicate_seqs=duplicates,
        sims_cpu_pct=pct("sims"),
        broker_cpu_pct=pct("broker"),
        bench_cpu_pct=pct("bench"),
        load_avg_1m=load_1m,
        agent_exit=exit_status[0] if exit_status else None,
        agent_log_problems=_log_problems(log_path),
        profile=profile,
    )


# ---- report ------------------------------------------------------------------------------


def _rows(results: Sequence[Result]) -> list[tuple[str, list[str]]]:
    """The report's rows: (label, one value per workload); short labels fit 80 columns."""

    def each(fmt: str) -> list[str]:
        return [fmt.format(r=r) for r in results]

    return [
        ("devices x points @ interval", each("{r.shape}")),
        ("window, s", each("{r.window_s:g}")),
        ("offered readings/s", each("{r.offered_rps:,.0f}")),
        ("delivered readings/s", each("{r.delivered_rps:,.0f}")),
        ("bad values", each("{r.bad_values}")),
        ("messages/s", each("{r.messages_ps:,.1f}")),
        ("agent CPU, %", each("{r.agent_cpu_pct:.2f}")),
        ("agent CPU, kernel share", each("{r.agent_system_share:.0f} %")),
        ("agent CPU-s / 1000 readings", each("{r.cpu_s_per_1000:.4f}")),
        ("agent RSS peak / final, MiB", each("{r.rss_peak_mib:.1f} / {r.rss_final_mib:.1f}")),
        ("latency p50 / p99, ms", each("{r.latency_p50_ms:.0f} / {r.latency_p99_ms:.0f}")),
        ("latency max, ms", each("{r.latency_max_ms:.0f}")),
        ("missing seqs / duplicates", each("{r.missing_seqs} / {r.duplicate_seqs}")),
        ("simulators CPU, %", each("{r.sims_cpu_pct:.1f}")),
        ("mosquitto CPU, %", each("{r.broker_cpu_pct:.1f}")),
        ("subscriber (bench) CPU, %", each("{r.bench_cpu_pct:.1f}")),
        ("load average 1 min, at end", each("{r.load_avg_1m:.2f}")),
        ("agent exit / log warnings", each("{r.agent_exit} / {r.agent_log_problems}")),
        ("target", each("{r.target}")),
        ("target met", [{True: "yes", False: "NO", None: "-"}[r.target_met] for r in results]),
    ]


_CAPTION = (
    "CPU % = % of one core (user+system, all threads) over the window; delivered = good point "
    "values received by the subscriber; latency = receive time - message ts (poll start)"
)


def results_table(results: Sequence[Result]) -> Table:
    """One column per workload (the metrics are too many to fit as columns)."""
    table = Table(
        title="swm-edge end to end: simulators -> agent -> mosquitto -> subscriber",
        caption=_CAPTION,
    )
    table.add_column("metric")
    for r in results:
        table.add_column(f"{r.workload} {r.title}", justify="right")
    for label, values in _rows(results):
        table.add_row(label, *values)
    return table


def results_markdown(results: Sequence[Result]) -> str:
    """The same table as GitHub Markdown, for docs/performance.md."""
    head = ["metric", *(f"{r.workload} {r.title}" for r in results)]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(results)]
    lines += ["| " + " | ".join([label, *values]) + " |" for label, values in _rows(results)]
    return "\n".join(lines) + "\n"


def print_profile(console: Console, result: Result) -> None:
    prof = result.profile
    if not prof:
        return
    console.print(
        f"\n[bold]{result.workload} agent profile[/bold] ({prof['samples']} py-spy samples of "
        f"non-idle threads; {prof['file']})"
    )
    sections = (
        ("by thread", "threads"),
        ("by stage of the data path", "stages"),
        ("by module (self time)", "modules"),
        ("by function (self time)", "self"),
        ("our functions (inclusive time)", "ours"),
    )
    for title, key in sections:
        table = Table(title=title, title_justify="left")
        table.add_column("%", justify="right")
        table.add_column("where")
        for name, pct in prof[key]:
            table.add_row(f"{pct:.1f}", name)
        console.print(table)


def machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="all", choices=[*WORKLOADS, "all", "custom"])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per workload")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--devices", type=int, default=50, help="custom workload only")
    parser.add_argument("--points", type=int, default=100, help="custom workload only")
    parser.add_argument("--interval", type=float, default=1.0, help="custom workload only")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record the agent with py-spy during the window (adds some load)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (for docs)"
    )
    args = parser.parse_args(argv)

    if args.workload == "all":
        chosen = list(WORKLOADS.values())
    elif args.workload == "custom":
        chosen = [Workload("custom", "custom", args.devices, args.points, args.interval)]
    else:
        chosen = [WORKLOADS[args.workload]]

    if args.profile is not None:
        # Before anything starts: a bad folder should not cost a whole run.
        args.profile.mkdir(parents=True, exist_ok=True)
    console = Console()
    # Ctrl-C raises KeyboardInterrupt; SIGTERM/SIGHUP are turned into an exception too, so
    # the same finally blocks stop every child process whichever way the bench is stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    console.print(f"machine: {machine()}")
    global WATCHDOG
    WATCHDOG = Watchdog()
    results: list[Result] = []
    try:
        for workload in chosen:
            results.append(run_workload(workload, args.seconds, args.warmup, args.profile, console))
    except (KeyboardInterrupt, Interrupted):
        console.print("[yellow]interrupted; every process stopped[/yellow]")
        return 130
    finally:
        if results:
            console.print(results_table(results))
            if args.markdown:
                print(results_markdown(results))
            for result in results:
                print_profile(console, result)
            if args.json is not None:
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        WATCHDOG.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
