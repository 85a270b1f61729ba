"""Serial-line faults against the real agent: one misbehaving device on a shared RS-485 line.

The demo site's RS-485 line (a :class:`~swm_edge_hil.nullmodem.NullModem` relay) carries the
KELLER pressure transmitter (unit 1, ``pressure-1``) and the Yosemitech sonde (unit 2,
``quality-1``). For every fault kind of :mod:`swm_edge_hil.faults` the pressure transmitter
is broken while the agent (``swm-edge run`` in a subprocess) polls both every
``INTERVAL`` seconds:

* the sonde keeps its schedule: a reading every slot, all of good quality;
* the pressure transmitter gets bad readings carrying the reason below, and no value is
  taken from a broken answer;
* once the fault is cleared, the pressure transmitter reads good again.

Expected reasons (what the agent reports, and why that is right):

==============  ===============  =================================================
fault           reason           why
==============  ===============  =================================================
silent          timeout          nothing arrived
exception:4     exception:4      the device's own answer
garbage         crc              bytes arrived but no frame with a valid CRC
bad_crc         crc              the frame is there, its CRC is not
wrong_unit      crc              a valid frame, but from another unit: not ours,
                                 never taken as data (skipped; the agent times out
                                 having received only that: ``crc``)
truncated       crc              bytes arrived, the frame never completes
overlong        crc              on RTU a frame ends with a silence; the bytes up to
                                 that silence carry no valid CRC as a whole
late:0.4        timeout          the answer comes after the 0.3 s timeout (and
                                 after the 50 ms the agent waits for late answers)
intermittent    timeout          some answers missing: those readings are
                                 ``timeout``, the answered ones carry served values
late_echo       timeout          the answer to request N arrives during request N+1;
                                 see the three dedicated tests at the end
==============  ===============  =================================================

Which request follows a held ``late_echo`` answer depends on the order the agent polls the
two devices in a slot, so the parametrized test leaves it out and three tests make it
deterministic by choosing which unit's next request gets the echo (the sonde's: alone, or
in one write with the sonde's answer; the pressure transmitter's own next request).

Two findings of this suite are fixed by the agent's own RTU framing (``backend: native``,
swm_edge.modbus.rtu and swm_edge.bus.RtuLine): a late foreign frame read together with the
right answer no longer swallows that answer (the foreign frame is skipped, parsing goes on
after it), and a late answer of the same unit is no longer taken as the answer to its next
block read (a timed-out device's further requests of a turn are not sent, and its next
exchange starts with a check request whose answer has another length). An over-long frame
is a ``crc`` (bytes right behind an answer make the frame on the wire longer).

One agent, one broker and one site serve the whole module (start-up costs more than a
case); each case clears the fault at its end. The relay applies every fault kind itself;
where a held ``late_echo`` answer goes is set with
:meth:`~swm_edge_hil.nullmodem.NullModem.echo_late`.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import GATEWAY, AgentProcess, SiteRunner, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, MqttCollector, find_mosquitto

INTERVAL = 0.5
FAULTY, HEALTHY = "pressure-1", "quality-1"


class Rig:
    """Broker, frozen demo site, agent and a telemetry collector, shared by the module."""

    def __init__(self, tmp: Path) -> None:
        self.broker = Mosquitto(workdir=tmp / "mosquitto").start()
        self.runner = SiteRunner(tick=0, serial_link=tmp / "by-id" / "usb-rs485-if00")
        self.site: DemoSite = self.runner.site
        self.site.freeze()
        self.sub = MqttCollector(self.broker.host, self.broker.port, f"swm/{GATEWAY}/+/telemetry")
        self.sub.wait_subscribed()
        # The RTU framing under test is the agent's own (the default backend, named here
        # because the harness's default is another one).
        self.agent = AgentProcess(
            site_config(tmp, self.broker, self.site, interval=INTERVAL, backend="native")
        )

    def docs(self, device: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            m.json()
            for m in self.sub.messages()
            if m.received_monotonic >= since and m.json()["device"] == device
        ]

    def close(self) -> None:
        if self.agent.proc.poll() is None:
            self.agent.stop()
        self.sub.close()
        self.runner.close()
        self.broker.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed", pytrace=False)
    rig = Rig(tmp_path_factory.mktemp("serial-faults"))
    try:
        rig.sub.wait_for(lambda m: m.json()["device"] == FAULTY, 30)
        yield rig
        assert rig.agent.stop() == 0
        assert "Traceback" not in rig.agent.log()
    finally:
        rig.close()


def all_good(doc: dict[str, Any]) -> bool:
    return all(r["quality"] == "good" for r in doc["readings"].values())


def all_bad(doc: dict[str, Any], reason: str) -> bool:
    return all(
        r["quality"] == "bad" and r.get("error") == reason and r.get("value") is None
        for r in doc["readings"].values()
    )


def wrong_values(doc: dict[str, Any], served: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Good readings whose value is not what the (frozen) simulator serves for that point."""
    wrong = {}
    for name, r in doc["readings"].items():
        if r["quality"] != "good":
            continue
        want = served[name]
        same = (
            math.isclose(r["value"], want, rel_tol=1e-9)
            if isinstance(want, float)
            else r["value"] == want
        )
        if not same:
            wrong[name] = (r["value"], want)
    return wrong


def slot(doc: dict[str, Any]) -> float:
    """The wall-clock time of a reading's slot (its ``ts``) in seconds."""
    return dt.datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()


