"""Device profiles: search order, merging, defaults, and invalid profile files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swm_edge.config import ConfigError, ConfigIssue, load_config, load_profile
from swm_edge.config.profiles import find_profile
from swm_edge.driver import load_driver
from swm_edge.modbus.config import ModbusPoint
from swm_edge.model import DataType, Table, WordOrder

PROFILE = """\
manufacturer: ACME
model: FM-1
kind: flow meter
source: "ACME FM-1 Modbus manual v2, ch. 5"
device: {max_registers: 4, timeout: 2.0, retries: 3}
points:
  - {name: flow, address: 0, type: float32, unit: m3/h, note: "ch. 5.1"}
  - {name: total, address: 2, type: float64, unit: m3}
  - {name: alarm, table: coil, address: 7, type: bool}
"""

CONFIG = """\
gateway: {id: gw-1}
mqtt: {host: b}
buses: [{id: lan, type: modbus-tcp, host: 192.0.2.10}]
devices:
  - id: fm-1
    bus: lan
    unit: 1
    profile: acme-fm1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def profile_dir(tmp_path: Path, name: str = "lib", text: str = PROFILE) -> Path:
    write(tmp_path / name / "acme-fm1.yaml", text)
    return tmp_path / name


def device_lines(extra: str) -> str:
    return CONFIG + textwrap.indent(textwrap.dedent(extra), "    ")


def test_profile_points_and_defaults(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path)
    loaded = load_config(write(tmp_path / "site.yaml", CONFIG), profile_dirs=[lib])
    (device,) = loaded.devices
    assert [p.name for p in device.points] == ["flow", "total", "alarm"]
    flow = device.points[0]
    assert (flow.table, flow.address, flow.type, flow.word_order, flow.unit) == (
        Table.HOLDING,
        0,
        DataType.FLOAT32,
        WordOrder.BIG,
        "m3/h",
    )
    assert device.points[2].table is Table.COIL
    assert (device.options.max_registers, device.timeout, device.retries) == (4, 2.0, 3)
    # Keys the profile does not set keep the device defaults.
    assert (device.options.max_gap, device.interval) == (10, 10.0)
    # The model as written keeps the device's own (unset) values.
    assert loaded.config.devices[0].timeout is None
    assert loaded.config.devices[0].model_extra == {"unit": 1}


def test_device_keys_win_over_profile_defaults(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path)
    text = device_lines("max_registers: 8\nretries: 1\n")
    (device,) = load_config(write(tmp_path / "site.yaml", text), profile_dirs=[lib]).devices
    # retries: 1 equals the default but is set explicitly, so it wins over the profile's 3.
    assert (device.options.max_registers, device.retries, device.timeout) == (8, 1, 2.0)


def test_device_points_replace_and_add(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path)
    text = device_lines(
        """\
        points:
          - {name: extra, table: input, address: 40, type: int16}
          - {name: flow, address: 0, type: float32, scale: 3600, unit: m3/h}
        """
    )
    (device,) = load_config(write(tmp_path / "site.yaml", text), profile_dirs=[lib]).devices
    # Profile order, the replaced point in place, then the device's new points.
    assert [p.name for p in device.points] == ["flow", "total", "alarm", "extra"]
    assert device.points[0].scale == 3600
    assert device.points[3].table is Table.INPUT


def test_search_order_config_dir_then_profile_dirs_in_order(tmp_path: Path) -> None:
    first = profile_dir(tmp_path, "first", PROFILE.replace("name: flow,", "name: flow_first,"))
    second = profile_dir(tmp_path, "second", PROFILE.replace("name: flow,", "name: flow_second,"))
    site = write(tmp_path / "site" / "site.yaml", CONFIG)
    names = [p.name for p in load_config(site, profile_dirs=[first, second]).devices[0].points]
    assert names[0] == "flow_first"
    names = [p.name for p in load_config(site, profile_dirs=[second, first]).devices[0].points]
    assert names[0] == "flow_second"
    # A site's own profiles/ folder comes before everything else.
    profile_dir(tmp_path / "site", "profiles", PROFILE.replace("name: flow,", "name: flow_site,"))
    names = [p.name for p in load_config(site, profile_dirs=[first, second]).devices[0].points]
    assert names[0] == "flow_site"


def test_driver_profile_dirs_come_last(tmp_path: Path) -> None:
    # keller-series30 ships with the modbus driver (drivers/modbus/profiles/).
    text = CONFIG.replace("profile: acme-fm1", "profile: keller-series30")
    site = write(tmp_path / "site.yaml", text)
    (device,) = load_config(site).devices
    assert "pressure" in [p.name for p in device.points]
    assert device.options.max_registers == 4
    override = PROFILE.replace("name: flow,", "name: local_pressure,")
    write(tmp_path / "lib" / "keller-series30.yaml", override)
    (device,) = load_config(site, profile_dirs=[tmp_path / "lib"]).devices
    assert device.points[0].name == "local_pressure"


