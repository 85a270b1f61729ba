"""The issue 7 benchmark suite: W1..W5 and scheduling jitter, one command, one table.

    python bench/run.py                      # everything, about 6 minutes
    python bench/run.py --only W3 W4         # some workloads
    python bench/run.py --hour               # W5 memory over a full compressed hour (+5 min)
    python bench/run.py --profile /tmp/prof  # also py-spy the agent during W2 and W3

Every workload runs the real agent (``python -m swm_edge run``) in its own process against
the hil/ simulators and a real mosquitto on loopback, with a subscriber in this process
(process management from ``bench_e2e.py``). A *reading* is one point value, as in
``bench_e2e.py``. Prints figures and a table (workload, figure, value, target, met?);
asserts nothing: the machine is shared and noisy.

W1  typical site, 20 Modbus TCP devices x 10 points every 1 s: agent CPU % of one core,
    RSS, publish latency (subscriber receive time - message ts, the read start).
W2  stress, 100 devices x 100 points every 0.25 s (40,000 readings/s offered, more than
    the agent sustains): delivered readings/s and CPU-s per 1000 readings.
W3  backlog: 1,000,000 readings (100,000 rows of 10 points) written into the buffer file
    first (``Buffer.append``, synchronous=NORMAL), as after an outage; then the agent starts
    on that file with the broker back and 20 devices polling live. Drain rate = backlog
    readings received / time from the first to the last backlog message; live latency of
    the readings polled meanwhile.
W4  RS-485: 8 RTU devices x 10 float32 points on one virtual line at 9600 baud, 8N2 (11 bits
    per character), every 1 s; the relay delivers each byte after its wire time
    (``bench/rtu_line.py``). Line busy time per cycle measured at the relay against the
    wire-time limit (bytes x 11 / baud + 3.5 characters of silence after each frame) and the
    timing model (``swm_edge.modbus.timing``, with device turnaround); requests per cycle
    counted at the relay against ``plan_reads``' minimum.
W5  footprint: process start to first telemetry at the subscriber (devices every 0.1 s so
    the first slot is near), ``python -X importtime -c "import swm_edge.agent"``, idle CPU
    (20 devices at ``interval: 3600``), RSS slope over W1 compressed to 0.1 s intervals.
J   scheduling jitter: message ts (read start) minus its slot on the wall-clock grid
    ``k * interval``, from W1's and W5's compressed run's messages.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_e2e as e2e
from bench_e2e import (
    GATEWAY,
    PROFILE_NAME,
    TOPIC_FILTER,
    Workload,
    _cpu_times,
    _popen,
    _quantile,
    _stop,
    mosquitto,
    simulators,
    temp_dir,
)

from swm_edge.broker import Mosquitto
from swm_edge.modbus.planner import plan_reads
from swm_edge.modbus.timing import poll_seconds
from swm_edge.model import DataType, PointSpec, PointValue, Reading
from swm_edge.model import Table as MbTable
from swm_edge.testing import Message, MqttCollector

MIB = 1024.0 * 1024.0
BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Row:
    workload: str
    figure: str
    value: str
    target: str = "-"
    met: bool | None = None


ROWS: list[Row] = []


def add(workload: str, figure: str, value: str, target: str = "-", met: bool | None = None) -> None:
    ROWS.append(Row(workload, figure, value, target, met))


def _ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


# ---- a chain with a config of our own ----------------------------------------------------


def _profile_file(folder: Path, points: int) -> None:
    profiles = folder / "profiles"
    profiles.mkdir(exist_ok=True)
    lines = [
        "manufacturer: swm-edge bench",
        f"model: hil simulator with {points} float32 points",
        "kind: synthetic load",
        "source: python -m swm_edge_hil tcp (synthetic_points)",
        "points:",
    ]
    lines += [
        f"  - {{name: p{i}, table: holding, address: {2 * i}, type: float32, unit: m3/h}}"
        for i in range(points)
    ]
    (profiles / f"{PROFILE_NAME}.yaml").write_text("\n".join(lines) + "\n")


def tcp_config(
    folder: Path,
    sims: dict[str, Any],
    broker: Mosquitto,
    interval: float,
    buffer: Path,
    inflight: int | None = None,
    batch: int = 1,
) -> Path:
    _profile_file(folder, int(sims["points"]))
    extra = f", inflight: {inflight}" if inflight is not None else ""
    extra += f", batch: {batch}" if batch > 1 else ""
    lines = [
        f"gateway: {{id: {GATEWAY}, site: bench}}",
        f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max: 5{extra}}}",
        f"buffer: {{path: {json.dumps(str(buffer))}, max_mb: 256}}",
        "buses:",
    ]
    lines += [
        f"  - {{id: tcp-{i}, type: modbus-tcp, host: {sims['host']}, port: {port}, timeout: 1.0}}"
        for i, port in enumerate(sims["ports"])
    ]
    lines.append("devices:")
    lines += [
        f"  - {{id: dev-{i}, bus: tcp-{i}, unit: {sims['unit']}, interval: {interval:g}, "
        f"profile: {PROFILE_NAME}}}"
        for i in range(len(sims["ports"]))
    ]
    config = folder / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    ps: psutil.Process
    started: float  # time.time() just before Popen
    log: Path


@contextlib.contextmanager
def agent_process(
    folder: Path, config: Path, collector: MqttCollector | None = None
) -> Iterator[Agent]:
    log_path = folder / "agent.log"
    with log_path.open("wb") as log_file:
        argv = [sys.executable, "-m", "swm_edge", "run", "--config", str(config)]
        argv += ["--log-format", "text"]
        started = time.time()
        proc = _popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            yield Agent(proc, psutil.Process(proc.pid), started, log_path)
        except BaseException:
            if proc.poll() is not None:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            _stop(proc, 20.0)


def wait_messages(
    collector: MqttCollector, agent: Agent, pred: Callable[[list[Message]], bool], timeout: float
) -> list[Message]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            tail = agent.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{tail}")
        msgs = collector.messages()
        if pred(msgs):
            return msgs
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for messages")


def sample_until(agent: Agent, until: float, rss: list[tuple[float, float]], step: float) -> None:
    while (left := until - time.time()) > 0:
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}")
        with contextlib.suppress(psutil.Error):
            rss.append((time.time(), agent.ps.memory_info().rss / MIB))
        time.sleep(min(left, step))


def cpu_s(agent: Agent) -> float:
    return sum(_cpu_times(agent.ps))


def jitter_ms(messages: Sequence[Message], interval: float) -> list[float]:
    """ts (read start) minus its slot ``k * interval``, in ms, sorted."""
    out = []
    for m in messages:
        ts = _ts(m.json()["ts"])
        out.append(1000.0 * (ts - math.floor(ts / interval + 1e-9) * interval))
    out.sort()
    return out


@dataclass(frozen=True)
class Poll:
    """One device poll as received: a plain v1 message or one entry of a batch message."""

    doc: dict[str, Any]  # seq, ts, readings (and device)
    received_at: float


def polls(messages: Sequence[Message]) -> list[Poll]:
    out = []
    for m in messages:
        doc = m.json()
        if "batch" in doc:
            out += [Poll({**e, "device": doc["device"]}, m.received_at) for e in doc["batch"]]
        else:
            out.append(Poll(doc, m.received_at))
    return out


def good_readings(items: Sequence[Message] | Sequence[Poll]) -> int:
    docs = [i.doc if isinstance(i, Poll) else i.json() for i in items]
    return sum(1 for d in docs for item in d["readings"].values() if item["quality"] == "good")


# ---- W1 and W2 through bench_e2e ---------------------------------------------------------


def run_w1(args: argparse.Namespace, console: Console, jitter_sets: dict[str, list[float]]) -> None:
    w = Workload("W1", "typical site", 20, 10, 1.0, max_cpu_pct=1.0)
    msgs: list[Message] = []
    r = e2e.run_workload(w, args.w1_seconds, 5.0, None, console, messages_out=msgs)
    add("W1", "shape", f"{r.shape}, {r.window_s:g} s window")
    add("W1", "delivered readings/s", f"{r.delivered_rps:,.0f} of {r.offered_rps:,.0f}")
    add("W1", "agent CPU, % of one core", f"{r.agent_cpu_pct:.2f}", "<= 1 %", r.agent_cpu_pct <= 1)
    add(
        "W1",
        "agent RSS peak, MiB",
        f"{r.rss_peak_mib:.1f}",
        "<= 60 MB",
        r.rss_peak_mib * MIB <= 60e6,
    )
    add("W1", "publish latency p50 / p99, ms", f"{r.latency_p50_ms:.0f} / {r.latency_p99_ms:.0f}")
    add("W1", "missing seqs / bad values", f"{r.missing_seqs} / {r.bad_values}")
    jitter_sets["W1 (1 s)"] = jitter_ms(msgs, 1.0)


def run_w2(args: argparse.Namespace, console: Console) -> None:
    w = Workload("W2", "stress", args.w2_devices, 100, args.w2_interval, min_delivered=20000.0)
    r = e2e.run_workload(w, args.w2_seconds, 5.0, args.profile, console)
    add("W2", "shape", f"{r.shape}, offered {r.offered_rps:,.0f}/s, {r.window_s:g} s window")
    add(
        "W2",
        "delivered readings/s",
        f"{r.delivered_rps:,.0f}",
        ">= 20,000 /s",
        r.delivered_rps >= 20000 and r.agent_cpu_pct <= 100,
    )
    add("W2", "agent CPU, % of one core", f"{r.agent_cpu_pct:.0f}")
    add("W2", "agent CPU-s per 1000 readings", f"{r.cpu_s_per_1000:.4f}")
    add("W2", "latency p50 / p99, ms", f"{r.latency_p50_ms:.0f} / {r.latency_p99_ms:.0f}")
    add(
        "W2",
        "simulators / mosquitto / bench CPU, %",
        f"{r.sims_cpu_pct:.0f} / {r.broker_cpu_pct:.0f} / {r.bench_cpu_pct:.0f}",
    )
    if r.profile:
        e2e.print_profile(console, r)


# ---- W3 backlog --------------------------------------------------------------------------


def prefill(path: Path, rows: int, points: int, devices: int, ts0: float) -> float:
    """``rows`` readings of ``points`` points into a fresh buffer file; returns seconds taken."""
    from swm_edge.buffer import Buffer

    started = time.perf_counter()
    buf = Buffer(path, max_bytes=256 * 1024 * 1024, synchronous="NORMAL")
    try:
        batch: list[Reading] = []
        for i in range(rows):
            values = {
                f"p{j}": PointValue.good(float(i % 997) + j * 0.5, "m3/h") for j in range(points)
            }
            batch.append(Reading(f"dev-{i % devices}", ts0 + i * 0.01, values))
            if len(batch) == 1000:
                buf.append(batch)
                batch = []
        if batch:
            buf.append(batch)
    finally:
        buf.close()
    return time.perf_counter() - started


def run_w3(args: argparse.Namespace, console: Console, batch: int) -> None:
    rows = args.w3_readings // 10
    tag = "W3" if batch == 1 else f"W3 batch {batch}"
    console.print(
        f"[bold]{tag}[/bold] backlog: {rows:,} rows x 10 points, then 20 x 10 @ 1 s live"
        + (f", mqtt.batch {batch}" if batch > 1 else "")
    )
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir())
        buffer = tmp / "buffer.sqlite"
        ts0 = time.time() - 7 * 86400  # a week-old outage: every backlog ts is older than now
        took = prefill(buffer, rows, 10, 20, ts0)
        size = buffer.stat().st_size / MIB
        console.print(
            f"  prefilled in {took:.1f} s ({rows * 10 / took:,.0f} readings/s), {size:.0f} MiB"
        )
        _, sims = stack.enter_context(simulators(20, 10))
        if args.broker_inflight is None:
            broker = stack.enter_context(mosquitto(tmp / "mosquitto"))
        else:
            # An experiment: mosquitto's max_inflight_messages (default 20) per client.
            broker = Mosquitto(
                workdir=tmp / "mosquitto",
                extra_config=[
                    "max_queued_messages 100000",
                    f"max_inflight_messages {args.broker_inflight}",
                ],
            )
            broker.start()
            if e2e.WATCHDOG is not None and broker.pid is not None:
                e2e.WATCHDOG.watch(broker.pid)
            stack.callback(broker.close)
        config = tcp_config(tmp, sims, broker, 1.0, buffer, args.inflight, batch)
        collector = MqttCollector(broker.host, broker.port, TOPIC_FILTER)
        stack.callback(collector.close)
        agent = stack.enter_context(agent_process(tmp, config))
        cutoff = agent.started - 3600

        def backlog(ms: Sequence[Message]) -> list[Poll]:
            return [p for p in polls(ms) if _ts(p.doc["ts"]) < cutoff]

        cpu0 = cpu_s(agent)
        wall0 = time.monotonic()
        profiler = None
        if args.profile is not None:
            out = args.profile / "W3-agent.pyspy.txt"
            # py-spy writes its file only when its duration runs out (not on SIGTERM): a
            # fixed 20 s, well inside the drain.
            profiler = e2e.start_profiler(agent.proc.pid, 20.0, out)
            if profiler is not None:
                stack.callback(_stop, profiler, 5.0)
        done_rows = 0
        deadline = time.monotonic() + args.w3_max_seconds
        seen = 0
        while time.monotonic() < deadline:
            if agent.proc.poll() is not None:
                raise RuntimeError(agent.log.read_text(errors="replace")[-3000:])
            msgs = collector.messages()
            # Only new messages need parsing.
            done_rows += len(backlog(msgs[seen:]))
            seen = len(msgs)
            if done_rows >= rows:
                break
            time.sleep(0.5)
        cpu = cpu_s(agent) - cpu0
        wall = time.monotonic() - wall0
        rss = agent.ps.memory_info().rss / MIB
        # Live readings polled late in the drain queue behind the last backlog rows: give
        # them time to arrive before the agent stops.
        time.sleep(5.0)
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=30)
            _stop(profiler, 5.0)
        msgs = collector.messages()
    back = backlog(msgs)
    back_readings = good_readings(back)
    first, last = min(p.received_at for p in back), max(p.received_at for p in back)
    span = max(last - first, 1e-9)
    drain = back_readings / span
    # Live readings polled while the backlog drained (by read start): the publisher sends
    # in seq order, so they arrive only after the backlog ahead of them.
    live = [p for p in polls(msgs) if first <= _ts(p.doc["ts"]) <= last]
    lat = sorted(p.received_at - _ts(p.doc["ts"]) for p in live)
    complete = back_readings >= rows * 10
    add(tag, "backlog", f"{rows * 10:,} readings ({rows:,} rows), file {size:.0f} MiB")
    add(
        tag,
        "drain rate, readings/s" + ("" if complete else " (partial)"),
        f"{drain:,.0f} ({back_readings:,} in {span:.1f} s)",
        ">= 50,000 /s",
        drain >= 50000,
    )
    add(tag, "first backlog message after agent start, s", f"{first - agent.started:.2f}")
    add(tag, "live readings polled during drain, /s", f"{good_readings(live) / span:,.0f} of 200")
    add(
        tag,
        "live latency during drain p50 / p99, ms",
        f"{1000 * _quantile(lat, 0.5):,.0f} / {1000 * _quantile(lat, 0.99):,.0f}",
    )
    add(tag, "agent CPU during drain, % / RSS MiB", f"{100 * cpu / wall:.0f} / {rss:.0f}")
    if profiler is not None and (args.profile / "W3-agent.pyspy.txt").exists():
        prof = e2e.summarise_profile(args.profile / "W3-agent.pyspy.txt")
        prof["file"] = str(args.profile / "W3-agent.pyspy.txt")
        fake = e2e.Result(**{**_empty_result(), "workload": "W3", "profile": prof})
        e2e.print_profile(console, fake)


def _empty_result() -> dict[str, Any]:
    import dataclasses

    out: dict[str, Any] = {}
    for f in dataclasses.fields(e2e.Result):
        if f.name != "profile":
            out[f.name] = None
    return out


# ---- W4 RS-485 ---------------------------------------------------------------------------


@contextlib.contextmanager
def rtu_line(
    devices: int, points: int
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any], list[dict[str, Any]]]]:
    argv = [sys.executable, str(BENCH_DIR / "rtu_line.py"), "--devices", str(devices)]
    argv += ["--points", str(points)]
    proc = _popen(argv, stdout=subprocess.PIPE)
    final: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"rtu line did not start ({proc.poll()})")
        yield proc, json.loads(line), final
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = proc.communicate(timeout=10)
            if out.strip():
                final.append(json.loads(out.splitlines()[-1]))
        _stop(proc, 5.0)


def run_w4(args: argparse.Namespace, console: Console) -> None:
    devices, points, baud, interval = args.w4_devices, 10, 9600, 1.0
    console.print(f"[bold]W4[/bold] RS-485: {devices} RTU devices x {points} points @ {baud} 8N2")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir())
        _, line, final = stack.enter_context(rtu_line(devices, points))
        broker = stack.enter_context(mosquitto(tmp / "mosquitto"))
        _profile_file(tmp, points)
        cfg = [
            f"gateway: {{id: {GATEWAY}, site: bench}}",
            f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max: 5}}",
            f"buffer: {{path: {json.dumps(str(tmp / 'buffer.sqlite'))}, max_mb: 64}}",
            "buses:",
            f"  - {{id: rs485, type: modbus-rtu, port: {line['port']}, baudrate: {baud}, "
            "parity: N, stopbits: 2, timeout: 0.5}",
            "devices:",
        ]
        cfg += [
            f"  - {{id: rtu-{u}, bus: rs485, unit: {u}, interval: {interval:g}, "
            f"profile: {PROFILE_NAME}}}"
            for u in line["units"]
        ]
        config = tmp / "config.yaml"
        config.write_text("\n".join(cfg) + "\n")
        collector = MqttCollector(broker.host, broker.port, TOPIC_FILTER)
        stack.callback(collector.close)
        agent = stack.enter_context(agent_process(tmp, config))
        wait_messages(collector, agent, lambda ms: len({m.topic for m in ms}) >= devices, 60)
        t0 = math.floor(time.time()) + 1.0 + 0.0  # whole cycles: slot k .. slot k + n
        t1 = t0 + args.w4_seconds
        rss: list[tuple[float, float]] = []
        sample_until(agent, t1 + 1.0, rss, 0.5)
        cycle_msgs = [m for m in collector.messages() if t0 <= _ts(m.json()["ts"]) < t1]
    # The line process has printed its log by now (stopped when the stack closed).
    if not final:
        add("W4", "line log", "missing", "-", None)
        return
    offset = line["wall_minus_mono"]
    wire = [(s + offset, e + offset, side, n) for s, e, side, n in final[0]["on_wire"]]
    in_window = [w for w in wire if t0 <= w[0] < t1]
    cycles = round(t1 - t0)
    requests = [w for w in in_window if w[2] == "device"]
    replies = [w for w in in_window if w[2] == "agent"]
    nbytes = sum(w[3] for w in in_window)
    char = 11 / baud
    # Frames: one per request and one per reply chunk group; the relay forwards whole
    # frames (it frames requests and counted responses), so chunks = frames.
    frames = len(requests) + len(replies)
    wire_limit = nbytes * char + frames * 3.5 * char
    # Busy: union of on-wire intervals per cycle, and first request start -> last reply end.
    busy = sum(e - s for s, e, _, _ in in_window)
    spans = []
    for k in range(cycles):
        c = [w for w in in_window if t0 + k <= w[0] < t0 + k + 1]
        if c:
            spans.append(max(w[1] for w in c) - min(w[0] for w in c))
    specs = [PointSpec(f"p{i}", MbTable.HOLDING, 2 * i, DataType("float32")) for i in range(points)]
    plan = plan_reads(specs)
    model = devices * poll_seconds(plan, baudrate=baud, parity="N", stopbits=2, bytesize=8)
    per_cycle = len(requests) / cycles
    minimum = devices * len(plan)
    add("W4", "shape", f"{devices} devices x {points} float32 @ 1 s, {baud} 8N2, {cycles} cycles")
    add(
        "W4",
        "requests per cycle (relay) / planner minimum",
        f"{per_cycle:.2f} / {minimum}",
        "= minimum",
        abs(per_cycle - minimum) < 0.01,
    )
    add("W4", "bytes on the line per cycle", f"{nbytes / cycles:,.0f}")
    add(
        "W4",
        "wire-time limit per cycle (bytes x 11/baud + 3.5-char gaps)",
        f"{1000 * wire_limit / cycles:.0f} ms = "
        f"{100 * wire_limit / (cycles * interval):.1f} % of the cycle",
    )
    add(
        "W4",
        "timing model per cycle (+10 ms turnaround each)",
        f"{1000 * model:.0f} ms = {100 * model / interval:.1f} %",
    )
    add(
        "W4",
        "measured: bytes on wire / cycle",
        f"{1000 * busy / cycles:.0f} ms = {100 * busy / (cycles * interval):.1f} %",
    )
    if spans:
        span_med = statistics.median(spans)
        add(
            "W4",
            "measured: round (1st request -> last reply) median / max",
            f"{1000 * span_med:.0f} / {1000 * max(spans):.0f} ms = "
            f"{100 * span_med / interval:.1f} %",
            "vs wire limit",
            None,
        )
        add("W4", "round / wire-time limit", f"{span_med / (wire_limit / cycles):.2f} x")
    # Silence the master leaves between the end of a reply and its next request (RTU wants
    # at least 3.5 characters; the relay does not enforce it, so this is the agent's own).
    gaps = []
    ordered = sorted(in_window)
    for prev, cur in itertools.pairwise(ordered):
        if prev[2] == "agent" and cur[2] == "device" and cur[0] - prev[1] < 0.5:
            gaps.append(cur[0] - prev[1])
    if gaps:
        gaps.sort()
        add(
            "W4",
            "agent gap reply end -> next request, min / p50 ms",
            f"{1000 * gaps[0]:.1f} / {1000 * _quantile(gaps, 0.5):.1f}",
            f">= 3.5 chars = {1000 * 3.5 * char:.1f} ms",
            gaps[0] >= 3.5 * char,
        )
    bad = sum(
        1 for m in cycle_msgs for i in m.json()["readings"].values() if i["quality"] != "good"
    )
    add(
        "W4",
        "readings per cycle / bad",
        f"{good_readings(cycle_msgs) / cycles:.0f} / {bad}",
    )


# ---- W5 footprint ------------------------------------------------------------------------


def import_time() -> tuple[float, float]:
    """(sum of -X importtime self times, ms; wall ms of the import beyond a bare interpreter)."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import swm_edge.agent"]
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    total = 0
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|", line)
        if m:
            total += int(m.group(1))

    def wall(code: str) -> float:
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - t)
        return best

    return total / 1000.0, 1000.0 * (wall("import swm_edge.agent") - wall("pass"))


