"""A device entry's driver keys: which driver checks them, and where their errors land.

Drivers here are small test classes registered through a fixture that replaces the
loader's view of the installed drivers, so the tests do not depend on which M-Bus or
SDI-12 drivers are installed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)
from swm_edge_drivers.modbus import ModbusDriver

from swm_edge.config import ConfigError, ConfigIssue, load_config
from swm_edge.driver import BusSpec, DeviceSpec, Driver, DriverNotFound, PointValue
from swm_edge.modbus.config import ModbusDevice
from swm_edge.units import Unit

# --- test drivers ------------------------------------------------------------------------

#: The bus each MeterDevice was validated with (its pydantic context).
SEEN_BUSES: list[Any] = []


class MeterPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    record: StrictInt = Field(ge=0)
    unit: Unit | None = None
    note: StrictStr | None = None


class MeterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: StrictInt = Field(ge=0, le=250)
    points: tuple[MeterPoint, ...] = ()
    secondary: StrictStr | None = None

    @field_validator("address")
    @classmethod
    def _note_bus(cls, value: int, info: ValidationInfo) -> int:
        SEEN_BUSES.append((info.context or {}).get("bus"))
        return value


class MeterDriver(Driver):
    bus_types: ClassVar[frozenset[str]] = frozenset({"mbus"})
    device_model: ClassVar[type[BaseModel]] = MeterDevice
    #: Wire time per poll, for the line-load warning; None: unknown.
    seconds: ClassVar[float | None] = 0.6

    @classmethod
    def estimate_seconds(cls, device: DeviceSpec, bus: BusSpec) -> float | None:
        return cls.seconds

    async def read(self, transport: Any) -> dict[str, PointValue]:
        return {}


class OtherMeterDriver(MeterDriver):
    pass


class ProbeDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: StrictStr = Field(pattern=r"^[0-9A-Za-z]$")
    points: tuple[MeterPoint, ...] = ()


class ProbeDriver(MeterDriver):
    bus_types: ClassVar[frozenset[str]] = frozenset({"sdi12"})
    device_model: ClassVar[type[BaseModel]] = ProbeDevice
    seconds: ClassVar[float | None] = None


class Exploding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: StrictInt = 0

    @field_validator("address")
    @classmethod
    def _bug(cls, value: int, info: ValidationInfo) -> int:
        raise RuntimeError("driver bug")


class ExplodingDriver(MeterDriver):
    device_model: ClassVar[type[BaseModel]] = Exploding


Install = Callable[..., None]


@pytest.fixture
def drivers(monkeypatch: pytest.MonkeyPatch) -> Install:
    """``drivers(name=DriverClass, ...)``: the loader sees exactly these drivers installed."""
    SEEN_BUSES.clear()

    def install(**classes: type[Driver]) -> None:
        def load(name: str) -> type[Driver]:
            if name not in classes:
                raise DriverNotFound(f"no driver named {name!r} is installed")
            return classes[name]

        monkeypatch.setattr(
            "swm_edge.config.loader.available_drivers", lambda: dict.fromkeys(classes)
        )
        monkeypatch.setattr("swm_edge.config.loader.load_driver", load)

    return install


# --- helpers --------------------------------------------------------------------------

HEAD = """\
gateway: {id: gw-1}
mqtt: {host: b}
buses:
  - {id: mb, type: mbus, port: /dev/ttyUSB0}
  - {id: sd, type: sdi12, port: /dev/ttyUSB1}
  - {id: rtu, type: modbus-rtu, port: /dev/ttyUSB2}
devices:
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def site(tmp_path: Path, devices: str) -> tuple[Path, str]:
    text = HEAD + textwrap.indent(textwrap.dedent(devices), "  ")
    return write(tmp_path / "site.yaml", text), text


def at(text: str, marker: str) -> tuple[int, int]:
    """1-based (line, col) of the unique ``marker``; a ``|`` in it marks the spot."""
    needle = marker.replace("|", "")
    assert text.count(needle) == 1, f"marker {needle!r} is not unique"
    index = text.index(needle) + max(marker.find("|"), 0)
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def errors(path: Path, **kwargs: Any) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return info.value.issues


