"""The wall clock jumps forward and back under the running agent; monotonic time does not.

The agent (``swm-edge run``, a subprocess) runs under libfaketime (Debian package
``faketime``) with ``FAKETIME_TIMESTAMP_FILE`` (re-read at most once a second:
``FAKETIME_CACHE_DURATION=1``; ``FAKETIME_NO_CACHE=1`` costs a file read per clock call),
so the test moves the agent's wall clock by rewriting an offset in a file, and
``FAKETIME_DONT_FAKE_MONOTONIC=1`` so ``time.monotonic`` (timeouts, asyncio) is untouched,
as on a gateway whose clock NTP or ``date -s`` steps. The test process, the broker and the
simulated site keep the real clock.

Steps: +1 h, then back 10 min, then back 1 h more (below the real time).

Asserted:

* ``seq`` is contiguous and every poll produced a reading (nothing lost);
* each device keeps polling in real (monotonic) time through every step: no stall waiting
  out a backward step, no burst of catch-up polls after a forward one. The bounds are
  loose (gaps < 5 s, at most one reading per slot plus 4): under libfaketime the agent is
  markedly slower on a loaded CI machine (slots skipped as overruns, publishing lagging
  by seconds, also with a constant ``FAKETIME=+0``), while a stall or a catch-up burst
  would be 600 s, 1 h or 7200 readings;
* the agent logs each step (ClockMonitor), and readings taken after a step carry the
  new time.

libfaketime 0.9.10 (Debian 12) with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` breaks
``time.sleep`` on Python >= 3.11 (EINVAL from ``clock_nanosleep(CLOCK_MONOTONIC,
TIMER_ABSTIME)``, wolfcw/libfaketime#426): the agent runs with a ``sitecustomize`` that
makes ``time.sleep`` a ``select()`` wait (a relative timeout, unaffected by the step).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import GATEWAY, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, unavailable

# Debian's multiarch path (x86_64-linux-gnu, aarch64-linux-gnu, ...)
LIBFAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/faketime/libfaketime.so.1"),
)
INTERVAL = 0.5
DEVICES = ("flow-1", "pressure-1", "quality-1")
# (offset of the agent's wall clock from the real one after the step, what is logged)
STEPS = [(3600, "forward"), (3000, "back"), (-600, "back")]
PHASE = 4.0  # seconds of real time between steps

SITECUSTOMIZE = '''\
"""Test shim: time.sleep without clock_nanosleep (libfaketime#426)."""
import select as _select
import time as _time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _select.select([], [], [], seconds)


_time.sleep = _sleep
'''


@pytest.fixture(autouse=True)
def _needs_libfaketime() -> None:
    if not LIBFAKETIME.exists():
        unavailable("libfaketime not installed (apt-get install faketime)")


def faked_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    shim = tmp_path / "faketime-shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    offset = tmp_path / "faketime-offset"
    offset.write_text("+0\n")
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": path,
    }
    return env, offset


def test_faketime_moves_only_the_wall_clock(tmp_path: Path) -> None:
    """The mechanism itself, in a tiny subprocess: time.time jumps, monotonic and
    sleeping do not."""
    import subprocess
    import sys

    env, offset = faked_env(tmp_path)
    code = (
        "import sys, time\n"
        "for _ in range(2):\n"
        "    w, m = time.time(), time.monotonic(); time.sleep(0.1)\n"
        "    print(w, m, flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(os.environ, **env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    wall0, mono0 = map(float, proc.stdout.readline().split())
    real0 = time.time()
    offset.write_text("+3600\n")
    time.sleep(2.5)  # FAKETIME_CACHE_DURATION=1 is checked in whole seconds: up to 2 s
    proc.stdin.write("\n")
    proc.stdin.flush()
    wall1, mono1 = map(float, proc.stdout.readline().split())
    real1 = time.time()
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(10) == 0
    assert abs(wall0 - real0) < 2
    assert abs(wall1 - real1 - 3600) < 2
    assert 1 < mono1 - mono0 < 6


def ts(doc: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()


def test_wall_clock_jumps_during_a_run(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    env, offset = faked_env(tmp_path)
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    sub.wait_subscribed()
    agent = run_agent(site_config(tmp_path, mosquitto, site, interval=INTERVAL), env=env)
    for device in DEVICES:
        sub.wait_for(lambda m, d=device: m.json()["device"] == d, 30, count=3)
    # (real monotonic time of the step, offset after it)
    steps: list[tuple[float, int]] = []
    time.sleep(PHASE)
    for seconds, _ in STEPS:
        offset.write_text(f"{seconds:+d}\n")
        steps.append((time.monotonic(), seconds))
        time.sleep(PHASE)
    end = time.monotonic()
    assert agent.stop() == 0
    log = agent.log()
    assert "Traceback" not in log

    messages = sub.messages()
    docs = [m.json() for m in messages]
    # nothing lost: seq contiguous (duplicates allowed: at-least-once)
    seqs = sorted({d["seq"] for d in docs})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    # the real time of each message's arrival, and the agent's clock offset its ts shows
    # (offsets are multiples of 600 s apart; publishing lags a few seconds at most)
    real = {id(m): time.time() - (time.monotonic() - m.received_monotonic) for m in messages}
    offsets = [0] + [seconds for seconds, _ in STEPS]

    seen: set[int] = set()
    for device in DEVICES:
        mine = [m for m in messages if m.json()["device"] == device]
        arrivals = [m.received_monotonic for m in mine]
        # polls keep coming in real time through every step: no stall waiting out a
        # backward step (600 s and 1 h here; a few seconds of lag are libfaketime's cost)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert max(gaps) < 5.0, (device, [round(g, 2) for g in gaps])
        # ... and no burst of catch-up polls after a forward step (1 h = 7200 slots)
        span = end - arrivals[0]
        assert len({m.json()["seq"] for m in mine}) <= span / INTERVAL + 4, (device, len(mine))
        # every phase produced readings, each stamped with the clock of its time
        phases = []
        for m in sorted(mine, key=lambda m: m.json()["seq"]):
            shown = ts(m.json()) - real[id(m)]
            phase = min(range(len(offsets)), key=lambda i: abs(shown - offsets[i]))
            assert -6.0 < shown - offsets[phase] <= 1.0, (device, m.json()["ts"], shown)
            phases.append(phase)
        # in seq order the readings go through the phases in order, none skipped back
        assert phases == sorted(phases), (device, phases)
        seen |= set(phases)
    assert seen == set(range(len(offsets))), seen

    # the agent logged every step, with its direction
    logged = re.findall(r"wall clock stepped (forward|back) by ([0-9.]+) s", log)
    assert [d for d, _ in logged] == [direction for _, direction in STEPS], logged
    sizes = [float(s) for _, s in logged]
    wanted = [3600, 600, 3600]
    assert all(abs(a - b) < 3 for a, b in zip(sizes, wanted, strict=True)), sizes
