"""Several MQTT destinations over one buffer, and failover between a destination's hosts,
with the real agent, real brokers and the simulated site."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from swm_edge_hil.harness import GATEWAY, site_config, telemetry
from swm_edge_hil.site import DemoSite

from swm_edge.broker import free_port
from swm_edge.buffer import BufferReader
from swm_edge.testing import Mosquitto, MqttCollector, wait_until


def two_destinations(tmp_path: Path, site: DemoSite, cloud: Mosquitto, scada: Mosquitto) -> Path:
    config = site_config(tmp_path, cloud, site)
    text = config.read_text()
    head, rest = text.split("mqtt: {", 1)
    mapping, tail = rest.split("}\n", 1)
    options = mapping.split(",", 2)[2]  # keepalive, reconnect_min/max
    text = (
        f"{head}mqtt:\n"
        f"  - {{name: cloud, host: {cloud.host}, port: {cloud.port},{options}}}\n"
        f"  - {{name: scada, host: {scada.host}, port: {scada.port},{options}}}\n{tail}"
    )
    config.write_text(text)
    return config


def seqs_of(collector: MqttCollector) -> list[int]:
    return [d["seq"] for d in telemetry(collector.messages())]


def test_a_destination_down_for_30_s_holds_back_nothing_and_gets_its_backlog(
    tmp_path: Path,
    site: DemoSite,
    mosquitto_factory: Any,
    mqtt_collector: Any,
    run_agent: Any,
) -> None:
    cloud = mosquitto_factory()
    scada = mosquitto_factory(persistence=True)
    at_cloud = mqtt_collector(cloud, f"swm/{GATEWAY}/+/telemetry")
    at_scada = mqtt_collector(
        scada, f"swm/{GATEWAY}/+/telemetry", client_id="scada-host", persistent=True
    )
    config = two_destinations(tmp_path, site, cloud, scada)
    assert "name: scada" in config.read_text()
    agent = run_agent(config)
    wait_until(lambda: len(seqs_of(at_scada)) >= 3, 20, "first readings at scada")

    scada.stop()
    stopped_at = time.time()
    time.sleep(5)
    # the status command shows each destination: cloud up, scada down
    status = subprocess.run(
        [sys.executable, "-m", "swm_edge", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    dests = {d["name"]: d for d in json.loads(status.stdout)["destinations"]}
    assert (dests["cloud"]["connected"], dests["scada"]["connected"]) == (True, False)
    assert dests["cloud"]["endpoint"] == f"{cloud.host}:{cloud.port}"
    assert dests["scada"]["payload"] == "json" and dests["scada"]["last_error"]
    text = subprocess.run(
        [sys.executable, "-m", "swm_edge", "status", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert "MQTT cloud (json)" in text and "MQTT scada (json)" in text
    time.sleep(25)
    during = [m for m in at_cloud.messages() if m.received_at > stopped_at]
    # the cloud got every second's three readings on time: no gap longer than 2 s
    arrivals = [stopped_at, *(m.received_at for m in during)]
    assert len(during) >= 3 * 27, len(during)
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < 2.0
    lag = [m.received_at - _epoch(m.json()["ts"]) for m in during]
    assert max(lag) < 1.5, max(lag)

    scada.start()
    last_cloud = max(seqs_of(at_cloud))
    wait_until(
        lambda: set(range(1, last_cloud + 1)) <= set(seqs_of(at_scada)), 60, "scada's backlog"
    )
    assert agent.stop() == 0
    cloud_seqs, scada_seqs = seqs_of(at_cloud), seqs_of(at_scada)
    final = max(cloud_seqs)
    assert sorted(set(cloud_seqs)) == list(range(1, final + 1))
    assert sorted(set(scada_seqs)) == list(range(1, max(scada_seqs) + 1))
    assert max(scada_seqs) == final  # the last polls reached both before the agent stopped
    # duplicates only where QoS 1 allows them (in flight when the connection broke)
    assert len(cloud_seqs) == len(set(cloud_seqs))
    assert len(scada_seqs) - len(set(scada_seqs)) <= 64
    # and the buffer keeps nothing both have
    with BufferReader(tmp_path / "buffer.sqlite") as reader:
        summary = reader.stats()
    assert summary.depth == 0, summary


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_hosts_are_tried_in_order(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    dead = free_port()  # nothing listens: the primary is down
    config = site_config(tmp_path, mosquitto, site)
    config.write_text(
        config.read_text().replace(
            f"host: {mosquitto.host}, port: {mosquitto.port},",
            f"hosts: ['127.0.0.1:{dead}', '{mosquitto.host}:{mosquitto.port}'],",
        )
    )
    assert "hosts:" in config.read_text()
    agent = run_agent(config)
    wait_until(lambda: len(seqs_of(sub)) >= 3, 20, "readings through the standby")
    assert agent.stop() == 0
    log = agent.log()
    assert f"cannot connect to 127.0.0.1:{dead}" in log
    assert f"mqtt default: connected to {mosquitto.host}:{mosquitto.port}" in log


def test_senml_cbor_destination_end_to_end(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    import cbor2

    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
    site.pressure.set("pressure", 4.25)
    config = site_config(tmp_path, mosquitto, site, mqtt_extra=", payload: senml-cbor")
    agent = run_agent(config)
    wait_until(
        lambda: len(sub.messages(f"swm/{GATEWAY}/pressure-1/senml-cbor")) >= 2, 20, "SenML CBOR"
    )
    assert agent.stop() == 0
    pack = cbor2.loads(sub.messages(f"swm/{GATEWAY}/pressure-1/senml-cbor")[0].payload)
    # RFC 8428 CBOR labels: -2 base name, -3 base time, 0 name, 1 unit, 2 value
    assert pack[0][-2] == f"{GATEWAY}/pressure-1/"
    by_name = {r[0]: r for r in pack}
    assert by_name["pressure"][1] == "Pa" and by_name["pressure"][2] == 425_000  # 4.25 bar
    assert abs(pack[0][-3] - time.time()) < 30
    assert not sub.messages(f"swm/{GATEWAY}/+/telemetry")  # only the configured format


def test_reload_adds_a_destination_without_touching_the_first(
    tmp_path: Path,
    site: DemoSite,
    mosquitto_factory: Any,
    mqtt_collector: Any,
    run_agent: Any,
) -> None:
    cloud, scada = mosquitto_factory(), mosquitto_factory()
    at_cloud = mqtt_collector(cloud, f"swm/{GATEWAY}/#")
    at_scada = mqtt_collector(scada, f"swm/{GATEWAY}/+/telemetry")
    config = site_config(tmp_path, cloud, site)
    agent = run_agent(config)
    wait_until(lambda: len(seqs_of(at_cloud)) >= 3, 20, "first readings")
    # the same first destination, now named in a list, plus a second one
    both = two_destinations(tmp_path, site, cloud, scada).read_text()
    config.write_text(both.replace("name: cloud", "name: default"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(seqs_of(at_scada)) >= 6, 20, "readings at the new destination")
    assert agent.stop() == 0
    cloud_seqs, scada_seqs = seqs_of(at_cloud), seqs_of(at_scada)
    assert sorted(cloud_seqs) == list(range(1, max(cloud_seqs) + 1))  # kept its session
    # the new one: everything from the reload on (and what was still unacknowledged then),
    # in order; the very last polls may reach one destination before the other closes
    assert scada_seqs == list(range(scada_seqs[0], scada_seqs[-1] + 1))
    assert abs(scada_seqs[-1] - max(cloud_seqs)) <= 3
    online = [m for m in at_cloud.messages(f"swm/{GATEWAY}/status") if b"online" in m.payload]
    assert len(online) == 1
    assert "config reloaded" in agent.log() and "connection lost" not in agent.log()
