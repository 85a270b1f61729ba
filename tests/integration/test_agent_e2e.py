"""The real agent (subprocess) against simulated water devices (Modbus TCP and RTU over a
pty line) and a real mosquitto: values, outages, kill -9, faults."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from swm_edge_hil.harness import GATEWAY, per_device, site_config, telemetry
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto, MqttCollector

DEVICES = {"flow-1": "flow_meter", "pressure-1": "pressure", "quality-1": "sonde"}


def sim_for(site: DemoSite, device_id: str) -> Any:
    return getattr(site, DEVICES[device_id])


def wait_docs(
    collector: MqttCollector, count: int, timeout: float = 30, **where: Any
) -> list[dict[str, Any]]:
    def match(m: Any) -> bool:
        if not m.topic.endswith("/telemetry"):
            return False
        doc = m.json()
        return all(doc.get(k) == v for k, v in where.items())

    return [m.json() for m in collector.wait_for(match, timeout, count=count)]


def assert_equals_simulator(doc: dict[str, Any], sim: Any) -> None:
    served = sim.values()
    units = {p.name: p.unit for p in sim.points}
    assert set(doc["readings"]) == set(served)
    for name, item in doc["readings"].items():
        want = served[name]
        assert item["quality"] == "good", (name, item)
        assert item.get("unit") == units[name], name
        assert type(item["value"]) is type(want), (name, item["value"], want)
        if isinstance(want, float):
            assert math.isclose(item["value"], want, rel_tol=1e-12), (name, item["value"], want)
        else:
            assert item["value"] == want, name


def test_published_values_equal_what_the_simulators_hold(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
    site.flow_meter.set("flow_rate", 0.0123)
    site.pressure.set("pressure", 4.25)
    agent = run_agent(site_config(tmp_path, mosquitto, site))
    for device in DEVICES:
        doc = wait_docs(sub, 1, device=device)[0]
        assert_equals_simulator(doc, sim_for(site, device))
    # change values while running: the next polls carry them
    site.pressure.set("pressure", 5.5)
    site.sonde.set("ph", 6.75)
    docs = wait_docs(sub, 1, timeout=10, device="pressure-1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        docs = per_device(telemetry(sub.messages()), "pressure-1")
        if docs[-1]["readings"]["pressure"]["value"] == 5.5:
            break
        time.sleep(0.2)
    assert docs[-1]["readings"]["pressure"] == {"value": 5.5, "unit": "bar", "quality": "good"}
    q = wait_docs(sub, 1, timeout=10, device="quality-1")
    deadline = time.monotonic() + 10
    while q[-1]["readings"]["ph"]["value"] != pytest.approx(6.75) and time.monotonic() < deadline:
        time.sleep(0.2)
        q = per_device(telemetry(sub.messages()), "quality-1")
    assert q[-1]["readings"]["ph"]["value"] == pytest.approx(6.75)
    assert agent.stop() == 0
    status = [m.json() for m in sub.messages(f"swm/{GATEWAY}/status")]
    assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
    # one seq per message, rising by one across devices
    seqs = [d["seq"] for d in telemetry(sub.messages())]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))


def test_polls_are_aligned_to_the_wall_clock(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    agent = run_agent(site_config(tmp_path, mosquitto, site, interval=1))
    docs = wait_docs(sub, 4, device="flow-1")
    agent.stop()
    millis = [int(d["ts"][20:23]) for d in docs]
    # each poll starts within ~60 ms after a whole second (TCP devices are polled at once)
    assert all(ms < 60 for ms in millis), millis


def test_broker_down_15_s_loses_nothing(
    tmp_path: Path, site: DemoSite, mosquitto_factory: Any, mqtt_collector: Any, run_agent: Any
) -> None:
    broker = mosquitto_factory(persistence=True)
    # A backend's subscriber keeps its session, so the broker queues what arrives while it
    # reconnects after the restart.
    sub = mqtt_collector(
        broker, f"swm/{GATEWAY}/+/telemetry", client_id="backend-1", persistent=True
    )
    agent = run_agent(site_config(tmp_path, broker, site, interval=1))
    wait_docs(sub, 2, device="quality-1")
    broker.stop()
    time.sleep(15)
    broker.start()
    time.sleep(3)
    agent.stop()
    # after the stop everything committed has been offered; wait for the tail to arrive
    docs = telemetry(sub.messages())
    seqs = sorted({d["seq"] for d in docs})
    assert seqs == list(range(1, seqs[-1] + 1)), "a seq is missing"
    # polling went on during the outage: ~18 s x 3 devices
    assert len(seqs) >= 3 * 16
    for device in DEVICES:
        stamps = sorted(d["ts"] for d in per_device(docs, device))
        assert len(stamps) >= 16
    log = agent.log()
    assert "connection lost" in log and "mqtt default: recovered after" in log


def test_sigkill_mid_run_loses_no_committed_reading(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    config = site_config(tmp_path, mosquitto, site, interval=0.5)
    for cycle in range(3):
        agent = run_agent(config)
        wait_docs(sub, 3 * (cycle + 1), timeout=30, device="flow-1")
        time.sleep(0.37 * cycle)
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
    agent = run_agent(config)
    time.sleep(3)
    assert agent.stop() == 0
    docs = telemetry(sub.messages())
    seqs = sorted({d["seq"] for d in docs})
    # seq continues across restarts, and every committed seq was delivered at least once
    assert seqs == list(range(1, seqs[-1] + 1))
    assert len(seqs) >= 3 * 10
    # duplicates are allowed (at-least-once) but are true duplicates
    by_seq: dict[int, dict[str, Any]] = {}
    for d in docs:
        assert by_seq.setdefault(d["seq"], d) == d


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "timeout"),
        ("exception:2", "exception:2"),
        ("garbage", "crc"),
        ("bad_crc", "crc"),
    ],
)
def test_serial_faults_give_bad_readings_and_recover(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Any,
    fault: str,
    reason: str,
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    agent = run_agent(site_config(tmp_path, mosquitto, site, interval=1))
    wait_docs(sub, 1, device="pressure-1")
    site.null_modem.set_fault(1, fault)  # the pressure transmitter (unit 1) misbehaves

    def bad(m: Any) -> bool:
        doc = m.json()
        return doc["device"] == "pressure-1" and all(
            r["quality"] == "bad" and r["error"] == reason for r in doc["readings"].values()
        )

    sub.wait_for(bad, 15, count=2)
    # the other device on the same line keeps its schedule with good values
    quality_before = len(per_device(telemetry(sub.messages()), "quality-1"))
    time.sleep(3)
    quality_docs = per_device(telemetry(sub.messages()), "quality-1")
    assert len(quality_docs) - quality_before >= 2
    assert all(r["quality"] == "good" for r in quality_docs[-1]["readings"].values())
    site.null_modem.set_fault(1, None)
    sub.wait_for(
        lambda m: (
            m.json()["device"] == "pressure-1"
            and m.json()["readings"]["pressure"]["quality"] == "good"
            and m.json()["seq"] > quality_docs[-1]["seq"]
        ),
        15,
    )
    assert agent.stop() == 0
    assert "Traceback" not in agent.log()


def test_tcp_device_exception_and_silence(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    agent = run_agent(site_config(tmp_path, mosquitto, site, interval=1))
    wait_docs(sub, 1, device="flow-1")
    assert site.tcp_server is not None
    for fault, reason in (("exception:4", "exception:4"), ("silent", "timeout")):
        site.tcp_server.set_fault(1, fault)
        sub.wait_for(
            lambda m, r=reason: (
                m.json()["device"] == "flow-1"
                and m.json()["readings"]["flow_rate"].get("error") == r
            ),
            15,
        )
    site.tcp_server.set_fault(1, None)
    sub.wait_for(
        lambda m: (
            m.json()["device"] == "flow-1"
            and m.json()["readings"]["flow_rate"]["quality"] == "good"
            and m.received_monotonic > time.monotonic() - 0.5
        ),
        20,
    )
    assert agent.stop() == 0


def test_serial_adapter_unplugged_and_replugged(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    agent = run_agent(site_config(tmp_path, mosquitto, site, interval=1))
    wait_docs(sub, 1, device="pressure-1")
    site.null_modem.unplug()
    sub.wait_for(
        lambda m: (
            m.json()["device"] == "pressure-1"
            and m.json()["readings"]["pressure"].get("error") == "connection"
        ),
        15,
    )
    time.sleep(2)
    site.null_modem.replug()
    t0 = time.monotonic()
    sub.wait_for(
        lambda m: (
            m.json()["device"] == "quality-1"
            and m.received_monotonic > t0
            and m.json()["readings"]["ph"]["quality"] == "good"
        ),
        30,
    )
    # the TCP flow meter never noticed
    flow = per_device(telemetry(sub.messages()), "flow-1")
    assert all(d["readings"]["flow_rate"]["quality"] == "good" for d in flow)
    assert agent.stop() == 0


def test_password_from_file_works_and_never_reaches_the_log(
    tmp_path: Path, site: DemoSite, mosquitto_factory: Any, mqtt_collector: Any, run_agent: Any
) -> None:
    secret = "Wq7-unlikely-secret-9f2"
    broker = mosquitto_factory(users={"gw-it": secret, "backend": "b"}, allow_anonymous=False)
    sub = mqtt_collector(broker, f"swm/{GATEWAY}/+/telemetry", username="backend", password="b")
    (tmp_path / "mqtt-password").write_text(secret + "\n")
    config = site_config(
        tmp_path, broker, site, mqtt_extra=", username: gw-it, password_file: mqtt-password"
    )
    agent = run_agent(config)
    wait_docs(sub, 1, device="flow-1")
    assert agent.stop() == 0
    log = agent.log()
    assert "connected to" in log  # debug logging was on, and it says nothing of the secret
    assert secret not in log
    assert secret not in config.read_text()

    # JSON logs, a rotated (wrong) password picked up by a reload, refused by the broker:
    # still no secret, old or new, in any line.
    wrong = "Zx4-rotated-but-wrong-77"
    agent = run_agent(config, log_format="json")
    wait_docs(sub, 2, device="flow-1")
    (tmp_path / "mqtt-password").write_text(wrong + "\n")
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "refused the connection" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent.stop() == 0
    log = agent.log()
    assert "mqtt default: settings changed, reconnecting" in log and "refused the connection" in log
    assert secret not in log and wrong not in log