def found(issues: list[ConfigIssue]) -> list[tuple[int, int, str, str]]:
    return [(i.line, i.col, i.path, i.message) for i in issues]


# --- serial bus models ---------------------------------------------------------------


def test_mbus_and_sdi12_bus_defaults(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=MeterDriver, sdi12=ProbeDriver, modbus=ModbusDriver)
    path, _ = site(tmp_path, "[]\n")
    mb, sd, _rtu = load_config(path).buses
    assert mb == BusSpec(
        id="mb",
        type="mbus",
        timeout=1.0,
        port="/dev/ttyUSB0",
        baudrate=2400,
        parity="E",
        stopbits=1,
        bytesize=8,
    )
    assert sd == BusSpec(
        id="sd",
        type="sdi12",
        timeout=1.0,
        port="/dev/ttyUSB1",
        baudrate=1200,
        parity="E",
        stopbits=1,
        bytesize=7,
    )


def test_serial_bus_settings(tmp_path: Path) -> None:
    text = HEAD.replace(
        "port: /dev/ttyUSB0}",
        "port: /dev/ttyUSB0, baudrate: 300, parity: N, stopbits: 2, timeout: 3, "
        "request_delay: 0.1}",
    )
    loaded = load_config(write(tmp_path / "site.yaml", text + "  []\n"))
    mb = loaded.buses[0]
    assert (mb.baudrate, mb.parity, mb.stopbits, mb.timeout, mb.request_delay) == (
        300,
        "N",
        2,
        3.0,
        0.1,
    )


@pytest.mark.parametrize(
    ("old", "new", "marker", "node", "message"),
    [
        (
            "{id: mb, type: mbus, port: /dev/ttyUSB0}",
            "{id: mb, type: mbus}",
            "{id: mb",
            "buses.0.port",
            "missing required key 'port'",
        ),
        (
            "port: /dev/ttyUSB1}",
            "port: /dev/ttyUSB1, baudrate: 300}",
            "300",
            "buses.1.baudrate",
            "Input should be one of 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, "
            "115200, got integer 300",
        ),
        (
            "port: /dev/ttyUSB0}",
            "port: /dev/ttyUSB0, baudrate: 1234}",
            "1234",
            "buses.0.baudrate",
            "Input should be one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400, "
            "got integer 1234",
        ),
        (
            "port: /dev/ttyUSB1}",
            "port: /dev/ttyUSB1, host: x}",
            "host: x",
            "buses.1.host",
            "unknown key 'host'; allowed: baudrate, bytesize, id, parity, port, "
            "request_delay, stopbits, timeout, type",
        ),
    ],
)
def test_serial_bus_errors(
    tmp_path: Path, old: str, new: str, marker: str, node: str, message: str
) -> None:
    text = HEAD.replace(old, new) + "  []\n"
    path = write(tmp_path / "site.yaml", text)
    assert found(errors(path)) == [(*at(text, marker), node, message)]


# --- which driver ---------------------------------------------------------------------


def test_the_bus_type_picks_the_driver(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=MeterDriver, sdi12=ProbeDriver, modbus=ModbusDriver)
    path, _ = site(
        tmp_path,
        """\
        - id: m1
          bus: mb
          address: 5
          points: [{name: volume, record: 0, unit: m3}]
        - id: p1
          bus: sd
          address: "3"
          points: [{name: level, record: 1, unit: m}]
        - id: q1
          bus: rtu
          unit: 4
          points: [{name: flow, address: 0}]
        """,
    )
    m1, p1, q1 = load_config(path).devices
    # The driver's model is validated with the device's bus in its context.
    assert [bus.id for bus in SEEN_BUSES] == ["mb"]
    assert SEEN_BUSES[0].type == "mbus" and SEEN_BUSES[0].baudrate == 2400
    assert (m1.driver, p1.driver, q1.driver) == ("mbus", "sdi12", "modbus")
    assert isinstance(m1.options, MeterDevice)
    assert m1.options.address == 5
    assert m1.points == (MeterPoint(name="volume", record=0, unit="m3"),)
    assert m1.points == m1.options.points
    assert isinstance(p1.options, ProbeDevice) and isinstance(q1.options, ModbusDevice)


