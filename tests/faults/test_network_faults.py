"""The real agent under broker and network faults (issue 7, "Proof under load and faults").

The agent publishes through a TCP proxy (hil/netproxy.py) that stops forwarding, resets,
delays or throttles, to a mosquitto that is also stopped and restarted; a backend-like
subscriber keeps a persistent session. After every fault the agent is stopped (SIGTERM,
exit 0) and the run must show:

* every reading the agent read was delivered: each seq from 1 to the last one the buffer
  gave out (``sqlite_sequence``) arrived, at least once, and a duplicate is a true duplicate;
* per-device order: for each device, ``ts`` rises with ``seq``;
* the in-flight window: the proxy never saw more than ``inflight`` QoS 1 publishes
  unacknowledged on one connection.

Durations are short by default; ``SWM_EDGE_LONG_FAULTS=1`` (or ``--long-faults``) runs
longer outages and more cycles (see conftest.py).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from swm_edge.testing import wait_until

Scale = Callable[[float, float], float]

pytestmark = pytest.mark.timeout(900)


INTERVAL = 1  # the polling interval of the rig's config (s)


def parse_ts(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts)


def exercise(
    rig: Any, fault: Callable[[], None], *, stop_in_a_poll: bool = False
) -> dict[str, Any]:
    """Start the agent, let it publish, run ``fault`` (which ends with the proxy passing
    and the broker up), let the backlog drain, stop the agent and check the run.

    ``stop_in_a_poll``: send SIGTERM just after a poll started (polls are aligned to the
    wall clock's whole seconds), so the readings it takes are committed during the stop."""
    agent = rig.start_agent()
    assert rig.wait_seq(3, 30), f"no telemetry before the fault:\n{agent.log()[-3000:]}"
    fault()
    # Live readings follow the backlog: wait for one taken 2 s after the fault ended.
    healed = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(parse_ts(d["ts"]) > healed for d in rig.telemetry()):
            break
        time.sleep(0.2)
    if stop_in_a_poll:
        time.sleep(1.02 - time.time() % 1)
    stopped_at = time.time()
    rc = agent.stop(30)
    log = agent.log()
    assert rc == 0, f"exit status {rc}:\n{log[-3000:]}"
    last, buffered = rig.buffer_state()
    assert last >= 6, "too few readings to prove anything"
    # A poll under way when SIGTERM came is finished and committed, and delivered before
    # the agent disconnects (Destination.close waits for it): nothing is left behind.
    assert not buffered, (
        f"rows left in the buffer after a clean stop: {buffered}, stop at {stopped_at}\n"
        f"{log[-3000:]}"
    )
    want = set(range(1, last + 1))
    with contextlib.suppress(AssertionError):  # what is missing is told below
        wait_until(lambda: want <= rig.seqs(), 15, "every seq at the subscriber")
    docs = rig.telemetry()
    seqs = {d["seq"] for d in docs}
    missing = sorted(want - seqs)
    assert not missing, (
        f"{len(missing)} of {last} readings never delivered: {missing[:20]}; "
        f"{len(buffered)} rows still in the buffer"
    )
    assert max(seqs) <= last, f"a seq above the buffer's last ({last}) arrived: {max(seqs)}"
    # at-least-once: a duplicate is the very same message
    by_seq: dict[int, dict[str, Any]] = {}
    for d in docs:
        assert by_seq.setdefault(d["seq"], d) == d, f"seq {d['seq']} arrived with two contents"
    # per-device order: ts rises with seq
    for device in sorted({d["device"] for d in by_seq.values()}):
        stamps = [
            (seq, parse_ts(d["ts"])) for seq, d in sorted(by_seq.items()) if d["device"] == device
        ]
        for (s0, t0), (s1, t1) in itertools.pairwise(stamps):
            assert t1 > t0, f"{device}: seq {s1} at {t1} is not after seq {s0} at {t0}"
    # the in-flight window, as counted on the wire
    proxy = rig.proxy
    assert proxy.malformed == [], proxy.malformed
    assert proxy.publishes >= len(want), (proxy.publishes, len(want))
    assert proxy.max_inflight <= rig.inflight, (
        f"{proxy.max_inflight} QoS 1 publishes in flight on one connection, window {rig.inflight}"
    )
    assert "Traceback" not in log, log[-3000:]
    print(
        f"last seq {last}, duplicates {len(docs) - len(by_seq)}, "
        f"connections {len(proxy.connections)}, max in flight {proxy.max_inflight}, "
        f"QoS 1 publishes {proxy.publishes}"
    )
    return {
        "last": last,
        "duplicates": len(docs) - len(by_seq),
        "connections": len(proxy.connections),
        "max_inflight": proxy.max_inflight,
        "log": log,
    }


def test_broker_stopped_and_restarted_repeatedly(fault_rig: Any, scale: Scale) -> None:
    cycles = int(scale(3, 20))

    def fault() -> None:
        for _ in range(cycles):
            time.sleep(1.5)
            fault_rig.broker.stop()
            time.sleep(scale(2, 4))
            fault_rig.broker.start()

    run = exercise(fault_rig, fault)
    assert run["connections"] >= cycles + 1
    assert "mqtt default: recovered after" in run["log"]


def test_blackhole_longer_than_keepalive(fault_rig: Any, scale: Scale) -> None:
    keepalive = fault_rig.keepalive

    def fault() -> None:
        time.sleep(1)
        fault_rig.proxy.blackhole()
        # paho pings after keepalive s without a packet in, and drops the link after as
        # many again without an answer: ~2 x keepalive, plus margin
        time.sleep(scale(2 * keepalive + 3, 6 * keepalive))
        fault_rig.proxy.passthrough()

    run = exercise(fault_rig, fault)
    # only the keepalive can tell a silent link: the agent noticed and reconnected
    assert "connection lost" in run["log"], run["log"][-3000:]
    assert run["connections"] >= 2


def test_connections_reset_every_few_seconds(fault_rig: Any, scale: Scale) -> None:
    rounds = int(scale(4, 30))
    proxy = fault_rig.proxy

    def fault() -> None:
        for i in range(rounds):
            time.sleep(2)
            if i % 2:  # every other time, refuse new connections for a second as well
                proxy.reset(refuse=True)
                time.sleep(1)
                proxy.refuse(False)
            else:
                proxy.reset()

    run = exercise(fault_rig, fault)
    # a reset finds no connection when the agent is still in its backoff
    assert proxy.resets >= rounds // 2, proxy.resets
    assert run["connections"] >= rounds // 2 + 1


def test_delay_300_ms(fault_rig: Any, scale: Scale) -> None:
    def fault() -> None:
        fault_rig.proxy.delay(0.3)
        time.sleep(scale(6, 40))
        fault_rig.proxy.passthrough()

    # also: the readings of a poll under way at the stop are delivered (after a restart)
    run = exercise(fault_rig, fault, stop_in_a_poll=True)
    assert run["max_inflight"] >= 2  # the acknowledgements did come late


def test_throttled_to_2_kb_per_second(fault_rig: Any, scale: Scale) -> None:
    def fault() -> None:
        fault_rig.proxy.throttle(2000)
        time.sleep(scale(8, 60))
        fault_rig.proxy.passthrough()

    exercise(fault_rig, fault)