def run_w5(args: argparse.Namespace, console: Console, jitter_sets: dict[str, list[float]]) -> None:
    console.print("[bold]W5[/bold] footprint")
    self_ms, wall_ms = import_time()
    add(
        "W5",
        "import swm_edge.agent: -X importtime total / wall",
        f"{self_ms:.0f} / {wall_ms:.0f} ms",
    )
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir())
        _, sims = stack.enter_context(simulators(20, 10))
        broker = stack.enter_context(mosquitto(tmp / "mosquitto"))
        collector = MqttCollector(broker.host, broker.port, TOPIC_FILTER)
        stack.callback(collector.close)

        # Start-up: median of 3 cold starts (fresh buffer each), devices every 0.1 s.
        startups = []
        for k in range(3):
            run_dir = tmp / f"start-{k}"
            run_dir.mkdir()
            config = tcp_config(run_dir, sims, broker, 0.1, run_dir / "buffer.sqlite")
            n0 = len(collector.messages())
            with agent_process(run_dir, config) as agent:
                msgs = wait_messages(collector, agent, lambda ms, n0=n0: len(ms) > n0, 30)
                startups.append(msgs[n0].received_at - agent.started)
        s = statistics.median(startups)
        add(
            "W5",
            "start-up to first publish (median of 3), s",
            f"{s:.2f} ({', '.join(f'{x:.2f}' for x in startups)})",
            "<= 1.5 s",
            s <= 1.5,
        )

        # Idle: 20 devices at interval 3600, nothing to poll in the window.
        run_dir = tmp / "idle"
        run_dir.mkdir()
        config = tcp_config(run_dir, sims, broker, 3600, run_dir / "buffer.sqlite")
        with agent_process(run_dir, config) as agent:
            time.sleep(5.0)
            c0, w0 = cpu_s(agent), time.monotonic()
            ctx0 = agent.ps.num_ctx_switches()
            time.sleep(args.idle_seconds)
            c1, w1 = cpu_s(agent), time.monotonic()
            ctx1 = agent.ps.num_ctx_switches()
            rss_idle = agent.ps.memory_info().rss / MIB
        wakeups = (ctx1.voluntary - ctx0.voluntary) / (w1 - w0)
        add(
            "W5",
            "idle CPU, % of one core (20 devices @ 3600 s)",
            f"{100 * (c1 - c0) / (w1 - w0):.2f} ({wakeups:.0f} voluntary switches/s, "
            f"RSS {rss_idle:.0f} MiB)",
        )

        # Memory over compressed W1: 20 x 10 at 0.1 s = 10 W1-seconds per second.
        run_dir = tmp / "compressed"
        run_dir.mkdir()
        config = tcp_config(run_dir, sims, broker, 0.1, run_dir / "buffer.sqlite")
        n0 = len(collector.messages())
        with agent_process(run_dir, config) as agent:
            wait_messages(collector, agent, lambda ms: len({m.topic for m in ms[n0:]}) >= 20, 30)
            t_start = time.time()
            rss: list[tuple[float, float]] = []
            c0, w0 = cpu_s(agent), time.monotonic()
            sample_until(agent, t_start + args.compressed_seconds, rss, 1.0)
            c1, w1 = cpu_s(agent), time.monotonic()
            peak = e2e._peak_rss(agent.ps, max(r for _, r in rss)) / MIB
        msgs = [m for m in collector.messages()[n0:] if t_start <= m.received_at]
    polls = len(msgs) / 20
    # Slope over the second half (after caches and pools have filled), MiB per W1-hour.
    half = [(t, r) for t, r in rss if t >= t_start + args.compressed_seconds / 2]
    slope_per_s = _slope(half) if len(half) > 2 else math.nan
    w1_seconds_per_s = 1.0 / 0.1  # each second of the run holds 10 s of W1 polls
    per_hour = slope_per_s * 3600 / w1_seconds_per_s
    add(
        "W5",
        "compressed W1 (0.1 s), polls per device / W1-equivalent",
        f"{polls:,.0f} / {polls / 60:.0f} min  (agent CPU {100 * (c1 - c0) / (w1 - w0):.0f} %)",
    )
    add("W5", "RSS start / end / peak, MiB", f"{rss[0][1]:.1f} / {rss[-1][1]:.1f} / {peak:.1f}")
    add(
        "W5",
        "RSS slope, 2nd half, MiB per W1-hour",
        f"{per_hour:+.2f}",
        "no growth",
        abs(per_hour) < 1.0,
    )
    jitter_sets["W5 compressed (0.1 s)"] = jitter_ms(msgs, 0.1)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(r for _, r in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (r - my) for t, r in points) / den if den else math.nan