def test_find_profile(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path)
    assert find_profile("acme-fm1", [tmp_path / "missing", lib]) == lib / "acme-fm1.yaml"
    assert find_profile("acme-fm2", [lib]) is None


def test_load_profile_directly(tmp_path: Path) -> None:
    profile = load_profile(profile_dir(tmp_path) / "acme-fm1.yaml", load_driver("modbus"))
    assert (profile.name, profile.manufacturer, profile.kind) == ("acme-fm1", "ACME", "flow meter")
    # Points in the driver's shape, notes included; the device: keys split by owner.
    assert all(isinstance(p, ModbusPoint) for p in profile.points)
    assert profile.points[0].note == "ch. 5.1"
    assert profile.points[1].type is DataType.FLOAT64
    assert profile.quirks == {"timeout": 2.0, "retries": 3}
    assert profile.defaults == {"max_registers": 4}
    assert profile.device == {"max_registers": 4, "timeout": 2.0, "retries": 3}
    assert profile.raw_points[2] == {"name": "alarm", "table": "coil", "address": 7, "type": "bool"}


def issues_of(site: Path, lib: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(site, profile_dirs=[lib])
    return info.value.issues


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "path", "message"),
    [
        (
            "type: float32, unit: m3/h",
            "type: float32, unit: m3/hr",
            7,
            51,
            "points.0.unit",
            "'m3/h'",
        ),
        (
            "table: coil, address: 7, type: bool",
            "table: coil, address: 7, type: int16",
            9,
            50,
            "points.2.type",
            "must be bool",
        ),
        (
            "device: {max_registers: 4,",
            "device: {max_registers: 400,",
            5,
            25,
            "device.max_registers",
            "less than or equal to 125",
        ),
        (
            "device: {max_registers: 4,",
            "device: {interval: 4,",
            5,
            10,
            "device.interval",
            "unknown key 'interval'",
        ),
        (
            "device: {max_registers: 4,",
            "device: {max_registers: 4, offline_after: 0,",
            5,
            43,
            "device.offline_after",
            "greater than or equal to 1",
        ),
        (
            "device: {max_registers: 4,",
            "device: {max_registers: 4, unit: 300,",
            5,
            34,
            "device.unit",
            "less than or equal to 255",
        ),
        (
            "device: {max_registers: 4,",
            "device: {max_registers: 4, points: [],",
            5,
            28,
            "device.points",
            "go under its top-level points:",
        ),
        (
            "  - {name: flow, address: 0,",
            "  - {name: flow, colour: red, address: 0,",
            7,
            18,
            "points.0.colour",
            "unknown key 'colour'; allowed: address, byte_swap, name, note, offset",
        ),
        ("manufacturer: ACME\n", "", 1, 1, "manufacturer", "missing required key"),
        ("  - {name: total,", "  - {name: flow,", 8, 12, "points.1.name", "duplicate point name"),
        ("kind: flow meter", "kind: [flow meter", 4, 7, "(root)", "expected ',' or ']'"),
    ],
)
def test_invalid_profile_is_reported_in_the_profile_file(
    tmp_path: Path, old: str, new: str, line: int, col: int, path: str, message: str
) -> None:
    assert old in PROFILE
    lib = profile_dir(tmp_path, text=PROFILE.replace(old, new))
    # Two devices use it: its problems are reported once.
    text = CONFIG + "  - {id: fm-2, bus: lan, unit: 2, profile: acme-fm1}\n"
    issues = issues_of(write(tmp_path / "site.yaml", text), lib)
    assert len(issues) == 1, [str(i) for i in issues]
    (issue,) = issues
    assert (issue.file, issue.line, issue.col, issue.path) == (
        str(lib / "acme-fm1.yaml"),
        line,
        col,
        path,
    )
    assert message in issue.message


def test_profile_issues_come_after_the_config_file_issues(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path, text=PROFILE.replace("unit: m3/h", "unit: m3/hr"))
    site = write(tmp_path / "site.yaml", CONFIG.replace("unit: 1", "unit: 300"))
    issues = issues_of(site, lib)
    assert [(Path(i.file).name, i.path) for i in issues] == [
        ("site.yaml", "devices.0.unit"),
        ("acme-fm1.yaml", "points.0.unit"),
    ]