def test_no_driver_for_the_bus_type(tmp_path: Path, drivers: Install) -> None:
    drivers(modbus=ModbusDriver)
    path, text = site(tmp_path, "- {id: m1, bus: mb, address: 5, points: [{name: v, record: 0}]}\n")
    assert found(errors(path)) == [
        (
            *at(text, "m1"),
            "devices.0.id",
            "no installed driver reads mbus buses (installed: modbus); install one, or pick "
            "one with driver:",
        )
    ]


def test_several_drivers_for_the_bus_type(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=MeterDriver, acme=OtherMeterDriver)
    path, text = site(tmp_path, "- {id: m1, bus: mb, address: 5, points: [{name: v, record: 0}]}\n")
    assert found(errors(path)) == [
        (
            *at(text, "m1"),
            "devices.0.id",
            "several installed drivers read mbus buses (acme, mbus); pick one with driver:",
        )
    ]
    path.write_text(text.replace("{id: m1,", "{id: m1, driver: acme,"), encoding="utf-8")
    assert load_config(path).devices[0].driver == "acme"


def test_driver_key_picks_another_driver(tmp_path: Path, drivers: Install) -> None:
    # Only a Modbus device can sit on a Modbus bus; the modbus driver says so at the unit.
    drivers(mbus=MeterDriver, modbus=ModbusDriver)
    devices = "- {id: m1, bus: mb, driver: modbus, unit: 1, points: [{name: v, address: 0}]}\n"
    path, text = site(tmp_path, devices)
    assert found(errors(path)) == [
        (
            *at(text, "unit: |1"),
            "devices.0.unit",
            "a Modbus device needs a modbus-rtu or modbus-tcp bus, but bus 'mb' is mbus",
        )
    ]


def test_unknown_driver(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=MeterDriver, modbus=ModbusDriver)
    path, text = site(tmp_path, "- {id: m1, bus: mb, driver: mbux, address: 5}\n")
    assert found(errors(path)) == [
        (
            *at(text, "mbux"),
            "devices.0.driver",
            "driver 'mbux' is not installed (installed: mbus, modbus)",
        )
    ]


def test_driver_that_crashes_checking_is_reported_not_raised(
    tmp_path: Path, drivers: Install
) -> None:
    drivers(mbus=ExplodingDriver)
    path, text = site(tmp_path, "- {id: m1, bus: mb, address: 5}\n")
    ((line, col, node, message),) = found(errors(path))
    assert (line, col, node) == (*at(text, "{id: m1"), "devices.0")
    assert message == "driver 'mbus' failed to check the device: RuntimeError('driver bug')"


# --- driver keys at their positions ------------------------------------------------------


def test_driver_key_errors_at_their_nodes(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=MeterDriver, modbus=ModbusDriver)
    path, text = site(
        tmp_path,
        """\
        - id: m1
          bus: mb
          address: 300
          colour: red
          adress: 1
          points:
            - {name: v, record: -1, unit: m³}
        - id: m2
          bus: mb
          interval: 60
        """,
    )
    core_and_driver = (
        "address, bus, driver, id, interval, offline_after, offline_backoff_max, points, "
        "profile, request_delay, retries, secondary, timeout"
    )
    assert found(errors(path)) == [
        (
            *at(text, "300"),
            "devices.0.address",
            "Input should be less than or equal to 250, got integer 300",
        ),
        (
            *at(text, "colour"),
            "devices.0.colour",
            f"unknown key 'colour'; allowed: {core_and_driver}",
        ),
        (*at(text, "adress"), "devices.0.adress", "unknown key 'adress'; did you mean 'address'?"),
        (
            *at(text, "record: |-1"),
            "devices.0.points.0.record",
            "Input should be greater than or equal to 0, got integer -1",
        ),
        (
            *at(text, "m³"),
            "devices.0.points.0.unit",
            "unknown unit 'm³'; did you mean 'm3'?",
        ),
        # A missing driver key is reported at the device entry, like a missing core key.
        (*at(text, "id: m2"), "devices.1.address", "missing required key 'address'"),
    ]


