"""Every kind of config mistake becomes a ConfigIssue at the right FILE:LINE:COL and path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swm_edge.config import ConfigError, ConfigIssue, load_config

BASE = """\
gateway: {id: gw-1}
mqtt: {host: broker.local}
buses:
  - {id: rtu-1, type: modbus-rtu, port: /dev/ttyUSB0}
  - {id: tcp-1, type: modbus-tcp, host: 192.0.2.10}
devices:
  - id: d-1
    bus: tcp-1
    unit: 1
    points:
      - {name: flow, address: 0, type: float32, unit: m3/h}
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def at(text: str, marker: str) -> tuple[int, int]:
    """1-based line and column where the (unique) ``marker`` starts in ``text``.

    A ``|`` in the marker moves the position to just after it: ``at(t, "port: |0")`` is
    where the ``0`` after ``port: `` is.
    """
    text = textwrap.dedent(text)
    needle = marker.replace("|", "")
    assert text.count(needle) == 1, f"marker {needle!r} is not unique"
    index = text.index(needle) + max(marker.find("|"), 0)
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def errors(path: Path, **kwargs: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    assert info.value.issues, "a ConfigError must carry issues"
    return info.value.issues


def only(path: Path) -> ConfigIssue:
    issues = errors(path)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def assert_issue(
    issue: ConfigIssue, path: Path, pos: tuple[int, int], node: str, text: str
) -> None:
    assert (issue.file, issue.line, issue.col, issue.path) == (str(path), *pos, node), str(issue)
    assert text in issue.message, str(issue)
    assert issue.severity == "error"
    assert str(issue) == f"{path}:{pos[0]}:{pos[1]}: {node}: {issue.message}"


def test_base_config_is_valid(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, BASE))
    assert [b.id for b in loaded.buses] == ["rtu-1", "tcp-1"]
    assert loaded.devices[0].points[0].name == "flow"
    assert loaded.warnings == []


# --- reading and parsing ------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert_issue(only(path), path, (1, 1), "(root)", "file not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert_issue(only(tmp_path), tmp_path, (1, 1), "(root)", "is a directory")


def test_non_utf8_bytes_point_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"gateway: {id: gw-1}\nmqtt: {host: caf\xe9}\n")
    assert_issue(only(path), path, (2, 17), "(root)", "not UTF-8 text (byte 0xe9)")


def test_yaml_syntax_error_at_problem_mark(tmp_path: Path) -> None:
    text = "gateway: {id: gw-1}\nmqtt:\n  host: a: b\n"
    path = write(tmp_path, text)
    assert_issue(only(path), path, (3, 10), "(root)", "mapping values are not allowed here")


def test_unclosed_flow_sequence_names_where_it_started(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway: {id: gw-1}\nbuses: [a, b\n")
    issue = only(path)
    assert (issue.line, issue.col) == (3, 1)
    assert "while parsing a flow sequence at line 2, column 8" in issue.message


def test_tab_indentation_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n\tid: gw-1\n")
    issue = only(path)
    assert (issue.line, issue.col) == (2, 1)
    assert "indent with spaces, not tabs" in issue.message


def test_duplicate_yaml_key_at_second_occurrence(tmp_path: Path) -> None:
    text = BASE + "mqtt: {host: other}\n"
    path = write(tmp_path, text)
    assert_issue(only(path), path, (12, 1), "(root)", "duplicate key 'mqtt'")


def test_duplicate_key_in_nested_flow_mapping(tmp_path: Path) -> None:
    text = "gateway: {id: gw-1, id: gw-2}\nmqtt: {host: h}\n"
    path = write(tmp_path, text)
    assert_issue(only(path), path, (1, 21), "(root)", "duplicate key 'id'")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("# nothing but a comment\n", "the file is empty"),
        ("- gateway\n- mqtt\n", "not a list"),
        ("just a string\n", "not string 'just a string'"),
        ("42\n", "not integer 42"),
    ],
)
def test_root_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert_issue(only(path), path, (1, 1), "(root)", expected)


def test_unsupported_tag(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: !secret broker}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "!secret"), "mqtt.host", "YAML tag !secret")


def test_yaml_merge_keys_are_accepted(tmp_path: Path) -> None:
    text = """\
    gateway: {id: gw-1}
    mqtt: {host: h}
    buses: [{id: tcp-1, type: modbus-tcp, host: 192.0.2.10}]
    defaults: &slow {interval: 60, retries: 3}
    devices:
      - <<: *slow
        id: d-1
        bus: tcp-1
        unit: 1
        points: [{name: a, address: 0}]
    """
    # The merged-in keys have no position of their own; the device is still valid, and the
    # anchor's holder, not being a config key, is the only error.
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "defaults"), "defaults", "unknown key 'defaults'")


