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
                                 never taken as data (pymodbus skips it; the agent
                                 times out having received bytes: ``crc``)
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

Findings kept as strict xfails: a late foreign frame read together with the right answer
swallows that answer; a late answer of the same unit is taken as the answer to its next
block read. (An over-long frame used to be taken as good data; fixed in swm_edge.bus.)

One agent, one broker and one site serve the whole module (start-up costs more than a
case); each case clears the fault at its end. The fault kinds added to
:mod:`swm_edge_hil.faults` for this issue (wrong_unit, truncated, overlong, late_echo) are
applied by the relay through :func:`wire_frame_faults` until the relay applies them itself.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.faults import FRAME_KINDS, FaultKind
from swm_edge_hil.harness import GATEWAY, AgentProcess, SiteRunner, site_config
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, MqttCollector, find_mosquitto

INTERVAL = 0.5
FAULTY, HEALTHY = "pressure-1", "quality-1"


def wire_frame_faults(
    line: NullModem, echo_to: set[int] | None = None, echo_with_answer: list[bool] | None = None
) -> None:
    """Make ``line`` apply the frame-rewriting kinds and ``late_echo``.

    The relay (hil/nullmodem.py) applies the original kinds itself and passes a reply of
    any other kind through unchanged; this wraps its reply and request hooks on one
    instance: a FRAME_KINDS reply is rewritten with :meth:`FaultTable.reply`, a LATE_ECHO
    reply is held (:meth:`FaultTable.hold`) and sent to the agent right after the next
    request the relay frames, before that request's own answer. ``echo_to`` (a set the
    caller may change while the line runs) limits the release to requests to those units;
    empty or ``None``: any request. When ``echo_with_answer[0]`` is true the echo is
    instead written together with the next bytes the relay sends the agent (that request's
    answer), as when a late answer ends right where the next one begins on the wire.
    """
    merged = echo_with_answer if echo_with_answer is not None else [False]
    queued: list[bytes] = []
    send = line._send
    reply, request = line._reply, line._request

    def _reply(frame: bytes, now: float) -> None:
        pending = line._pending
        if pending is not None and pending.fault.kind in FRAME_KINDS:
            line._pending = None
            line.stats["corrupted"] += 1
            line._send("agent", line.faults.reply(pending.fault, frame), now)
        elif pending is not None and pending.fault.kind is FaultKind.LATE_ECHO:
            line._pending = None
            line.stats["delayed"] += 1
            line.faults.hold(frame)
        else:
            reply(frame, now)

    def _request(frame: bytes, now: float) -> None:
        request(frame, now)
        if echo_to and frame[0] not in echo_to:
            return
        held = line.faults.take_held()
        if held is not None:
            line.stats["echoed"] += 1
            if merged[0]:
                queued.append(held)
            else:
                line._send("agent", held, now)

    def _send(side: str, data: bytes, now: float, *, delay: float = 0.0) -> None:
        if side == "agent" and queued:
            data = b"".join(queued) + data
            queued.clear()
        send(side, data, now, delay=delay)

    line._reply = _reply  # type: ignore[method-assign]
    line._request = _request  # type: ignore[method-assign]
    line._send = _send  # type: ignore[method-assign]


class Rig:
    """Broker, frozen demo site, agent and a telemetry collector, shared by the module."""

    def __init__(self, tmp: Path) -> None:
        self.broker = Mosquitto(workdir=tmp / "mosquitto").start()
        self.runner = SiteRunner(tick=0, serial_link=tmp / "by-id" / "usb-rs485-if00")
        self.site: DemoSite = self.runner.site
        self.site.freeze()
        #: units whose next request gets a held late_echo answer (empty: any unit)
        self.echo_to: set[int] = set()
        #: [True]: a late_echo answer goes out in one write with the next answer
        self.echo_with_answer = [False]
        wire_frame_faults(self.site.null_modem, self.echo_to, self.echo_with_answer)
        self.sub = MqttCollector(self.broker.host, self.broker.port, f"swm/{GATEWAY}/+/telemetry")
        self.sub.wait_subscribed()
        self.agent = AgentProcess(site_config(tmp, self.broker, self.site, interval=INTERVAL))

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
        # used to be taken as good data (pymodbus drops trailing bytes unseen); the bus now
        # counts the bytes of the answer
        ("overlong", "crc"),
        ("late:0.4", "timeout"),
        ("intermittent:0.5", "timeout"),
    ],
)
def test_one_faulty_device_on_a_shared_line(rig: Rig, fault: str, reason: str) -> None:
    rig.echo_to.clear()
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
    right after the agent sent the sonde's request: pymodbus' framer skips a frame from
    another device id and keeps waiting, so the sonde is not disturbed.

    Only when the agent's read returns the late frame on its own; the next test is the
    case where it comes in one piece with the sonde's answer.
    """
    rig.echo_to.clear()
    rig.echo_to.add(2)
    rig.echo_with_answer[0] = False
    try:
        # a timed-out poll (0.3 s + the 50 ms quiet time) and the sonde's read share a
        # 0.5 s slot: on a busy machine the pair may overrun it, a counted, skipped slot
        faulty, healthy = run_fault(rig, "late_echo", every_slot=False)
    finally:
        rig.echo_to.clear()
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    # The sonde's slots: on a busy machine the agent may read the echo and the sonde's
    # answer in one go, the swallowed-answer finding (strict xfail below); so here only:
    # whatever the sonde published is its own data or an explained bad reading.
    assert all(all_good(d) or all_bad(d, "crc") for d in healthy), healthy


SWALLOWED = (
    "a late answer of unit 1 directly followed by unit 2's own answer (one read on the "
    "agent's side) fails unit 2's read with 'crc': pymodbus' RTU framer "
    "(FramerRTU.decode) reports the whole receive buffer as used once it finds one valid "
    "frame, so after skipping the foreign frame the right answer behind it is dropped; "
    "the healthy sonde gets bad readings because of the pressure transmitter. Same root "
    "cause as the over-long frame finding."
)


@pytest.mark.xfail(strict=True, reason=SWALLOWED)
def test_late_echo_with_another_units_answer(rig: Rig) -> None:
    rig.echo_to.clear()
    rig.echo_to.add(2)
    rig.echo_with_answer[0] = True
    try:
        faulty, healthy = run_fault(rig, "late_echo")
    finally:
        rig.echo_to.clear()
        rig.echo_with_answer[0] = False
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    assert_healthy(rig, healthy)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "a device answering later than timeout + 50 ms has its late answer to one block "
        "read taken as the answer to its next block read (same unit, function and byte "
        "count: RTU has no transaction id): pressure and pressure_2 are published, with "
        "good quality, as temperature_t and temperature"
    ),
)
def test_late_echo_into_the_same_units_next_request(rig: Rig) -> None:
    """The pressure transmitter's late answer lands in its own next request."""
    rig.echo_to.clear()
    rig.echo_to.add(1)
    try:
        faulty, healthy = run_fault(rig, "late_echo")
    finally:
        rig.echo_to.clear()
    served = rig.site.pressure.values()
    wrong = [wrong_values(d, served) for d in faulty if wrong_values(d, served)]
    assert not wrong, wrong
    assert all(all_bad(d, "timeout") for d in faulty), [d["readings"] for d in faulty]
    assert_healthy(rig, healthy)
