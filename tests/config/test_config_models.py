"""Defaults, derived values, spec conversion, relative paths and secrets."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from swm_edge.config import Config, ConfigError, MqttConfig, load_config
from swm_edge.modbus.config import ModbusDevice
from swm_edge.model import BusSpec, DataType, PointSpec, Table, WordOrder

MINIMAL = """\
gateway: {id: gw-lima-0001}
mqtt: {host: broker.local}
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_minimal_config_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))
    mqtt = loaded.config.mqtt[0]
    assert (mqtt.port, mqtt.client_id, mqtt.qos, mqtt.keepalive) == (
        1883,
        "swm-edge-gw-lima-0001",
        1,
        30,
    )
    assert (mqtt.topic_prefix, mqtt.protocol, mqtt.inflight) == ("swm", "5", 64)
    assert (mqtt.reconnect_min, mqtt.reconnect_max) == (1.0, 60.0)
    assert mqtt.tls is None and mqtt.username is None and mqtt.read_password() is None
    assert loaded.config.buffer.path == Path("/var/lib/swm-edge/buffer.sqlite")
    assert loaded.config.buffer.max_mb == 256
    assert loaded.buses == [] and loaded.devices == [] and loaded.warnings == []
    assert loaded.path == tmp_path / "site.yaml"


def test_tls_changes_the_default_port_only(tmp_path: Path) -> None:
    with_tls = load_config(
        write(tmp_path, MINIMAL.replace("{host: broker.local}", "{host: b, tls: {}}"))
    )
    assert with_tls.config.mqtt[0].port == 8883
    assert with_tls.config.mqtt[0].tls is not None and with_tls.config.mqtt[0].tls.ca_file is None
    explicit = MINIMAL.replace("{host: broker.local}", "{host: b, port: 1884, tls: {}}")
    assert load_config(write(tmp_path, explicit)).config.mqtt[0].port == 1884
    no_tls = MINIMAL.replace("{host: broker.local}", "{host: b, tls: null}")
    assert load_config(write(tmp_path, no_tls)).config.mqtt[0].port == 1883


def test_explicit_client_id_wins(tmp_path: Path) -> None:
    text = MINIMAL.replace("{host: broker.local}", "{host: b, client_id: pump-house}")
    assert load_config(write(tmp_path, text)).config.mqtt[0].client_id == "pump-house"


@pytest.mark.parametrize(("written", "expected"), [("5", "5"), ('"5"', "5"), ('"3.1.1"', "3.1.1")])
def test_protocol_accepts_the_yaml_number_5(tmp_path: Path, written: str, expected: str) -> None:
    text = MINIMAL.replace("{host: broker.local}", f"{{host: b, protocol: {written}}}")
    assert load_config(write(tmp_path, text)).config.mqtt[0].protocol == expected


def test_password_without_username_is_an_error_only_for_mqtt_311(tmp_path: Path) -> None:
    v5 = MINIMAL.replace("{host: broker.local}", "{host: b, password_env: PW}")
    assert load_config(write(tmp_path, v5)).config.mqtt[0].password_env == "PW"
    v311 = MINIMAL.replace("{host: broker.local}", '{host: b, password_env: PW, protocol: "3.1.1"}')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, v311))
    assert [i.path for i in info.value.issues] == ["mqtt.password_env"]


FULL = """\
gateway: {id: gw-1, site: lima-d3, location: {lat: -12.046, lon: -77.043}}
mqtt: {host: broker.local}
buses:
  - {id: rs485-1, type: modbus-rtu, port: /dev/ttyUSB0, baudrate: 19200, parity: E,
     stopbits: 2, bytesize: 7, timeout: 0.3, backend: minimalmodbus, request_delay: 0.02}
  - {id: lan, type: modbus-tcp, host: 192.0.2.10, port: 5020, timeout: 2}
devices:
  - id: probe-1
    bus: rs485-1
    unit: 7
    interval: 0.5
    timeout: 1.5
    retries: 0
    request_delay: 0.1
    single_point_reads: true
    max_gap: 0
    max_registers: 16
    max_bits: 8
    offline_after: 10
    offline_backoff_max: 900
    points:
      - {name: level, table: input, address: 100, type: int32, word_order: little,
         byte_swap: true, scale: 0.01, offset: -1.5, unit: m}
      - {name: alarm, table: discrete, address: 3, type: bool}
  - id: meter-1
    bus: lan
    unit: 0
    points: [{name: count, address: 0}]
"""


