"""Building a config without the CLI: compact specs, cross checks, the YAML text, writing."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from swm_edge.config import ConfigError, load_config
from swm_edge.config.writer import (
    CONFIG_MODE,
    BusEntry,
    Catalog,
    DeviceEntry,
    GatewaySetup,
    ProfileInfo,
    SpecError,
    check_setup,
    parse_address,
    parse_broker,
    parse_bus,
    parse_device,
    parse_interval,
    render_config,
    write_config,
    yaml_scalar,
)

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0"
# by-path names have colons of their own (a Pi 4's USB port, a PC's CDC-ACM adapter).
PI_PATH = "/dev/serial/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3:1.0-port0"
ACM_PATH = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0"

# The catalog of the built-in drivers, written out: these tests need no plugin discovery,
# but the configs they write are loaded by the real loader, with the real profiles.
CATALOG = Catalog(
    drivers={"modbus-rtu": "modbus", "modbus-tcp": "modbus", "mbus": "mbus", "sdi12": "sdi12"},
    profiles=(
        ProfileInfo("siemens-mag6000", "modbus", "Siemens", "SITRANS F M MAG 6000", "flow meter"),
        ProfileInfo("keller-series30", "modbus", "KELLER AG", "Series 30", "pressure"),
        ProfileInfo("insitu-aquatroll400", "modbus", "In-Situ Inc.", "Aqua TROLL 400", "sonde"),
        ProfileInfo("insitu-aquatroll400", "sdi12", "In-Situ Inc.", "Aqua TROLL 400", "sonde"),
    ),
)


def _buses(*specs: str) -> dict[str, BusEntry]:
    return {b.id: b for b in map(parse_bus, specs)}


# --- specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            f"rs485-1:modbus-rtu:{BY_ID}:19200:e:2",
            BusEntry("rs485-1", "modbus-rtu", port=BY_ID, baudrate=19200, parity="E", stopbits=2),
        ),
        # Settings left out are the bus type's defaults, written out.
        (
            "rs485-1:modbus-rtu:/dev/ttyUSB0",
            BusEntry(
                "rs485-1", "modbus-rtu", port="/dev/ttyUSB0", baudrate=9600, parity="N", stopbits=1
            ),
        ),
        (
            "lan:modbus-tcp:192.0.2.10:1502",
            BusEntry("lan", "modbus-tcp", host="192.0.2.10", tcp_port=1502),
        ),
        ("lan:modbus-tcp:plc.local", BusEntry("lan", "modbus-tcp", host="plc.local", tcp_port=502)),
        (
            "v6:modbus-tcp:[2001:db8::7]:503",
            BusEntry("v6", "modbus-tcp", host="2001:db8::7", tcp_port=503),
        ),
        (
            "mbus-1:mbus:/dev/ttyUSB1",
            BusEntry("mbus-1", "mbus", port="/dev/ttyUSB1", baudrate=2400, parity="E"),
        ),
        (
            "mbus-1:mbus:/dev/ttyUSB1:300",
            BusEntry("mbus-1", "mbus", port="/dev/ttyUSB1", baudrate=300, parity="E"),
        ),
        (
            "sdi-1:sdi12:/dev/ttyUSB2",
            BusEntry("sdi-1", "sdi12", port="/dev/ttyUSB2", baudrate=1200, parity="E"),
        ),
        # Trailing settings after a by-path name are still found.
        (
            f"p:modbus-rtu:{PI_PATH}:4800:O",
            BusEntry("p", "modbus-rtu", port=PI_PATH, baudrate=4800, parity="O", stopbits=1),
        ),
        (
            f"p:modbus-rtu:{ACM_PATH}",
            BusEntry("p", "modbus-rtu", port=ACM_PATH, baudrate=9600, parity="N", stopbits=1),
        ),
    ],
)
def test_bus_specs(spec: str, expected: BusEntry) -> None:
    assert parse_bus(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "rs485-1:modbus_rtu:/dev/ttyUSB0",
            "unknown bus type 'modbus_rtu' (did you mean 'modbus-rtu'?)",
        ),
        ("rs485-1:modbus-rtu:/dev/ttyUSB0:96OO", "baud rate '96OO' is not one of 1200, 2400"),
        ("rs485-1:modbus-rtu:/dev/ttyUSB0:9600:X", "parity 'X' is not N, E or O"),
        ("rs485-1:modbus-rtu:/dev/ttyUSB0:9600:N:3", "stop bits '3' is not 1 or 2"),
        ("rs485-1:modbus-rtu:/dev/ttyUSB0:9600:N:1:8", "too many fields"),
        ("rs485-1:modbus-rtu:", "the serial port is missing"),
        ("rs485 1:modbus-rtu:/dev/ttyUSB0", "bus id 'rs485 1' must be 1-64 characters"),
        ("rs485-1", "expected ID:modbus-rtu:PORT"),
        ("lan:modbus-tcp:192.0.2.10:70000", "is not a TCP port (1..65535)"),
        ("lan:modbus-tcp:", "the host is missing"),
        ("lan:modbus-tcp:2001:db8::7", "write an IPv6 address in brackets"),
        ("mbus-1:mbus:/dev/ttyUSB1:115200", "baud rate '115200' is not one of 300"),
        ("sdi-1:sdi12:/dev/ttyUSB2:9600", "SDI-12 is always 1200 baud 7E1"),
        ("raw:serial:/dev/ttyUSB3", "unknown bus type 'serial'"),
    ],
)
def test_bad_bus_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_bus(spec)
    assert message in str(exc.value)


def test_broker() -> None:
    assert parse_broker("mqtt.example.net") == ("mqtt.example.net", None)
    assert parse_broker("10.0.0.5:8883") == ("10.0.0.5", 8883)
    assert parse_broker("[2001:db8::1]:1883") == ("2001:db8::1", 1883)
    for bad, message in [
        ("mqtts://mqtt.example.net", "without a scheme"),
        ("mqtt.example.net:x", "is not a TCP port"),
        ("", "must be a host name"),
        ("[2001:db8::1", "write an IPv6 address as [ADDRESS]"),
    ]:
        with pytest.raises(SpecError) as exc:
            parse_broker(bad)
        assert message in str(exc.value), bad


def test_addresses_by_bus_type() -> None:
    assert parse_address("247", "modbus-rtu") == 247
    assert parse_address("0", "modbus-tcp") == 0
    assert parse_address("255", "modbus-tcp") == 255
    assert parse_address("250", "mbus") == 250
    assert parse_address("1234ffff", "mbus") == "1234FFFF"
    assert parse_address("00012345", "mbus") == "00012345"  # 8 digits: secondary
    assert parse_address("a", "sdi12") == "a"
    for text, bus_type in [
        ("0", "modbus-rtu"),  # broadcast: no device answers
        ("248", "modbus-rtu"),
        ("256", "modbus-tcp"),
        ("x1", "modbus-tcp"),
        ("251", "mbus"),
        ("1234567", "mbus"),
        ("10", "sdi12"),
        ("?", "sdi12"),
    ]:
        with pytest.raises(SpecError, match="is not a valid"):
            parse_address(text, bus_type)


def test_device_specs() -> None:
    buses = _buses(
        "lan:modbus-tcp:192.0.2.10", "mbus-1:mbus:/dev/ttyUSB1", "sdi-1:sdi12:/dev/ttyUSB2"
    )
    assert parse_device("inlet-flow:lan:1:siemens-mag6000", buses) == DeviceEntry(
        "inlet-flow", "lan", 1, "siemens-mag6000", None
    )
    assert parse_device("inlet-flow:lan:1:siemens-mag6000:2.5", buses).interval == 2.5
    assert parse_device("m:mbus-1:5", buses) == DeviceEntry("m", "mbus-1", 5, None, None)
    assert parse_device("m:mbus-1:12345678::300", buses) == DeviceEntry(
        "m", "mbus-1", "12345678", None, 300.0
    )
    assert parse_device("s:sdi-1:0:insitu-aquatroll400", buses).address == "0"
    for spec, message in [
        ("inlet-flow:lan", "expected ID:BUS:ADDRESS[:PROFILE[:INTERVAL]]"),
        ("inlet-flow:lan:1:siemens-mag6000:10:x", "expected ID:BUS:ADDRESS"),
        ("inlet-flow:lam:1:siemens-mag6000", "no bus 'lam' (did you mean 'lan'?); buses: lan"),
        ("inlet-flow:lan:300:siemens-mag6000", "address '300' is not a valid Modbus unit id"),
        ("inlet-flow:lan:1:siemens-mag6000:0", "interval '0' is not a number of seconds"),
        ("inlet-flow:lan:1:siemens-mag6000:nan", "interval 'nan' is not a number"),
        ("inlet flow:lan:1:siemens-mag6000", "device id 'inlet flow' must be"),
    ]:
        with pytest.raises(SpecError) as exc:
            parse_device(spec, buses)
        assert message in str(exc.value), spec
    with pytest.raises(SpecError, match=r"buses: none given \(add --bus\)"):
        parse_device("inlet-flow:lan:1:siemens-mag6000", {})
    assert parse_interval("900") == 900.0


# --- cross checks ------------------------------------------------------------------------


def _setup(*devices: DeviceEntry, buses: tuple[BusEntry, ...] | None = None) -> GatewaySetup:
    if buses is None:
        buses = tuple(
            _buses(
                f"rs485-1:modbus-rtu:{BY_ID}",
                "lan:modbus-tcp:192.0.2.10",
                "mbus-1:mbus:/dev/ttyUSB1",
                "sdi-1:sdi12:/dev/ttyUSB2",
            ).values()
        )
    return GatewaySetup("gw-lima-0001", "mqtt.example.net", buses=buses, devices=devices)


def test_check_setup_reports_every_problem() -> None:
    problems = check_setup(
        _setup(
            DeviceEntry("a", "lan", 1, "siemens-mag600"),
            DeviceEntry("a", "rs485-1", 2, "keller-series30"),
            DeviceEntry("b", "sdi-1", "0", "keller-series30"),  # a Modbus profile on SDI-12
            DeviceEntry("c", "rs485-1", 3),  # Modbus without a profile
            DeviceEntry("d", "mbus-1", 4),  # M-Bus without one is fine
            buses=(
                *_buses(
                    f"rs485-1:modbus-rtu:{BY_ID}",
                    "lan:modbus-tcp:192.0.2.10",
                    "mbus-1:mbus:/dev/ttyUSB1",
                    "sdi-1:sdi12:/dev/ttyUSB2",
                ).values(),
                parse_bus("lan:modbus-tcp:192.0.2.11"),
            ),
        ),
        CATALOG,
    )
    assert problems == [
        "bus id 'lan' is given 2 times; ids must be unique",
        "device id 'a' is given 2 times; ids must be unique",
        "device 'a': no profile 'siemens-mag600' for the modbus driver (did you mean "
        "'siemens-mag6000'?); known: siemens-mag6000, keller-series30, insitu-aquatroll400",
        "device 'b': no profile 'keller-series30' for the sdi12 driver; known: insitu-aquatroll400",
        "device 'c': a device on modbus-rtu bus 'rs485-1' needs a profile (one of "
        "siemens-mag6000, keller-series30, insitu-aquatroll400; swm-edge profiles lists them), "
        "or write its points into the config by hand",
    ]
    assert check_setup(_setup(DeviceEntry("d", "mbus-1", 4)), CATALOG) == []


def test_site_profiles_serve_every_driver_and_come_first() -> None:
    catalog = Catalog(
        CATALOG.drivers,
        (*CATALOG.profiles, ProfileInfo("keller-series30", None, "ACME", "re-flashed", "p")),
    )
    names = [p.name for p in catalog.profiles_for("modbus-rtu")]
    assert names == ["keller-series30", "siemens-mag6000", "insitu-aquatroll400"]
    assert catalog.profile("modbus-rtu", "keller-series30") == ProfileInfo(
        "keller-series30", None, "ACME", "re-flashed", "p"
    )
    assert [p.name for p in catalog.profiles_for("sdi12")] == [
        "keller-series30",
        "insitu-aquatroll400",
    ]
    assert catalog.profiles_for("mbus") == [catalog.profiles[-1]]


# --- the text ----------------------------------------------------------------------------

_YAML = YAML(typ="rt", pure=True)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_yaml_scalar_reads_back_as_the_same_string(value: str) -> None:
    assert _YAML.load(io.StringIO(f"k: {yaml_scalar(value)}\n"))["k"] == value


def test_yaml_scalar_quotes_only_what_needs_it() -> None:
    assert yaml_scalar(BY_ID) == BY_ID
    assert yaml_scalar("192.0.2.10") == "192.0.2.10"
    assert yaml_scalar("gw-lima-0001") == "gw-lima-0001"
    assert yaml_scalar("0") == '"0"'
    assert yaml_scalar("null") == '"null"'
    assert yaml_scalar("1e3") == '"1e3"'
    assert yaml_scalar("a: b") == '"a: b"'
    assert yaml_scalar(2.5) == "2.5"
    assert yaml_scalar(256.0) == "256"


FULL = GatewaySetup(
    gateway_id="gw-lima-0001",
    site="lima-d3",
    broker_host="mqtt.example.net",
    tls=True,
    ca_file="ca.pem",
    username="gw-lima-0001",
    password_file="mqtt.password",
    buffer_path="buffer.sqlite",
    buffer_mb=64,
    buses=tuple(
        _buses(
            f"rs485-1:modbus-rtu:{BY_ID}:19200:E",
            "lan:modbus-tcp:192.0.2.10",
            "mbus-1:mbus:/dev/ttyUSB1",
            "sdi-1:sdi12:/dev/ttyUSB2",
        ).values()
    ),
    devices=(
        DeviceEntry("inlet-flow", "lan", 1, "siemens-mag6000"),
        DeviceEntry("inlet-pressure", "rs485-1", 7, "keller-series30", 30),
        DeviceEntry("meter-1", "mbus-1", 5),
        DeviceEntry("meter-2", "mbus-1", "00012345", None, 300),
        DeviceEntry("troll-1", "sdi-1", "0", "insitu-aquatroll400", 120),
    ),
)


def test_written_config_loads_with_what_was_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = render_config(FULL, CATALOG, config_path=path, version="9.9")
    loaded = write_config(path, text)
    assert path.read_text(encoding="utf-8") == text
    assert stat.S_IMODE(path.stat().st_mode) == CONFIG_MODE
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left
    assert load_config(path).config == loaded.config

    config = loaded.config
    assert (config.gateway.id, config.gateway.site) == ("gw-lima-0001", "lima-d3")
    mqtt = config.mqtt[0]
    assert (mqtt.host, mqtt.port, mqtt.username) == ("mqtt.example.net", 8883, "gw-lima-0001")
    # Relative paths are relative to the config's folder, as in any config.
    assert mqtt.tls is not None and mqtt.tls.ca_file == tmp_path / "ca.pem"
    assert mqtt.password_file == tmp_path / "mqtt.password"
    assert (config.buffer.path, config.buffer.max_mb) == (tmp_path / "buffer.sqlite", 64)
    assert [(b.id, b.type) for b in loaded.buses] == [
        ("rs485-1", "modbus-rtu"),
        ("lan", "modbus-tcp"),
        ("mbus-1", "mbus"),
        ("sdi-1", "sdi12"),
    ]
    rtu, tcp, mbus, sdi = loaded.buses
    assert (rtu.port, rtu.baudrate, rtu.parity, rtu.stopbits) == (BY_ID, 19200, "E", 1)
    assert (tcp.host, tcp.tcp_port) == ("192.0.2.10", 502)
    assert (mbus.port, mbus.baudrate, mbus.parity, mbus.bytesize) == ("/dev/ttyUSB1", 2400, "E", 8)
    assert (sdi.port, sdi.baudrate, sdi.parity, sdi.bytesize) == ("/dev/ttyUSB2", 1200, "E", 7)
    assert [(d.id, d.bus, d.interval) for d in loaded.devices] == [
        ("inlet-flow", "lan", 10),
        ("inlet-pressure", "rs485-1", 30),
        ("meter-1", "mbus-1", 900),
        ("meter-2", "mbus-1", 300),
        ("troll-1", "sdi-1", 120),
    ]
    by_id = {d.id: d for d in config.devices}
    assert by_id["inlet-flow"].model_extra == {"unit": 1}
    assert by_id["inlet-pressure"].model_extra == {"unit": 7}
    assert by_id["meter-1"].model_extra == {"address": 5}
    assert by_id["meter-2"].model_extra == {"secondary": "00012345"}
    assert by_id["troll-1"].model_extra == {"address": "0"}
    # The profiles' points came in.
    points = {d.id: {p.name for p in d.points} for d in loaded.devices}
    assert points["inlet-flow"] == {
        "flow_rate",
        "totalizer_1",
        "totalizer_2",
        "totalizer_1_float",
        "totalizer_2_float",
    }
    assert points["inlet-pressure"] == {
        "pressure",
        "pressure_2",
        "temperature_t",
        "temperature",
        "temperature_2",
        "status",
    }
    assert points["meter-1"] == set()  # M-Bus without points: every record

    # It says what each section is and where to read more.
    for expected in (
        "swm-edge validate --config " + str(path),
        "swm-edge profiles NAME",
        "README",
        "docs/field-guide.md",
        "swm-edge profiles siemens-mag6000",
        "Siemens SITRANS F M MAG 6000 (flow meter)",
        "drivers/mbus/README.md",
        "The password is never written here",
        "swm-edge 9.9",
    ):
        assert expected in text, expected
    # Readable in a terminal editor (the commands naming the long test path aside).
    assert max(len(line) for line in text.splitlines() if str(path) not in line) <= 92


def test_plain_mqtt_and_empty_lists(tmp_path: Path) -> None:
    setup = GatewaySetup("gw-1", "10.0.0.5", broker_port=1884)
    path = tmp_path / "config.yaml"
    loaded = write_config(path, render_config(setup, CATALOG, config_path=path))
    assert (loaded.config.mqtt[0].port, loaded.config.mqtt[0].tls) == (1884, None)
    assert (loaded.buses, loaded.devices) == ([], [])
    tls_default = GatewaySetup("gw-1", "broker", tls=True)
    text = render_config(tls_default, CATALOG, config_path=path)
    assert "  port: 8883" in text and "  tls: {}" in text


def test_never_replaces_without_force(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("precious\n")
    text = render_config(GatewaySetup("gw-1", "broker"), CATALOG, config_path=path)
    with pytest.raises(FileExistsError):
        write_config(path, text)
    assert path.read_text() == "precious\n"
    write_config(path, text, force=True)
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_config_that_does_not_validate_is_not_written(tmp_path: Path) -> None:
    # Past check_setup (a profile nobody has): the loader is the last word.
    setup = _setup(DeviceEntry("x", "lan", 1, "no-such-profile"))
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as exc:
        write_config(path, render_config(setup, CATALOG, config_path=path))
    assert [(i.file, i.path) for i in exc.value.issues] == [(str(path), "devices.0.profile")]
    assert os.listdir(tmp_path) == []


def test_profile_descriptions() -> None:
    keller = ProfileInfo(
        "keller-series30", "modbus", "KELLER AG", "Series 30", "pressure / level transmitter"
    )
    assert keller.describe() == "KELLER AG Series 30 (pressure / level transmitter)"
    assert keller.short() == "KELLER AG, pressure / level transmitter"
    assert keller.short(20) == "KELLER AG, pressu..."
    assert ProfileInfo("bare", None).describe() == "bare"
    assert ProfileInfo("bare", None).short() == "bare"
