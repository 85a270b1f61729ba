"""The swm-edge command line, run as a user would: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from swm_edge_hil.harness import site_config
from swm_edge_hil.site import DemoSite

from swm_edge import __version__
from swm_edge.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def swm_edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version() -> None:
    result = swm_edge("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_example_config_validates() -> None:
    result = swm_edge("validate", "--config", str(ROOT / "config" / "example.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_every_config_error_at_once_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gateway: {id: gw-1}\n"  # 1
        "mqtt: {host: 127.0.0.1, qos: 3}\n"  # 2
        "buses:\n"  # 3
        "  - {id: lan, type: modbus-tcp, host: 192.0.2.1}\n"  # 4
        "devices:\n"  # 5
        "  - id: d1\n"  # 6
        "    bus: nowhere\n"  # 7
        "    unit: 1\n"  # 8
        "    points:\n"  # 9
        "      - {name: level, address: 70000, type: float32, unit: m}\n"  # 10
        "      - {name: temp, address: 4, type: float32, unit: degC, colour: red}\n"  # 11
    )
    for command in ("validate", "run"):
        result = swm_edge(command, "--config", str(bad))
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith(str(bad))]
        found = {
            (m.group(1), m.group(2)): m.group(3)
            for m in (
                re.match(rf"{re.escape(str(bad))}:(\d+):\d+: (\S+): (.*)", ln) for ln in lines
            )
            if m
        }
        assert set(found) == {
            ("2", "mqtt.qos"),
            ("7", "devices.0.bus"),
            ("10", "devices.0.points.0.address"),
            ("11", "devices.0.points.1.unit"),
            ("11", "devices.0.points.1.colour"),
        }, result.stderr
        assert "Cel" in found[("11", "devices.0.points.1.unit")]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = swm_edge("validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


class _NoBroker:
    host = "127.0.0.1"
    port = free_port()


def test_read_json_polls_once_without_mqtt(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site)
    result = swm_edge("read", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    docs = {d["device"]: d for d in json.loads(result.stdout)}
    assert set(docs) == {"flow-1", "pressure-1", "quality-1"}
    for device, sim in (
        ("flow-1", site.flow_meter),
        ("pressure-1", site.pressure),
        ("quality-1", site.sonde),
    ):
        got = {k: v["value"] for k, v in docs[device]["readings"].items()}
        assert got == sim.values()
    one = swm_edge("read", "--config", str(config), "--json", "--device", "pressure-1")
    assert [d["device"] for d in json.loads(one.stdout)] == ["pressure-1"]
    table = swm_edge("read", "--config", str(config), "--device", "pressure-1")
    assert table.returncode == 0 and "pressure" in table.stdout and "bar" in table.stdout
    unknown = swm_edge("read", "--config", str(config), "--device", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_schema_command_matches_committed_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = swm_edge("schema", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (ROOT / "config" / "schema.json").read_text(), (
        "config/schema.json is stale: run `swm-edge schema --output config/schema.json`"
    )


def test_demo_runs_end_to_end() -> None:
    result = swm_edge("demo", "--duration", "7", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(re.findall(r"^\s+([\w-]+): (\d+) messages", result.stdout, re.M))
    assert set(counts) == {"inlet-flow", "inlet-pressure", "reservoir-quality"}
    assert all(int(n) >= 2 for n in counts.values()), counts


def test_validate_warns_when_a_serial_line_is_too_slow(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(
        "gateway: {id: gw-1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "buses:\n"
        "  - {id: rs485-1, type: modbus-rtu, port: /dev/ttyUSB0, baudrate: 1200}\n"
        "devices:\n"
        "  - {id: p1, bus: rs485-1, unit: 1, interval: 1, profile: keller-series30}\n"
        "  - {id: q1, bus: rs485-1, unit: 2, interval: 1, profile: yosemitech-y4000}\n"
    )
    slow = swm_edge("validate", "--config", str(config))
    assert slow.returncode == 0  # a warning, not an error
    warning = re.search(
        rf"warning: {re.escape(str(config))}:4:\d+: buses\.0: .*?([\d.]+) s of wire time "
        r"per second at 1200 baud: devices p1 ([\d.]+), q1 ([\d.]+)",
        slow.stderr,
    )
    assert warning, slow.stderr
    total, p1, q1 = (float(g) for g in warning.groups())
    assert total > 1.0 and abs(total - (p1 + q1)) < 0.02
    config.write_text(
        config.read_text().replace("1200", "19200").replace("interval: 1", "interval: 10")
    )
    fast = swm_edge("validate", "--config", str(config))
    assert fast.returncode == 0 and "warning" not in fast.stderr


def test_run_without_its_secret_says_so(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "gateway: {id: gw-1}\n"
        "mqtt: {host: 127.0.0.1, username: gw-1, password_env: SWM_TEST_UNSET_PASSWORD}\n"
        f"buffer: {{path: {tmp_path / 'b.sqlite'}}}\n"
        "buses: [{id: lan, type: modbus-tcp, host: 127.0.0.1}]\n"
        "devices: [{id: d, bus: lan, unit: 1, profile: keller-series30}]\n"
    )
    result = swm_edge("run", "--config", str(config))
    assert result.returncode == 2
    assert "SWM_TEST_UNSET_PASSWORD is not set" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "c.yaml").write_text(
        config.read_text().replace("password_env: SWM_TEST_UNSET_PASSWORD", "password_file: pw")
    )
    missing = swm_edge("run", "--config", str(config))
    assert missing.returncode == 1 and "pw" in missing.stderr and "Traceback" not in missing.stderr


def test_profiles_lists_and_shows_the_shipped_profiles() -> None:
    listing = swm_edge("profiles", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {(r["driver"], r["name"]): r for r in json.loads(listing.stdout)}
    for name in (
        "siemens-mag6000",
        "keller-series30",
        "yosemitech-y4000",
        "dynaflox-ultrad",
        "vega-vegapuls-c21",
        "insitu-aquatroll400",
        "abb-aquamaster3",
    ):
        assert ("modbus", name) in rows, name
        assert rows[("modbus", name)]["source"], name  # every profile cites its manual
    assert ("sdi12", "insitu-aquatroll400") in rows
    shown = swm_edge("profiles", "keller-series30", "--json")
    (keller,) = json.loads(shown.stdout)
    assert keller["manufacturer"] == "KELLER AG"
    pressure = next(p for p in keller["points"] if p["name"] == "pressure")
    assert (pressure["address"], pressure["type"], pressure["unit"]) == (2, "float32", "bar")
    table = swm_edge("profiles", "keller-series30")
    assert table.returncode == 0 and "KELLER" in table.stdout and "pressure" in table.stdout
    unknown = swm_edge("profiles", "no-such-meter")
    assert unknown.returncode == 2 and "keller-series30" in unknown.stderr