def test_driver_keys_are_checked_when_the_bus_is_unknown(tmp_path: Path, drivers: Install) -> None:
    # The bus cannot name the driver, but only one driver knows every key of the entry:
    # its errors are reported in the same run as the unknown bus.
    drivers(mbus=MeterDriver, sdi12=ProbeDriver, modbus=ModbusDriver)
    path, text = site(tmp_path, "- {id: m1, bus: nope, address: 5, secondary: 1}\n")
    assert [(i.path, i.line, i.col) for i in errors(path)] == [
        ("devices.0.bus", *at(text, "nope")),
        ("devices.0.secondary", *at(text, "secondary: |1")),
    ]


# --- profiles belong to a driver ----------------------------------------------------------

METER_PROFILE = """\
manufacturer: ACME
model: WM-2
kind: water meter
source: "ACME WM-2 M-Bus manual v1, ch. 3"
device: {secondary: "12345678", retries: 2}
points:
  - {name: volume, record: 0, unit: m3, note: "ch. 3.1"}
  - {name: flow, record: 1, unit: m3/h}
"""


def meter_driver_with_profiles(tmp_path: Path, text: str = METER_PROFILE) -> type[Driver]:
    folder = tmp_path / "meter-profiles"
    write(folder / "acme-wm2.yaml", text)

    class WithProfiles(MeterDriver):
        profile_dirs: ClassVar[tuple[Path, ...]] = (folder,)

    return WithProfiles


def test_profile_in_the_drivers_shape(tmp_path: Path, drivers: Install) -> None:
    drivers(mbus=meter_driver_with_profiles(tmp_path), modbus=ModbusDriver)
    path, _ = site(
        tmp_path,
        """\
        - id: m1
          bus: mb
          address: 5
          profile: acme-wm2
          points: [{name: flow, record: 7, unit: L/h}, {name: temp, record: 2, unit: Cel}]
        """,
    )
    (device,) = load_config(path).devices
    assert [(p.name, p.record, p.unit) for p in device.points] == [
        ("volume", 0, "m3"),
        ("flow", 7, "L/h"),
        ("temp", 2, "Cel"),
    ]
    assert (device.options.secondary, device.retries) == ("12345678", 2)


def test_profile_is_checked_with_its_devices_driver(tmp_path: Path, drivers: Install) -> None:
    # A Modbus-shaped point in an M-Bus driver's profile is an error in the profile file.
    profile = METER_PROFILE.replace("{name: flow, record: 1,", "{name: flow, address: 1,")
    driver = meter_driver_with_profiles(tmp_path, profile)
    drivers(mbus=driver, modbus=ModbusDriver)
    path, _ = site(tmp_path, "- {id: m1, bus: mb, address: 5, profile: acme-wm2}\n")
    issues = errors(path)
    assert {Path(i.file).name for i in issues} == {"acme-wm2.yaml"}
    assert [(i.line, i.col, i.path) for i in issues] == [
        (8, 5, "points.1.record"),
        (8, 18, "points.1.address"),
    ]
    assert issues[1].message.startswith("unknown key 'address'; allowed: name, note, record")


def test_line_load_of_a_serial_bus_counts_the_drivers_estimates(
    tmp_path: Path, drivers: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    drivers(mbus=MeterDriver, sdi12=ProbeDriver, modbus=ModbusDriver)
    devices = """\
    - {id: m1, bus: mb, address: 1, interval: 1, points: [{name: v, record: 0}]}
    - {id: m2, bus: mb, address: 2, interval: 1.2, points: [{name: v, record: 0}]}
    - {id: p1, bus: sd, address: "1", interval: 0.1, points: [{name: v, record: 0}]}
    """
    path, text = site(tmp_path, devices)
    (warning,) = load_config(path).warnings
    # The SDI-12 driver cannot tell (None): its line is not judged.
    assert (warning.line, warning.col, warning.path, warning.severity) == (
        *at(text, "{id: mb"),
        "buses.0",
        "warning",
    )
    assert warning.message.startswith(
        "line 'mb' needs 1.10 s of wire time per second at 2400 baud: devices m1 0.60, m2 0.50;"
    )
    monkeypatch.setattr(MeterDriver, "seconds", 0.5)
    assert load_config(path).warnings == []