def test_specs_carry_every_field(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, FULL))
    assert loaded.buses == [
        BusSpec(
            id="rs485-1",
            type="modbus-rtu",
            timeout=0.3,
            port="/dev/ttyUSB0",
            baudrate=19200,
            parity="E",
            stopbits=2,
            bytesize=7,
            backend="minimalmodbus",
            request_delay=0.02,
        ),
        BusSpec(id="lan", type="modbus-tcp", timeout=2.0, host="192.0.2.10", tcp_port=5020),
    ]
    probe, meter = loaded.devices
    # The core keys are the spec's own fields; the Modbus keys are in its options.
    assert (probe.id, probe.bus, probe.interval, probe.driver) == (
        "probe-1",
        "rs485-1",
        0.5,
        "modbus",
    )
    assert (probe.timeout, probe.retries, probe.request_delay) == (1.5, 0, 0.1)
    assert (probe.offline_after, probe.offline_backoff_max) == (10, 900.0)
    assert isinstance(probe.options, ModbusDevice)
    assert (probe.options.unit, probe.options.single_point_reads) == (7, True)
    assert (probe.options.max_gap, probe.options.max_registers, probe.options.max_bits) == (
        0,
        16,
        8,
    )
    assert probe.points == (
        PointSpec(
            "level", Table.INPUT, 100, DataType.INT32, WordOrder.LITTLE, True, 0.01, -1.5, "m"
        ),
        PointSpec("alarm", Table.DISCRETE, 3, DataType.BOOL),
    )
    # Unset quirks keep the DeviceSpec defaults; the timeout falls back to the bus's.
    assert (meter.timeout, meter.retries, meter.options.max_registers, meter.interval) == (
        None,
        1,
        125,
        10.0,
    )
    assert (meter.options.unit, meter.options.single_point_reads) == (0, False)
    assert meter.points == (PointSpec("count", Table.HOLDING, 0, DataType.UINT16),)
    assert isinstance(probe.points[0].table, Table) and isinstance(probe.points[0].type, DataType)


def test_config_model_round_trips_through_model_validate(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, FULL))
    again = Config.model_validate(loaded.config.model_dump())
    assert again == loaded.config


def test_device_model_keeps_the_driver_keys_as_written(tmp_path: Path) -> None:
    # The core model checks only the core keys; the driver's are kept as written, for the
    # driver's model (their checked form is DeviceSpec.options).
    config = load_config(write(tmp_path, FULL)).config
    meter = config.devices[1]
    assert meter.driver is None  # the default: the driver for the bus type
    assert meter.model_extra == {"unit": 0, "points": [{"name": "count", "address": 0}]}


