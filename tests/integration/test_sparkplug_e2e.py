"""The real agent (subprocess) publishing Sparkplug B 3.0 (``mqtt.payload: sparkplug``) to a
real mosquitto, watched by a Sparkplug host (tests/publish/sparkplug_host.py, decoding with
pysparkplug): births, values equal to the simulators', seq continuity, bdSeq pairing across
a clean stop, kill -9 and a broker restart, and a rebirth requested by the host."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from swm_edge_hil.harness import GATEWAY, site_config
from swm_edge_hil.site import DemoSite

from swm_edge.testing import Mosquitto

GROUP = "water-utility"
NODE = "gw-x"
SPARKPLUG = f", payload: sparkplug, sparkplug: {{group_id: {GROUP}, edge_node_id: {NODE}}}"
DEVICES = {"flow-1": "flow_meter", "pressure-1": "pressure", "quality-1": "sonde"}


def _load_host_kit() -> ModuleType:
    name = "sparkplug_host"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "publish" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kit = _load_host_kit()


def start_host(broker: Mosquitto, mqtt_collector: Any) -> Any:
    return kit.SparkplugHost(broker, mqtt_collector(broker, "spBv1.0/#"))


def births(host: Any) -> list[tuple[int | None, int | None]]:
    """(seq, bdSeq) of every NBIRTH the host saw."""
    host.update()
    return [(e[3], e[4]) for e in host.events if e[0] == "NBIRTH"]


def deaths(host: Any) -> list[int | None]:
    """bdSeq of every NDEATH the host saw."""
    host.update()
    return [e[4] for e in host.events if e[0] == "NDEATH"]


def latest(host: Any, device: str) -> dict[str, Any]:
    """The latest DDATA value of every metric of a device."""
    host.update()
    out: dict[str, Any] = {}
    for v in host.values:
        if v.device == device and v.kind == "DDATA":
            out[v.name] = v.value
    return out


def assert_equals_simulator(values: dict[str, Any], sim: Any) -> None:
    served = sim.values()
    assert set(values) == set(served)
    for name, want in served.items():
        got = values[name]
        assert type(got) is type(want), (name, got, want)
        if isinstance(want, float):
            assert math.isclose(got, want, rel_tol=1e-12), (name, got, want)
        else:
            assert got == want, (name, got, want)


def all_born(host: Any) -> bool:
    """Every device sent data in the host's latest session of the edge node."""
    since = host.last_nbirth()
    return all(host.count("DDATA", d, since=since) >= 1 for d in DEVICES)


def test_published_metrics_equal_the_simulators_and_the_session_is_consistent(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    host = start_host(mosquitto, mqtt_collector)
    json_wire = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
    site.flow_meter.set("flow_rate", 0.0123)
    site.pressure.set("pressure", 4.25)
    agent = run_agent(site_config(tmp_path, mosquitto, site, mqtt_extra=SPARKPLUG))
    host.wait(all_born)
    for device, sim in DEVICES.items():
        assert_equals_simulator(latest(host, device), getattr(site, sim))
    # changed values arrive as DDATA, by alias, resolved through the DBIRTH
    site.pressure.set("pressure", 5.5)
    host.wait(lambda h: latest(h, "pressure-1").get("pressure") == 5.5)
    assert agent.stop() == 0
    host.wait(lambda h: len(deaths(h)) == 1)  # the clean stop publishes the NDEATH itself
    (nbirth,) = births(host)
    assert nbirth == (0, deaths(host)[0])
    assert host.problems == []
    assert json.loads((tmp_path / "default.sparkplug.json").read_text()) == {"bdSeq": nbirth[1]}
    # nothing of the JSON wire contract (telemetry, status) is published on this destination
    assert json_wire.messages() == []
    assert "Traceback" not in agent.log()


def test_a_host_rebirth_request_is_answered(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    host = start_host(mosquitto, mqtt_collector)
    agent = run_agent(site_config(tmp_path, mosquitto, site, mqtt_extra=SPARKPLUG))
    host.wait(all_born)
    dbirths = host.count("DBIRTH")
    host.request_rebirth(GROUP, NODE)
    host.wait(lambda h: len(births(h)) == 2)
    host.wait(lambda h: h.count("DBIRTH") >= dbirths + 3)
    first, second = births(host)
    assert second == (0, first[1])  # seq 0, the bdSeq of the same connection
    data = host.count("DDATA")
    host.wait(lambda h: h.count("DDATA") > data + 3)
    assert agent.stop() == 0
    assert host.problems == []


def test_kill_9_gives_the_will_and_a_restart_a_new_bdseq(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto, mqtt_collector: Any, run_agent: Any
) -> None:
    host = start_host(mosquitto, mqtt_collector)
    config = site_config(tmp_path, mosquitto, site, interval=0.5, mqtt_extra=SPARKPLUG)
    for cycle in range(3):
        agent = run_agent(config)
        host.wait(lambda h, n=cycle + 1: len(births(h)) == n and all_born(h), timeout=45)
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
        # the broker publishes the will: the NDEATH of exactly that session
        host.wait(lambda h, n=cycle + 1: len(deaths(h)) == n)
    bdseqs = [b for _, b in births(host)]
    assert deaths(host) == bdseqs
    assert len(set(bdseqs)) == 3
    assert all((b - a) % 256 >= 1 for a, b in itertools.pairwise(bdseqs))
    assert host.problems == []


def test_a_broker_restart_starts_a_new_session_with_the_backlog_as_history(
    tmp_path: Path, site: DemoSite, mosquitto_factory: Any, mqtt_collector: Any, run_agent: Any
) -> None:
    # The host keeps its session at the broker, which queues what arrives while the host
    # reconnects after the restart (QoS 0 included), so it sees the whole new session.
    broker = mosquitto_factory(persistence=True, extra_config=["queue_qos0_messages true"])
    sub = mqtt_collector(broker, "spBv1.0/#", client_id="sparkplug-host", persistent=True)
    host = kit.SparkplugHost(broker, sub, forget_on_reconnect=False)
    agent = run_agent(site_config(tmp_path, broker, site, interval=1, mqtt_extra=SPARKPLUG))
    host.wait(all_born)
    broker.stop()
    down = time.time()
    time.sleep(6)
    broker.start()
    # a new session: a new NBIRTH with the next bdSeq (a broker that dies sends no will)
    host.wait(lambda h: len(births(h)) >= 2, timeout=45)
    first, *later = births(host)
    assert all(seq == 0 and (b - first[1]) % 256 >= 1 for seq, b in later)
    # the readings taken while the broker was down arrive, marked historical
    host.wait(
        lambda h: any(
            v.historical and v.timestamp / 1000 > down for v in h.values if v.kind == "DDATA"
        ),
        timeout=30,
    )
    live = time.time() + 1
    host.wait(
        lambda h: any(
            not v.historical and v.timestamp / 1000 > live for v in h.values if v.kind == "DDATA"
        ),
        timeout=30,
    )
    assert agent.stop() == 0
    assert host.problems == []
    assert host.rebirths_requested == 0  # nothing was missed: no session without its birth
    assert "Traceback" not in agent.log()