# --- pydantic errors mapped to YAML positions -------------------------------------


def test_wrong_scalar_type_at_value(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", '{host: broker.local, port: "1883"}')
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, '"1883"'), "mqtt.port", "valid integer")


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    text = BASE.replace("unit: 1\n", "unit: true\n")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "true"), "devices.0.unit", "got boolean true")


def test_integer_id_is_rejected_not_coerced(tmp_path: Path) -> None:
    # YAML reads 0001 as the integer 1; silently using "1" as the gateway id would be wrong.
    text = BASE.replace("gw-1", "0001")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "0001"), "gateway.id", "valid string")


def test_unknown_key_at_key_with_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "    unit: 1\n    intervall: 5\n")
    path = write(tmp_path, text)
    assert_issue(
        only(path), path, at(text, "intervall"), "devices.0.intervall", "did you mean 'interval'?"
    )


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    text = BASE.replace("{id: gw-1}", "{id: gw-1, zzz: 1}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "zzz"), "gateway.zzz", "allowed: id, location, site")


def test_unknown_key_inside_a_tagged_union_member(tmp_path: Path) -> None:
    text = BASE.replace("host: 192.0.2.10}", "host: 192.0.2.10, baudrate: 9600}")
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, at(text, "baudrate"), "buses.1.baudrate", "unknown key 'baudrate'")
    # The allowed keys are those of the TCP bus, not of the RTU bus.
    assert "host" in issue.message and "parity" not in issue.message


def test_plain_password_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: broker.local, password: hunter2}")
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, at(text, "password"), "mqtt.password", "password_file")
    assert "hunter2" not in str(issue)


def test_missing_key_at_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    text = BASE.replace("mqtt: {host: broker.local}", "mqtt: {port: 1883}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "mqtt"), "mqtt.host", "missing required key 'host'")


def test_missing_key_in_a_list_item(tmp_path: Path) -> None:
    text = BASE.replace("      - {name: flow, address: 0,", "      - {name: flow,")
    path = write(tmp_path, text)
    assert_issue(
        only(path), path, at(text, "{name: flow"), "devices.0.points.0.address", "missing required"
    )


def test_missing_top_level_section(tmp_path: Path) -> None:
    text = BASE.replace("mqtt: {host: broker.local}\n", "")
    path = write(tmp_path, text)
    assert_issue(only(path), path, (1, 1), "mqtt", "missing required key 'mqtt'")


def test_section_of_the_wrong_shape(tmp_path: Path) -> None:
    # mqtt may be a list of destinations: each item must be a mapping
    text = BASE.replace("mqtt: {host: broker.local}", "mqtt: [broker.local]")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "broker.local]"), "mqtt.0", "expected a mapping")
    text = BASE.replace("mqtt: {host: broker.local}", "mqtt: broker.local")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "broker.local"), "mqtt", "expected a mapping")


def test_unknown_bus_type_names_the_allowed_ones(tmp_path: Path) -> None:
    text = BASE.replace("type: modbus-tcp", "type: bacnet")
    path = write(tmp_path, text)
    assert_issue(
        only(path),
        path,
        at(text, "bacnet"),
        "buses.1.type",
        "'bacnet'; allowed: modbus-rtu, modbus-tcp, mbus, sdi12",
    )


def test_bus_without_type(tmp_path: Path) -> None:
    text = BASE.replace("{id: tcp-1, type: modbus-tcp,", "{id: tcp-1,")
    path = write(tmp_path, text)
    assert_issue(
        only(path), path, at(text, "{id: tcp-1"), "buses.1.type", "missing required key 'type'"
    )