def report_jitter(jitter_sets: dict[str, list[float]]) -> None:
    for name, values in jitter_sets.items():
        if not values:
            continue
        p50, p99 = _quantile(values, 0.5), _quantile(values, 0.99)
        add(
            "J",
            f"read start - slot, {name}, p50 / p99 / max ms",
            f"{p50:.1f} / {p99:.1f} / {values[-1]:.1f} (n={len(values)})",
            "p99 <= 10 ms",
            p99 <= 10,
        )


# ---- main --------------------------------------------------------------------------------


def table() -> Table:
    t = Table(title="swm-edge issue 7 benchmark suite")
    for col in ("workload", "figure", "value", "target", "met?"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in ROWS:
        t.add_row(
            r.workload, r.figure, r.value, r.target, {True: "yes", False: "NO", None: ""}[r.met]
        )
    return t


def markdown() -> str:
    lines = ["| workload | figure | value | target | met? |", "| --- | --- | ---: | --- | --- |"]
    for r in ROWS:
        met = {True: "yes", False: "**NO**", None: ""}[r.met]
        lines.append(f"| {r.workload} | {r.figure} | {r.value} | {r.target} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        default=["W1", "W2", "W3", "W4", "W5"],
        choices=["W1", "W2", "W3", "W4", "W5"],
    )
    parser.add_argument("--w1-seconds", type=float, default=30.0)
    parser.add_argument("--w2-seconds", type=float, default=20.0)
    parser.add_argument("--w2-devices", type=int, default=100)
    parser.add_argument("--w2-interval", type=float, default=0.25)
    parser.add_argument("--w3-readings", type=int, default=1_000_000)
    parser.add_argument(
        "--w3-max-seconds",
        type=float,
        default=90.0,
        help="stop waiting for the drain after this; the rate is then partial",
    )
    parser.add_argument(
        "--w3-batch",
        type=int,
        nargs="+",
        default=[1, 50],
        help="W3: run once per mqtt.batch value (default: 1, the default, and 50)",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=None,
        help="W3: the agent's mqtt.inflight (default: the agent's, 64)",
    )
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=None,
        help="W3: mosquitto max_inflight_messages (default: mosquitto's, 20)",
    )
    parser.add_argument("--w4-devices", type=int, default=8)
    parser.add_argument("--w4-seconds", type=float, default=20.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--compressed-seconds",
        type=float,
        default=60.0,
        help="W5 memory run; 360 = one hour of W1 polls",
    )
    parser.add_argument("--hour", action="store_true", help="--compressed-seconds 360")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the agent during W2 and W3 (skews their figures)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args(argv)
    if args.hour:
        args.compressed_seconds = 360.0
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    console = Console()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, e2e._raise_interrupted)
    started = time.monotonic()
    console.print(f"machine: {e2e.machine()}; load average {os.getloadavg()[0]:.2f}")
    e2e.WATCHDOG = e2e.Watchdog()
    jitter_sets: dict[str, list[float]] = {}
    steps: dict[str, Callable[[], None]] = {
        "W1": lambda: run_w1(args, console, jitter_sets),
        "W2": lambda: run_w2(args, console),
        "W3": lambda: [run_w3(args, console, batch) for batch in args.w3_batch],
        "W4": lambda: run_w4(args, console),
        "W5": lambda: run_w5(args, console, jitter_sets),
    }
    try:
        for name in args.only:
            try:
                steps[name]()
            except (KeyboardInterrupt, e2e.Interrupted):
                raise
            except Exception as exc:  # one broken workload must not lose the others' figures
                console.print(f"[red]{name} failed: {exc!r}[/red]")
                add(name, "error", repr(exc)[:80], "-", False)
        report_jitter(jitter_sets)
    except (KeyboardInterrupt, e2e.Interrupted):
        console.print("[yellow]interrupted; every process stopped[/yellow]")
        return 130
    finally:
        add(
            "-",
            "whole run, s / load average 1 min at end",
            f"{time.monotonic() - started:.0f} / {os.getloadavg()[0]:.2f}",
        )
        console.print(table())
        if args.markdown:
            print(markdown())
        if args.json is not None:
            args.json.write_text(json.dumps([r.__dict__ for r in ROWS], indent=2) + "\n")
        e2e.WATCHDOG.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