def test_profile_root_must_be_a_mapping(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path, text="- just\n- a list\n")
    (issue,) = issues_of(write(tmp_path / "site.yaml", CONFIG), lib)
    assert (issue.line, issue.col, issue.path) == (1, 1, "(root)")
    assert "a profile needs manufacturer:" in issue.message


def test_profile_with_no_points_is_invalid(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path, text=PROFILE.split("points:")[0] + "points: []\n")
    (issue,) = issues_of(write(tmp_path / "site.yaml", CONFIG), lib)
    assert (issue.line, issue.col, issue.path) == (6, 9, "points")


def test_profile_point_too_wide_for_its_own_max_registers(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path, text=PROFILE.replace("max_registers: 4", "max_registers: 2"))
    site = write(tmp_path / "site.yaml", CONFIG)
    (issue,) = issues_of(site, lib)
    # The float64 and the limit come from the profile; the device's profile key is where
    # to look. The profile alone is fine: a device may raise its max_registers.
    assert (issue.file, issue.line, issue.col, issue.path) == (
        str(site),
        8,
        14,
        "devices.0.profile",
    )
    assert issue.message == (
        "point 'total' is a float64 of 4 registers, but the device reads at most 2 per "
        "request (max_registers); points.1.type comes from profile 'acme-fm1'"
    )
    fixed = write(tmp_path / "site.yaml", device_lines("max_registers: 4\n"))
    assert load_config(fixed, profile_dirs=[lib]).devices[0].options.max_registers == 4


def test_profile_point_too_wide_for_the_devices_max_registers(tmp_path: Path) -> None:
    # The limit is the device's own: that is where the error is reported.
    lib = profile_dir(tmp_path)
    site = write(tmp_path / "site.yaml", device_lines("max_registers: 2\n"))
    (issue,) = issues_of(site, lib)
    assert (issue.file, issue.line, issue.col, issue.path) == (
        str(site),
        9,
        20,
        "devices.0.max_registers",
    )
    assert issue.message == (
        "point 'total' is a float64 of 4 registers, but the device reads at most 2 per "
        "request (max_registers)"
    )


def test_device_point_replacing_a_profile_point_is_reported_at_the_device(
    tmp_path: Path,
) -> None:
    lib = profile_dir(tmp_path)
    text = device_lines(
        """\
        points:
          - {name: extra, table: input, address: 40, type: int16}
          - {name: flow, address: 0, type: float32, unit: m3/hr}
        """
    )
    site = write(tmp_path / "site.yaml", text)
    (issue,) = issues_of(site, lib)
    # The device's second point is the merged first one; the error is at the device's.
    assert (issue.file, issue.line, issue.col, issue.path) == (
        str(site),
        11,
        55,
        "devices.0.points.1.unit",
    )
    assert issue.message == "unknown unit 'm3/hr'; did you mean 'm3/h'?"


def test_unknown_profile_lists_the_searched_folders(tmp_path: Path) -> None:
    lib = profile_dir(tmp_path)
    site = write(tmp_path / "site.yaml", CONFIG.replace("acme-fm1", "acme-fm9"))
    (issue,) = issues_of(site, lib)
    assert (issue.line, issue.col, issue.path) == (8, 14, "devices.0.profile")
    assert "did you mean 'acme-fm1'?" in issue.message
    assert str(tmp_path / "profiles") in issue.message and str(lib) in issue.message


def test_profile_name_cannot_escape_the_folders(tmp_path: Path) -> None:
    profile_dir(tmp_path)
    site = write(tmp_path / "site" / "site.yaml", CONFIG.replace("acme-fm1", "../lib/acme-fm1"))
    with pytest.raises(ConfigError) as info:
        load_config(site)
    (issue,) = info.value.issues
    assert issue.path == "devices.0.profile" and "letters, digits" in issue.message


def test_broken_driver_plugin_is_reported_once_at_the_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str) -> None:
        raise ImportError(f"No module named 'swm_edge_drivers.{name}'")

    monkeypatch.setattr("swm_edge.config.loader.load_driver", broken)
    text = CONFIG + "  - {id: fm-2, bus: lan, unit: 2, driver: modbus, profile: acme-fm1}\n"
    site = write(tmp_path / "site.yaml", text)
    lib = profile_dir(tmp_path)
    # The driver checks a device's keys and its profile, so it is needed even when the
    # profile is found elsewhere. It is reported once, at the first device's id (the driver
    # is the default there), not as an unknown profile, and not again at fm-2's driver key.
    for dirs in ([], [lib]):
        with pytest.raises(ConfigError) as info:
            load_config(site, profile_dirs=dirs)
        (issue,) = info.value.issues
        assert (issue.line, issue.col, issue.path) == (5, 9, "devices.0.id")
        assert "driver 'modbus' cannot be loaded: No module named" in issue.message