def test_bus_field_errors_skip_the_union_tag_in_the_path(tmp_path: Path) -> None:
    text = BASE.replace("port: /dev/ttyUSB0}", "port: /dev/ttyUSB0, baudrate: 9601}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "9601"), "buses.0.baudrate", "9600, 14400")


@pytest.mark.parametrize(
    ("old", "new", "marker", "node", "message"),
    [
        ("{id: gw-1}", "{id: 'gw 1'}", "'gw 1'", "gateway.id", "letters, digits"),
        (
            "{host: broker.local}",
            "{host: h, topic_prefix: '/swm'}",
            "'/swm'",
            "mqtt.topic_prefix",
            "'#'",
        ),
        (
            "{host: broker.local}",
            "{host: h, topic_prefix: 'a/#'}",
            "'a/#'",
            "mqtt.topic_prefix",
            "'#'",
        ),
        (
            "{host: broker.local}",
            "{host: h, password_env: 1X}",
            "1X",
            "mqtt.password_env",
            "variable",
        ),
        ("{host: broker.local}", "{host: 'mqtt://h'}", "'mqtt://h'", "mqtt.host", "without scheme"),
        ("{name: flow,", "{name: 1flow,", "1flow", "devices.0.points.0.name", "letter or '_'"),
        ("{host: broker.local}", "{host: h, qos: 3}", "qos: |3", "mqtt.qos", "one of 0, 1, 2"),
        (
            "{host: broker.local}",
            "{host: h, keepalive: 4}",
            "keepalive: |4",
            "mqtt.keepalive",
            ">= 5",
        ),
        ("{host: broker.local}", "{host: h, protocol: '4'}", "'4'", "mqtt.protocol", "'3.1.1'"),
        ("{host: broker.local}", "{host: h, inflight: 0}", "inflight: |0", "mqtt.inflight", ">= 1"),
    ],
)
def test_pattern_and_range_errors(
    tmp_path: Path, old: str, new: str, marker: str, node: str, message: str
) -> None:
    text = BASE.replace(old, new)
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(
        issue, path, at(text, marker), node, message.replace(">= ", "greater than or equal to ")
    )


def test_reconnect_max_below_min_at_reconnect_max(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: h, reconnect_min: 5, reconnect_max: 2}")
    path = write(tmp_path, text)
    assert_issue(
        only(path),
        path,
        at(text, "reconnect_max: |2"),
        "mqtt.reconnect_max",
        "must be >= reconnect_min",
    )


def test_password_file_and_env_are_exclusive(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: h, password_file: pw, password_env: PW}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "PW}"), "mqtt.password_env", "not both")


def test_cert_without_key(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: h, tls: {cert_file: c.pem}}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "c.pem"), "mqtt.tls.cert_file", "needs key_file")


def test_key_without_cert(tmp_path: Path) -> None:
    text = BASE.replace("{host: broker.local}", "{host: h, tls: {key_file: k.pem}}")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "k.pem"), "mqtt.tls.key_file", "needs cert_file")


# --- points ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "marker", "field", "message"),
    [
        ("{name: p, address: 65536}", "65536", "address", "less than or equal to 65535"),
        ("{name: p, address: -1}", "address: |-1", "address", "greater than or equal to 0"),
        ("{name: p, address: 65535, type: float32}", "65535", "address", "past the last address"),
        ("{name: p, address: 65533, type: float64}", "65533", "address", "past the last address"),
        ("{name: p, table: coil, address: 0, type: float32}", "float32", "type", "must be bool"),
        ("{name: p, table: discrete, address: 0}", "{name: p", "type", "must be bool, not uint16"),
        (
            "{name: p, table: discrete, address: 0, type: bool, word_order: little}",
            "little",
            "word_order",
            "does not apply to a discrete point",
        ),
        (
            "{name: p, table: coil, address: 0, type: bool, byte_swap: true}",
            "true",
            "byte_swap",
            "does not apply to a coil point",
        ),
        (
            "{name: p, address: 0, type: bool, scale: 2}",
            "scale: |2",
            "scale",
            "does not apply to a bool",
        ),
        ("{name: p, address: 0, scale: 0}", "scale: |0", "scale", "must not be 0"),
        ("{name: p, address: 0, table: register}", "register", "table", "'holding'"),
        ("{name: p, address: 0, type: float}", "float}", "type", "'float32'"),
        ("{name: p, address: 0, word_order: mid}", "mid", "word_order", "'big' or 'little'"),
        ("{name: p, address: 0, scale: .nan}", ".nan", "scale", "finite number"),
        ("{name: p, address: 0, unit: degC}", "degC", "unit", "did you mean 'Cel'?"),
        ("{name: p, address: 0, unit: m³/h}", "m³/h", "unit", "did you mean 'm3/h'?"),
        ("{name: p, address: 0, unit: furlong}", "furlong", "unit", "allowed: %, 1, A, bar"),
    ],
)
def test_point_errors(tmp_path: Path, point: str, marker: str, field: str, message: str) -> None:
    text = BASE.replace("{name: flow, address: 0, type: float32, unit: m3/h}", point)
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, marker), f"devices.0.points.0.{field}", message)


def test_coil_point_with_default_word_order_is_fine(tmp_path: Path) -> None:
    point = "{name: p, table: coil, address: 9, type: bool, word_order: big, byte_swap: false}"
    text = BASE.replace("{name: flow, address: 0, type: float32, unit: m3/h}", point)
    loaded = load_config(write(tmp_path, text))
    assert loaded.devices[0].points[0].table == "coil"