# --- relative paths -------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = """\
    gateway: {id: gw-1}
    mqtt:
      host: b
      password_file: secrets/mqtt.pw
      tls: {ca_file: certs/ca.pem, cert_file: ../shared/gw.pem, key_file: /abs/gw.key}
    buffer: {path: data/buffer.sqlite}
    status_socket: /run/swm-edge/status.sock
    """
    path = write(tmp_path, text, "etc/swm-edge/site.yaml")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # A relative config path too: the base is the file's folder, made absolute.
    config = load_config(Path("../etc/swm-edge/site.yaml")).config
    base = tmp_path / "cwd" / ".." / "etc" / "swm-edge"
    assert config.buffer.path == base / "data/buffer.sqlite"
    assert config.mqtt[0].password_file == base / "secrets/mqtt.pw"
    assert config.mqtt[0].tls is not None
    assert config.mqtt[0].tls.ca_file == base / "certs/ca.pem"
    assert config.mqtt[0].tls.cert_file == base / "../shared/gw.pem"
    assert config.mqtt[0].tls.key_file == Path("/abs/gw.key")
    assert config.buffer.path.is_absolute()
    assert os.path.samefile(config.buffer.path.parent.parent, path.parent)


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = MINIMAL + "buffer: {path: ~/buf.sqlite}\n"
    assert load_config(write(tmp_path, text)).config.buffer.path == tmp_path / "home/buf.sqlite"


def test_empty_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + "buffer: {path: ''}\n"))
    (issue,) = info.value.issues
    assert (issue.line, issue.col, issue.path) == (3, 16, "buffer.path")
    assert "must not be empty" in issue.message


# --- secrets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret\n\n", "s3cret\n"),  # only one newline is an editor's
        (" s3cret pw \n", " s3cret pw "),
    ],
    ids=["newline", "no-newline", "crlf", "two-newlines", "spaces"],  # not the secret
)
def test_password_file(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "mqtt.pw").write_text(content, encoding="utf-8", newline="")
    text = MINIMAL.replace(
        "{host: broker.local}", "{host: b, username: gw, password_file: mqtt.pw}"
    )
    loaded = load_config(write(tmp_path, text))
    assert loaded.config.mqtt[0].read_password() == expected
    # The models hold a path, never the secret itself.
    assert "s3cret" not in repr(loaded.config)
    assert "s3cret" not in loaded.config.model_dump_json()


def test_password_file_missing_raises_oserror_at_read_time(tmp_path: Path) -> None:
    text = MINIMAL.replace("{host: broker.local}", "{host: b, password_file: nope.pw}")
    mqtt = load_config(write(tmp_path, text)).config.mqtt[0]
    with pytest.raises(FileNotFoundError):
        mqtt.read_password()


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    mqtt = MqttConfig.model_validate({"host": "b", "password_env": "SWM_TEST_PW"})
    monkeypatch.setenv("SWM_TEST_PW", "from-env\n")
    assert mqtt.read_password() == "from-env\n"  # the environment is taken as is
    monkeypatch.delenv("SWM_TEST_PW")
    with pytest.raises(LookupError, match="SWM_TEST_PW is not set"):
        mqtt.read_password()


def test_models_are_immutable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL)).config
    with pytest.raises(ValueError, match="frozen"):
        config.mqtt[0].host = "other"  # type: ignore[misc]


DESTINATIONS = """\
gateway: {id: gw-lima-0001}
mqtt:
  - {name: cloud, hosts: [emqx-1.example.net, "emqx-2.example.net:8883", "[2001:db8::7]:1884"]}
  - {name: scada, host: 10.0.0.5, payload: sparkplug, sparkplug: {group_id: lima}}
  - {name: research, host: 10.0.0.6, payload: senml-cbor, client_id: lab-gw-1}
"""


def test_a_list_of_destinations_with_failover_hosts(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESTINATIONS)).config
    cloud, scada, research = config.destinations
    assert research.payload == "senml-cbor"
    assert cloud.endpoints() == [
        ("emqx-1.example.net", 1883),
        ("emqx-2.example.net", 8883),
        ("2001:db8::7", 1884),
    ]
    assert scada.payload == "sparkplug"
    assert scada.sparkplug is not None and scada.sparkplug.group_id == "lima"
    # distinct client ids unless given: two sessions on one broker must not evict each other
    assert [d.client_id for d in config.destinations] == [
        "swm-edge-gw-lima-0001-cloud",
        "swm-edge-gw-lima-0001-scada",
        "lab-gw-1",
    ]
    single = load_config(write(tmp_path, MINIMAL)).config
    assert [d.name for d in single.destinations] == ["default"]
    assert single.destinations[0].client_id == "swm-edge-gw-lima-0001"


@pytest.mark.parametrize(
    ("mqtt", "path", "message"),
    [
        ("[{name: a, host: b}, {name: a, host: c}]", "mqtt", "'a' is already the name of mqtt.0"),
        ("{host: b, hosts: [c]}", "mqtt.hosts", "give host (one broker) or hosts"),
        ("{port: 1883}", "mqtt.host", "missing required key 'host' (or 'hosts'"),
        ("{host: b, payload: sparkplug}", "mqtt.payload", "needs sparkplug: {group_id"),
        ("{host: b, sparkplug: {group_id: g}}", "mqtt.sparkplug", "need payload: sparkplug"),
        (
            "{host: b, payload: sparkplug, sparkplug: {group_id: a/b}}",
            "mqtt.sparkplug.group_id",
            "",
        ),
        ("{host: b, payload: xml}", "mqtt.payload", "senml-cbor"),
        ("{host: b, payload: senml, batch: 10}", "mqtt.batch", "part of payload json"),
        ("{host: b, batch: 0}", "mqtt.batch", ""),
        ("{hosts: ['b:x']}", "mqtt.hosts.0", ""),
        ("[]", "mqtt", ""),
    ],
)
def test_destination_mistakes(tmp_path: Path, mqtt: str, path: str, message: str) -> None:
    text = f"gateway: {{id: gw-1}}\nmqtt: {mqtt}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    issue = err.value.issues[0]
    assert (issue.path, issue.line) == (path, 2), str(issue)
    assert message in issue.message
