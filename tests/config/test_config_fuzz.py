"""Property tests: whatever a user writes, load_config answers with a config or a ConfigError.

Never a traceback: random YAML documents, random bytes, and random mutations of a valid
config (deleted keys, wrong types, unknown keys, duplicated items) all end in either a
LoadedConfig or a ConfigError whose issues point inside the file.
"""

from __future__ import annotations

import copy
import io
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from swm_edge.config import ConfigError, LoadedConfig, load_config

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PROFILE = """\
manufacturer: ACME
model: FM-1
kind: flow meter
source: manual
device: {max_registers: 8}
points:
  - {name: flow, address: 0, type: float32, unit: m3/h}
  - {name: total, address: 2, type: float64, unit: m3}
"""

VALID: dict[str, Any] = {
    "gateway": {"id": "gw-1", "site": "dma-3", "location": {"lat": -12.0, "lon": -77.0}},
    "mqtt": {
        "host": "broker.local",
        "username": "gw",
        "password_file": "pw",
        "tls": {"ca_file": "ca.pem"},
        "qos": 1,
        "protocol": 5,
    },
    "buffer": {"path": "buf.sqlite", "max_mb": 16},
    "buses": [
        {"id": "rtu", "type": "modbus-rtu", "port": "/dev/ttyUSB0", "baudrate": 1200},
        {"id": "lan", "type": "modbus-tcp", "host": "192.0.2.1"},
        # Raw serial buses: mutations move devices onto them (another driver's keys).
        {"id": "m", "type": "mbus", "port": "/dev/ttyUSB1"},
        {"id": "s", "type": "sdi12", "port": "/dev/ttyUSB2"},
    ],
    "devices": [
        {
            "id": "d1",
            "bus": "rtu",
            "unit": 1,
            "interval": 1,
            "single_point_reads": True,
            "points": [
                {"name": "a", "address": 0, "type": "int16", "unit": "bar"},
                {"name": "b", "table": "coil", "address": 3, "type": "bool"},
            ],
        },
        {"id": "d2", "bus": "lan", "unit": 0, "profile": "acme", "points": []},
    ],
}

# Words of the config's vocabulary, so random documents reach past the first missing key.
VOCABULARY = [
    "gateway", "mqtt", "buffer", "buses", "devices", "id", "type", "host", "port", "bus",
    "unit", "points", "name", "address", "table", "modbus-rtu", "modbus-tcp", "profile",
    "tls", "coil", "float32", "acme", "rtu", "lan", "<<", "interval", "password",
    "mbus", "sdi12", "m", "s", "driver", "modbus",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(VOCABULARY),
)
keys = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "profiles").mkdir()
    (directory / "profiles" / "acme.yaml").write_text(PROFILE, encoding="utf-8")
    return directory


def check(path: Path) -> LoadedConfig | None:
    text = path.read_bytes().decode("utf-8", "replace")
    # YAML line breaks: \r and \r\n count too (and NEL/LS/PS under YAML 1.1).
    text_lines = len(re.split("\r\n|\r|\n|\x85|\u2028|\u2029", text))
    try:
        return load_config(path)
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.line >= 1 and issue.col >= 1, str(issue)
            assert issue.path and issue.message, str(issue)
            assert issue.severity == "error"
            if issue.file == str(path):
                assert issue.line <= text_lines, str(issue)
            else:
                assert issue.file.endswith("acme.yaml"), str(issue)
        return None


def test_the_unmutated_config_is_valid(site_dir: Path) -> None:
    path = site_dir / "valid.yaml"
    path.write_text(dump(VALID), encoding="utf-8")
    loaded = load_config(path)
    assert [d.id for d in loaded.devices] == ["d1", "d2"]


@FUZZ
@given(documents)
def test_random_documents(site_dir: Path, data: Any) -> None:
    text = dump(data)
    path = site_dir / "random.yaml"
    path.write_text(text, encoding="utf-8")
    check(path)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_random_bytes(site_dir: Path, raw: bytes) -> None:
    path = site_dir / "bytes.yaml"
    path.write_bytes(raw)
    check(path)


def _containers(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, (dict, list)):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, out)
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = draw(st.sampled_from(_containers(config, [])))
        slots = list(target) if isinstance(target, dict) else list(range(len(target)))
        operation = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if operation == "add" or not slots:
            if isinstance(target, dict):
                target[draw(keys)] = draw(documents)
            else:
                target.append(draw(documents))
            continue
        slot = draw(st.sampled_from(slots))
        if operation == "replace":
            target[slot] = draw(documents)
        elif operation == "delete":
            del target[slot]
        elif isinstance(target, list):
            target.append(copy.deepcopy(target[slot]))
        else:
            target[slot] = copy.deepcopy(target)  # a mapping nested in itself, one level
    return config


@FUZZ
@given(mutated_configs())
def test_mutated_valid_config(site_dir: Path, config: Any) -> None:
    text = dump(config)
    path = site_dir / "mutated.yaml"
    path.write_text(text, encoding="utf-8")
    check(path)


@FUZZ
@given(st.data())
def test_mutated_yaml_text(site_dir: Path, data: st.DataObject) -> None:
    # Character-level damage to a hand-written config: broken indentation, flow syntax,
    # stray colons and anchors.
    text = textwrap.dedent(dump(VALID))
    position = data.draw(st.integers(min_value=0, max_value=len(text)))
    insert = data.draw(st.sampled_from(["\t", ":", "- ", "{", "]", "&a ", "*a", "\n  ", "'", "#"]))
    cut = data.draw(st.integers(min_value=0, max_value=3))
    damaged = text[:position] + insert + text[position + cut :]
    path = site_dir / "damaged.yaml"
    path.write_text(damaged, encoding="utf-8")
    check(path)


def test_alias_bomb_is_refused(site_dir: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = site_dir / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert "more than" in issue.message and "nodes" in issue.message


def test_recursive_alias_is_an_issue(site_dir: Path) -> None:
    path = site_dir / "recursive.yaml"
    path.write_text("gateway: &g {id: gw-1, self: *g}\nmqtt: {host: h}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {i.path for i in info.value.issues} >= {"gateway.self"}