def test_dimensionless_unit_as_yaml_integer(tmp_path: Path) -> None:
    text = BASE.replace("unit: m3/h}", "unit: 1}")
    loaded = load_config(write(tmp_path, text))
    assert loaded.devices[0].points[0].unit == "1"


def test_duplicate_point_names(tmp_path: Path) -> None:
    text = BASE + "      - {name: flow, address: 2}\n"
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, (12, 16), "devices.0.points.1.name", "duplicate point name 'flow'")
    assert "first at line 11" in issue.message


def test_point_wider_than_max_registers(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "    unit: 1\n    max_registers: 1\n")
    path = write(tmp_path, text)
    assert_issue(
        only(path),
        path,
        at(text, "float32"),
        "devices.0.points.0.type",
        "point 'flow' is a float32 of 2 registers, but the device reads at most 1 per "
        "request (max_registers)",
    )


def test_every_point_wider_than_max_registers(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "    unit: 1\n    max_registers: 1\n")
    text += "      - {name: ok, address: 9}\n      - {name: total, address: 10, type: uint64}\n"
    path = write(tmp_path, text)
    got = [(i.line, i.col, i.path) for i in errors(path)]
    assert got == [
        (*at(text, "float32"), "devices.0.points.0.type"),
        (*at(text, "uint64"), "devices.0.points.2.type"),
    ]


# --- driver keys ----------------------------------------------------------------------


def test_modbus_keys_of_a_device_at_their_nodes(tmp_path: Path) -> None:
    # Keys other than the core keys are checked by the device's driver (here the default
    # for a modbus-rtu bus); their errors land on their own nodes like the core's.
    text = BASE + (
        "  - id: d-2\n"
        "    bus: rtu-1\n"
        "    unit: 300\n"
        "    colour: red\n"
        "    max_gap: -1\n"
        "    points: [{name: a, address: 0}]\n"
        "  - {id: d-3, bus: rtu-1, unit: 248, points: [{name: a, address: 0}]}\n"
    )
    path = write(tmp_path, text)
    got = [(i.line, i.col, i.path, i.message) for i in errors(path)]
    assert got == [
        (
            *at(text, "300"),
            "devices.1.unit",
            "Input should be less than or equal to 255, got integer 300",
        ),
        (
            *at(text, "colour"),
            "devices.1.colour",
            "unknown key 'colour'; allowed: bus, driver, id, interval, max_bits, max_gap, "
            "max_registers, offline_after, offline_backoff_max, points, profile, "
            "request_delay, retries, single_point_reads, timeout, unit",
        ),
        (
            *at(text, "max_gap: |-1"),
            "devices.1.max_gap",
            "Input should be greater than or equal to 0, got integer -1",
        ),
        (
            *at(text, "248"),
            "devices.2.unit",
            "unit 248 is out of range 1..247 for a device on modbus-rtu bus 'rtu-1' "
            "(0 is broadcast, which no device answers)",
        ),
    ]


def test_missing_modbus_unit_at_the_device(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "")
    path = write(tmp_path, text)
    assert_issue(
        only(path), path, at(text, "id: d-1"), "devices.0.unit", "missing required key 'unit'"
    )


# --- cross-section checks -----------------------------------------------------------


def test_duplicate_bus_ids(tmp_path: Path) -> None:
    text = BASE.replace("{id: tcp-1,", "{id: rtu-1,").replace("bus: tcp-1", "bus: rtu-1")
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, (5, 10), "buses.1.id", "duplicate bus id 'rtu-1'")
    assert "first at line 4" in issue.message


def test_duplicate_device_ids(tmp_path: Path) -> None:
    text = BASE + "  - {id: d-1, bus: tcp-1, unit: 2, points: [{name: x, address: 1}]}\n"
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, (12, 10), "devices.1.id", "duplicate device id 'd-1'")
    assert "first at line 7" in issue.message


def test_device_on_unknown_bus_with_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("bus: tcp-1", "bus: tcp-2")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "tcp-2"), "devices.0.bus", "did you mean 'tcp-1'?")


def test_device_on_unknown_bus_without_buses(tmp_path: Path) -> None:
    text = BASE.replace("buses:\n", "old_buses:\n")
    path = write(tmp_path, text)
    issues = errors(path)
    assert [i.path for i in issues] == ["old_buses", "devices.0.bus"]
    assert "no buses are defined" in issues[1].message


def test_device_on_a_broken_bus_is_not_also_unknown(tmp_path: Path) -> None:
    text = BASE.replace("host: 192.0.2.10}", "host: 192.0.2.10, timeout: 0}")
    path = write(tmp_path, text)
    assert only(path).path == "buses.1.timeout"