def run_fault(
    rig: Rig, fault: str, *, every_slot: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Put ``fault`` on the pressure transmitter for six slots, clear it, wait for it to
    read good again; returns the docs of (faulty, healthy) of the slots entirely inside
    the fault."""
    line = rig.site.null_modem
    start = time.monotonic()
    rig.sub.wait_for(
        lambda m: (
            m.json()["device"] == FAULTY and all_good(m.json()) and m.received_monotonic > start
        ),
        10,
    )
    line.set_fault(1, fault)
    fault_on = time.time()
    time.sleep(6 * INTERVAL + 0.2)
    line.set_fault(1, None)
    line.faults.take_held()  # a late_echo answer still held is gone with the fault
    fault_off = time.time()
    off_mono = time.monotonic()
    # recovers: good again within a few slots
    rig.sub.wait_for(
        lambda m: (
            m.json()["device"] == FAULTY
            and all_good(m.json())
            and m.received_monotonic > off_mono + INTERVAL
        ),
        10,
    )
    rig.sub.wait_for(lambda m: m.json()["device"] == HEALTHY and slot(m.json()) > fault_off, 5)
    # slots that started entirely inside the fault (not straddling either switch)
    first, last = fault_on + INTERVAL, fault_off - INTERVAL
    faulty = [d for d in rig.docs(FAULTY) if first <= slot(d) <= last]
    healthy = [d for d in rig.docs(HEALTHY) if first <= slot(d) <= last]
    assert len(faulty) >= 3, faulty
    if every_slot:  # the faulty device keeps being polled every slot, too
        assert_every_slot(faulty, first, last)
    return faulty, healthy


def assert_every_slot(docs: list[dict[str, Any]], first: float, last: float) -> None:
    slots = sorted(round(slot(d) / INTERVAL) for d in docs)
    assert slots == list(range(slots[0], slots[0] + len(slots))), slots
    assert len(slots) >= round((last - first) / INTERVAL) - 1, slots


def assert_healthy(rig: Rig, healthy: list[dict[str, Any]]) -> None:
    """The other device on the line: a reading every slot, all good, all served values."""
    assert len(healthy) >= 3, healthy
    slots = sorted(round(slot(d) / INTERVAL) for d in healthy)
    assert slots == list(range(slots[0], slots[0] + len(slots))), slots
    bad = [d["readings"] for d in healthy if not all_good(d)]
    assert not bad, bad
    served = rig.site.sonde.values()
    assert not [wrong_values(d, served) for d in healthy if wrong_values(d, served)]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "timeout"),
        ("exception:4", "exception:4"),
        ("garbage", "crc"),
        ("bad_crc", "crc"),
        ("wrong_unit", "crc"),
        ("truncated", "crc"),
        # the answer followed by bytes with no silence between: an RTU frame ends with a
        # silence, so the bytes up to it are one over-long frame (swm_edge.modbus.rtu)
        ("overlong", "crc"),
        ("late:0.4", "timeout"),
        ("intermittent:0.5", "timeout"),
    ],
)
def test_one_faulty_device_on_a_shared_line(rig: Rig, fault: str, reason: str) -> None:
    rig.site.null_modem.echo_late()
    faulty, healthy = run_fault(rig, fault)
    served = rig.site.pressure.values()
    # never a value taken from a broken answer
    assert not [wrong_values(d, served) for d in faulty if wrong_values(d, served)]
    if fault.startswith("intermittent"):
        readings = [r for d in faulty for r in d["readings"].values()]
        assert all(r["quality"] == "good" or r.get("error") == reason for r in readings)
        assert any(r["quality"] == "bad" for r in readings), faulty
    else:
        assert all(all_bad(d, reason) for d in faulty), [d["readings"] for d in faulty]
    assert_healthy(rig, healthy)


def test_late_echo_before_another_units_request_is_skipped(rig: Rig) -> None:
    """The pressure transmitter answers too late; its answer reaches the agent alone,
    right after the agent sent the sonde's request: the sonde's read skips a valid frame
    of another unit and keeps reading, so the sonde is not disturbed."""
    rig.site.null_modem.echo_late([2])
    try:
        # a timed-out poll (0.3 s + the 50 ms quiet time) and the sonde's read share a
        # 0.5 s slot: on a busy machine the pair may overrun it, a counted, skipped slot
        faulty, healthy = run_fault(rig, "late_echo", every_slot=False)
    finally:
        rig.site.null_modem.echo_late()
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    assert all(all_good(d) for d in healthy), [d["readings"] for d in healthy]
    served = rig.site.sonde.values()
    assert not [wrong_values(d, served) for d in healthy if wrong_values(d, served)]


def test_late_echo_with_another_units_answer(rig: Rig) -> None:
    """The pressure transmitter's late answer and the sonde's own answer arrive in one
    read: the foreign frame is skipped and the sonde's answer behind it is found.

    (pymodbus' RTU framer reports the whole receive buffer as used once it finds one valid
    frame, so with ``backend: pymodbus`` the answer behind the skipped frame is dropped and
    the healthy sonde gets ``crc``.)"""
    rig.site.null_modem.echo_late([2], with_answer=True)
    try:
        faulty, healthy = run_fault(rig, "late_echo")
    finally:
        rig.site.null_modem.echo_late()
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    assert_healthy(rig, healthy)


def test_late_echo_into_the_same_units_next_request(rig: Rig) -> None:
    """The pressure transmitter's late answer lands in its own next request (same unit,
    function and byte count: RTU has no transaction id). Its further requests of a turn
    are not sent after a timeout, and its next exchange starts with a check request of
    another answer length (swm_edge.bus.RtuLine): the late answers are recognised and
    skipped, so no value is ever taken from an answer to another request."""
    rig.site.null_modem.echo_late([1])
    try:
        faulty, healthy = run_fault(rig, "late_echo")
    finally:
        rig.site.null_modem.echo_late()
    served = rig.site.pressure.values()
    wrong = [wrong_values(d, served) for d in faulty if wrong_values(d, served)]
    assert not wrong, wrong
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    assert_healthy(rig, healthy)