@pytest.mark.parametrize(
    ("bus", "unit", "ok"),
    [
        ("rtu-1", 0, False),
        ("rtu-1", 1, True),
        ("rtu-1", 247, True),
        ("rtu-1", 248, False),
        ("tcp-1", 0, True),
        ("tcp-1", 255, True),
        ("tcp-1", 256, False),
    ],
)
def test_unit_id_range_by_bus_type(tmp_path: Path, bus: str, unit: int, ok: bool) -> None:
    text = BASE.replace("bus: tcp-1\n    unit: 1", f"bus: {bus}\n    unit: {unit}")
    path = write(tmp_path, text)
    if ok:
        assert load_config(path).devices[0].options.unit == unit
        return
    issue = only(path)
    assert (issue.line, issue.col, issue.path) == (9, 11, "devices.0.unit")
    expected = "1..247" if bus == "rtu-1" else "less than or equal to 255"
    assert expected in issue.message


def test_unknown_driver_at_driver(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "    unit: 1\n    driver: acme-x\n")
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, at(text, "acme-x"), "devices.0.driver", "not installed")
    assert issue.message.startswith("driver 'acme-x' is not installed (installed: ")
    assert "modbus" in issue.message


def test_default_driver_missing_is_reported_at_the_device_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("swm_edge.config.loader.available_drivers", dict)
    path = write(tmp_path, BASE)
    assert_issue(
        only(path),
        path,
        at(BASE, "d-1"),
        "devices.0.id",
        "no installed driver reads modbus-tcp buses (installed: none); "
        "install one, or pick one with driver:",
    )


def test_unknown_profile(tmp_path: Path) -> None:
    text = BASE.replace("    unit: 1\n", "    unit: 1\n    profile: keller-series3\n")
    path = write(tmp_path, text)
    issue = only(path)
    assert_issue(issue, path, at(text, "keller-series3\n"), "devices.0.profile", "unknown profile")
    assert "did you mean 'keller-series30'?" in issue.message
    assert str(tmp_path / "profiles") in issue.message


def test_device_without_points(tmp_path: Path) -> None:
    text = BASE.replace("      - {name: flow, address: 0, type: float32, unit: m3/h}\n", "")
    text = text.replace("    points:\n", "    points: []\n")
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "points"), "devices.0.points", "has no points")


def test_device_without_points_key(tmp_path: Path) -> None:
    text = BASE.replace(
        "    points:\n      - {name: flow, address: 0, type: float32, unit: m3/h}\n", ""
    )
    path = write(tmp_path, text)
    assert_issue(only(path), path, at(text, "id: d-1"), "devices.0.points", "has no points")


# --- everything at once -------------------------------------------------------------


def test_several_errors_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
    gateway: {id: gw 1}
    mqtt: {host: h, port: 0, password: x}
    buses:
      - {id: b, type: modbus-rtu, port: /dev/ttyS0, parity: X}
      - {id: b, type: modbus-tcp, host: 192.0.2.1}
    devices:
      - id: d
        bus: nope
        unit: 1
        points:
          - {name: a, table: coil, address: 0, type: int16}
          - {name: a, address: 70000}
      - id: d
        bus: b
        unit: 0
        points: [{name: ok, address: 1, unit: degC}]
    """
    path = write(tmp_path, text)
    got = [(i.line, i.col, i.path) for i in errors(path)]
    assert got == [
        (*at(text, "gw 1"), "gateway.id"),
        (*at(text, "port: |0"), "mqtt.port"),
        (*at(text, "password"), "mqtt.password"),
        (*at(text, "parity: |X"), "buses.0.parity"),
        (*at(text, "b, type: modbus-tcp"), "buses.1.id"),
        (*at(text, "nope"), "devices.0.bus"),
        (*at(text, "int16"), "devices.0.points.0.type"),
        (*at(text, "a, address: 70000"), "devices.0.points.1.name"),
        (*at(text, "70000"), "devices.0.points.1.address"),
        (*at(text, "d\n    bus: b"), "devices.1.id"),
        (*at(text, "unit: |0"), "devices.1.unit"),
        (*at(text, "degC"), "devices.1.points.0.unit"),
    ]
    # Spot-check the helper against hand-counted columns.
    assert got[0][:2] == (1, 15) and got[9][:2] == (13, 9)


def test_error_str_lists_every_issue(tmp_path: Path) -> None:
    text = BASE.replace("{id: gw-1}", "{id: gw-1, x: 1, y: 2}")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines == [str(i) for i in info.value.issues]
    assert [i.path for i in info.value.issues] == ["gateway.x", "gateway.y"]
