"""Building a new gateway's config file: compact specs in, commented YAML out.

This is the pure part of ``swm-edge init`` (the prompts and flags are in
:mod:`swm_edge.cli.init`):

* :func:`parse_broker`, :func:`parse_bus`, :func:`parse_address` and :func:`parse_device`
  read the compact forms a technician types (``rs485-1:modbus-rtu:/dev/ttyUSB0:9600:N``,
  ``inlet-flow:lan:1:siemens-mag6000:10``) and raise :class:`SpecError` with a message
  that says what was expected;
* :func:`check_setup` finds what only shows across entries (duplicate ids, a device on an
  unknown bus, a profile its bus's driver does not have), every problem at once;
* :func:`render_config` writes the YAML text, with comments saying what each section is
  and where to read more;
* :func:`write_config` checks that text with :func:`~swm_edge.config.load_config` exactly
  where it will live and only then puts it in place, atomically.

What the installed drivers and profiles are is passed in as a :class:`Catalog`, so this
module needs no plugin discovery and its tests no installed drivers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from swm_edge.config.loader import ConfigError, LoadedConfig, load_config
from swm_edge.config.models import (
    BAUDRATES,
    DEFAULT_BUFFER_PATH,
    HOST_PATTERN,
    ID_PATTERN,
    MBUS_BAUDRATES,
    PATTERN_HELP,
)

__all__ = [
    "BUS_DEFAULTS",
    "CONFIG_MODE",
    "INIT_BUS_TYPES",
    "BusEntry",
    "Catalog",
    "DeviceEntry",
    "GatewaySetup",
    "ProfileInfo",
    "SpecError",
    "check_id",
    "check_setup",
    "format_number",
    "parse_address",
    "parse_broker",
    "parse_bus",
    "parse_device",
    "parse_host",
    "parse_interval",
    "render_config",
    "write_config",
    "yaml_scalar",
]

#: Mode of a written config: it names the password file and the broker, so not world-readable.
CONFIG_MODE = 0o640

#: The bus types ``init`` can write. ``serial`` is left out: its devices need a
#: third-party driver's own keys, which only that driver's README can tell.
INIT_BUS_TYPES: tuple[str, ...] = ("modbus-rtu", "modbus-tcp", "mbus", "sdi12")


@dataclass(frozen=True)
class _BusDefaults:
    """Line settings and device defaults of one bus type, as the models default them."""

    baudrate: int | None
    parity: str | None
    tcp_port: int | None
    interval: float
    id_prefix: str
    what: str


#: Per bus type: the line defaults written when a spec leaves them out, the poll interval
#: a new device gets, and the prefix of suggested bus ids.
BUS_DEFAULTS: dict[str, _BusDefaults] = {
    "modbus-rtu": _BusDefaults(9600, "N", None, 10, "rs485", "RS-485 line, Modbus RTU"),
    "modbus-tcp": _BusDefaults(None, None, 502, 10, "tcp", "Modbus TCP connection"),
    # M-Bus meters are read every 15 min by convention: a poll of one meter occupies the
    # line for over a second at 2400 baud, and battery meters count their readouts.
    "mbus": _BusDefaults(2400, "E", None, 900, "mbus", "wired M-Bus line (EN 13757)"),
    # SDI-12 sensors take seconds per measurement (a sonde announces 4 s or more).
    "sdi12": _BusDefaults(1200, "E", None, 60, "sdi", "SDI-12 data line"),
}

_BUS_SPEC_FORMS = {
    "modbus-rtu": "ID:modbus-rtu:PORT[:BAUD[:PARITY[:STOPBITS]]]",
    "modbus-tcp": "ID:modbus-tcp:HOST[:PORT]",
    "mbus": "ID:mbus:PORT[:BAUD[:PARITY]]",
    "sdi12": "ID:sdi12:PORT",
}
DEVICE_SPEC_FORM = "ID:BUS:ADDRESS[:PROFILE[:INTERVAL]]"

_PARITIES = ("N", "E", "O")
# /dev/serial/by-path/ names contain colons (pci-0000:01:00.0-usb-0:1.3:1.0-port0); those
# are the only serial ports a spec may have colons in.
_BY_PATH = "/dev/serial/by-path/"
# Settings after such a port: only fields that look like settings are taken as settings.
_BY_PATH_SPEC = re.compile(
    r"(?P<port>.+?)(?::(?P<baud>\d+)(?::(?P<parity>[NEOneo])(?::(?P<stop>[12]))?)?)?"
)
_SDI12_ADDRESS = re.compile(r"[0-9A-Za-z]")
_MBUS_SECONDARY = re.compile(r"[0-9Ff]{8}")
_INTERVAL_RANGE = (0.1, 86400.0)


class SpecError(ValueError):
    """A value typed by the user cannot be used; the message says why and what would do."""


@dataclass(frozen=True)
class ProfileInfo:
    """A device profile as offered to the user.

    ``driver`` is ``None`` for a site profile (``profiles/`` next to the config), which
    the loader tries for a device of any driver.
    """

    name: str
    driver: str | None
    manufacturer: str | None = None
    model: str | None = None
    kind: str | None = None

    def describe(self) -> str:
        """One line for a list or a comment: manufacturer, model and kind."""
        parts = [p for p in (self.manufacturer, self.model) if p]
        text = " ".join(parts) or self.name
        return f"{text} ({self.kind})" if self.kind else text

    def short(self, width: int = 60) -> str:
        """Manufacturer and kind, cut to ``width``: one line of a pick list."""
        text = ", ".join(p for p in (self.manufacturer, self.kind) if p) or self.describe()
        return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class Catalog:
    """What the installed drivers offer: the driver of each bus type and the profiles."""

    drivers: Mapping[str, str]
    profiles: Sequence[ProfileInfo] = ()

    def driver_for(self, bus_type: str) -> str | None:
        """The name of the driver that reads ``bus_type`` buses, if one is installed."""
        return self.drivers.get(bus_type)

    def profiles_for(self, bus_type: str) -> list[ProfileInfo]:
        """Profiles a device on a ``bus_type`` bus may use; site profiles first, as the
        loader looks there first."""
        driver = self.driver_for(bus_type)
        site = [p for p in self.profiles if p.driver is None]
        taken = {p.name for p in site}
        own = [p for p in self.profiles if p.driver == driver and p.name not in taken]
        return site + own

    def profile(self, bus_type: str, name: str) -> ProfileInfo | None:
        """The profile ``name`` for a device on a ``bus_type`` bus, or ``None``."""
        return next((p for p in self.profiles_for(bus_type) if p.name == name), None)


@dataclass(frozen=True)
class BusEntry:
    """One bus of the new config. Serial buses have ``port``; TCP buses ``host``."""

    id: str
    type: str
    port: str | None = None
    baudrate: int | None = None
    parity: str | None = None
    stopbits: int | None = None
    host: str | None = None
    tcp_port: int | None = None


@dataclass(frozen=True)
class DeviceEntry:
    """One device of the new config.

    ``address`` is what the bus type calls it: the Modbus unit id (int), the M-Bus
    primary address (int) or secondary address (8-character str), the SDI-12 address
    (one-character str).
    """

    id: str
    bus: str
    address: int | str
    profile: str | None = None
    interval: float | None = None


@dataclass(frozen=True)
class GatewaySetup:
    """Everything ``swm-edge init`` writes into a config."""

    gateway_id: str
    broker_host: str
    broker_port: int | None = None
    site: str | None = None
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    buffer_path: str = str(DEFAULT_BUFFER_PATH)
    buffer_mb: float = 256
    buses: tuple[BusEntry, ...] = ()
    devices: tuple[DeviceEntry, ...] = field(default=())

    def bus(self, bus_id: str) -> BusEntry | None:
        """The bus ``bus_id``, or ``None``."""
        return next((b for b in self.buses if b.id == bus_id), None)


# --- parsing ---------------------------------------------------------------------------


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid gateway, site, bus or device id; else :class:`SpecError`."""
    if not re.fullmatch(ID_PATTERN, value):
        raise SpecError(f"{what} {value!r} {PATTERN_HELP[ID_PATTERN]}")
    return value


def _port_number(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SpecError(f"{what} {text!r} is not a TCP port (1..65535)")
    return int(text)


def _host_and_port(text: str, what: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise SpecError(
                f"{what} {text!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT"
            )
        return host, _port_number(rest[1:], f"{what} port") if rest else None
    if text.count(":") > 1:
        raise SpecError(f"{what} {text!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
    host, sep, port = text.partition(":")
    if "://" in text:
        raise SpecError(f"{what} {text!r}: give the host name without a scheme, e.g. {host}")
    if not host or not re.fullmatch(HOST_PATTERN, host):
        raise SpecError(f"{what} {text!r}: {PATTERN_HELP[HOST_PATTERN]}")
    return host, _port_number(port, f"{what} port") if sep else None


def parse_broker(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` of the MQTT broker -> (host, port or ``None`` for the default)."""
    return _host_and_port(text, "broker")


def parse_host(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` of a Modbus TCP device or gateway -> (host, port or ``None``)."""
    return _host_and_port(text, "host")


def _serial_settings(
    spec: str, bus_type: str, rest: str
) -> tuple[str, int | None, str | None, int | None]:
    """PORT[:BAUD[:PARITY[:STOPBITS]]] of a serial bus."""
    if rest.startswith(_BY_PATH):
        # The port keeps its own colons; trailing fields that look like settings are not
        # part of it.
        match = _BY_PATH_SPEC.fullmatch(rest)
        assert match is not None  # the settings are optional, so the pattern always matches
        port, baud, parity, stop = match.group("port", "baud", "parity", "stop")
    else:
        port, *fields = rest.split(":")
        if len(fields) > 3:
            raise SpecError(f"bus {spec!r}: too many fields; expected {_BUS_SPEC_FORMS[bus_type]}")
        baud, parity, stop = (*fields, None, None, None)[:3]
    if not port:
        raise SpecError(
            f"bus {spec!r}: the serial port is missing; expected {_BUS_SPEC_FORMS[bus_type]}"
        )
    allowed = MBUS_BAUDRATES if bus_type == "mbus" else BAUDRATES
    baudrate: int | None = None
    if baud:
        if not baud.isdigit() or int(baud) not in allowed:
            listed = ", ".join(str(b) for b in allowed)
            raise SpecError(f"bus {spec!r}: baud rate {baud!r} is not one of {listed}")
        baudrate = int(baud)
    if parity:
        if parity.upper() not in _PARITIES:
            raise SpecError(f"bus {spec!r}: parity {parity!r} is not N, E or O")
        parity = parity.upper()
    stopbits: int | None = None
    if stop:
        if stop not in ("1", "2"):
            raise SpecError(f"bus {spec!r}: stop bits {stop!r} is not 1 or 2")
        stopbits = int(stop)
    if bus_type == "sdi12" and (baudrate not in (None, 1200) or parity not in (None, "E")):
        raise SpecError(f"bus {spec!r}: SDI-12 is always 1200 baud 7E1; give only the port")
    if bus_type == "mbus" and stopbits is not None:
        raise SpecError(f"bus {spec!r}: expected {_BUS_SPEC_FORMS[bus_type]}")
    return port, baudrate, parity or None, stopbits


def parse_bus(spec: str) -> BusEntry:
    """A bus from its compact spec.

    ``ID:modbus-rtu:PORT[:BAUD[:PARITY[:STOPBITS]]]``, ``ID:modbus-tcp:HOST[:PORT]``,
    ``ID:mbus:PORT[:BAUD[:PARITY]]`` or ``ID:sdi12:PORT``. Settings left out get the bus
    type's defaults (:data:`BUS_DEFAULTS`), written out by :func:`render_config`.
    """
    bus_id, sep, rest = spec.strip().partition(":")
    bus_type, sep2, rest = rest.partition(":")
    if not sep or not sep2:
        forms = "; ".join(_BUS_SPEC_FORMS.values())
        raise SpecError(f"bus {spec!r}: expected {forms}")
    check_id(bus_id, "bus id")
    if bus_type not in INIT_BUS_TYPES:
        raise SpecError(
            f"bus {spec!r}: unknown bus type {bus_type!r}{_suggest(bus_type, INIT_BUS_TYPES)}; "
            f"one of {', '.join(INIT_BUS_TYPES)}"
        )
    defaults = BUS_DEFAULTS[bus_type]
    if bus_type == "modbus-tcp":
        if not rest:
            raise SpecError(
                f"bus {spec!r}: the host is missing; expected {_BUS_SPEC_FORMS[bus_type]}"
            )
        host, port = _host_and_port(rest, f"bus {bus_id!r}: host")
        return BusEntry(bus_id, bus_type, host=host, tcp_port=port or defaults.tcp_port)
    port_path, baudrate, parity, stopbits = _serial_settings(spec, bus_type, rest)
    return BusEntry(
        bus_id,
        bus_type,
        port=port_path,
        baudrate=baudrate or defaults.baudrate,
        parity=parity or defaults.parity,
        stopbits=stopbits or (1 if bus_type == "modbus-rtu" else None),
    )


def address_help(bus_type: str) -> str:
    """What a device address is on a ``bus_type`` bus, for prompts and messages."""
    return {
        "modbus-rtu": "Modbus unit id 1..247",
        "modbus-tcp": "Modbus unit id 0..255",
        "mbus": "M-Bus primary address 0..250 or 8-digit secondary address",
        "sdi12": "SDI-12 address: one of 0-9, A-Z, a-z",
    }[bus_type]


def parse_address(text: str, bus_type: str) -> int | str:
    """A device address as the bus type has it; see :class:`DeviceEntry`."""
    text = text.strip()
    bad = SpecError(f"address {text!r} is not a valid {address_help(bus_type)}")
    if bus_type in ("modbus-rtu", "modbus-tcp"):
        # On a line, 0 is broadcast (nobody answers) and 248..255 are reserved; behind TCP
        # any unit id may be routed.
        units = range(1, 248) if bus_type == "modbus-rtu" else range(256)
        if not text.isdigit() or int(text) not in units:
            raise bad
        return int(text)
    if bus_type == "mbus":
        if _MBUS_SECONDARY.fullmatch(text):
            return text.upper()
        if not text.isdigit() or int(text) > 250:
            raise bad
        return int(text)
    if bus_type == "sdi12":
        if not _SDI12_ADDRESS.fullmatch(text):
            raise bad
        return text
    raise SpecError(f"init cannot write devices for {bus_type} buses")


def parse_interval(text: str) -> float:
    """A poll interval in seconds (0.1 .. 86400)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    low, high = _INTERVAL_RANGE
    if not low <= value <= high:  # also false for NaN
        raise SpecError(f"interval {text!r} is not a number of seconds from 0.1 to 86400")
    return value


def parse_device(spec: str, buses: Mapping[str, BusEntry]) -> DeviceEntry:
    """A device from ``ID:BUS:ADDRESS[:PROFILE[:INTERVAL]]``.

    ``buses`` are the buses of the config by id: the bus's type says what the address
    is. An empty ``PROFILE`` (``meter-1:mbus-1:5::900``) means none. Whether the profile
    exists for the bus's driver is for :func:`check_setup`.
    """
    fields = spec.strip().split(":")
    if not 3 <= len(fields) <= 5:
        raise SpecError(f"device {spec!r}: expected {DEVICE_SPEC_FORM}")
    device_id, bus_id, address = fields[:3]
    profile = fields[3] if len(fields) > 3 else ""
    interval = fields[4] if len(fields) > 4 else ""
    check_id(device_id, "device id")
    bus = buses.get(bus_id)
    if bus is None:
        known = ", ".join(buses) or "none given (add --bus)"
        raise SpecError(
            f"device {spec!r}: no bus {bus_id!r}{_suggest(bus_id, buses)}; buses: {known}"
        )
    try:
        value = parse_address(address, bus.type)
    except SpecError as exc:
        raise SpecError(f"device {spec!r}: {exc}") from None
    if profile:
        check_id(profile, "profile name")
    try:
        seconds = parse_interval(interval) if interval else None
    except SpecError as exc:
        raise SpecError(f"device {spec!r}: {exc}") from None
    return DeviceEntry(device_id, bus_id, value, profile or None, seconds)


def check_setup(setup: GatewaySetup, catalog: Catalog) -> list[str]:
    """Every problem that spans entries: duplicate ids, devices on unknown buses, profiles
    the bus's driver lacks or needs. Empty when the setup can be written."""
    problems: list[str] = []
    for what, ids in (
        ("bus", [b.id for b in setup.buses]),
        ("device", [d.id for d in setup.devices]),
    ):
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(
                f"{what} id {dup!r} is given {ids.count(dup)} times; ids must be unique"
            )
    for device in setup.devices:
        bus = setup.bus(device.bus)
        if bus is None:
            problems.append(f"device {device.id!r}: no bus {device.bus!r}")
            continue
        driver = catalog.driver_for(bus.type)
        if driver is None:
            problems.append(
                f"device {device.id!r}: no installed driver reads {bus.type} buses "
                "(swm-edge drivers lists them)"
            )
            continue
        names = [p.name for p in catalog.profiles_for(bus.type)]
        if device.profile is None:
            if bus.type != "mbus":
                # Modbus and SDI-12 devices need a register map or a value list; M-Bus
                # meters describe their own records.
                problems.append(
                    f"device {device.id!r}: a device on {bus.type} bus {bus.id!r} needs a profile "
                    f"(one of {', '.join(names) or 'none installed'}; swm-edge profiles lists "
                    "them), or write its points into the config by hand"
                )
        elif device.profile not in names:
            problems.append(
                f"device {device.id!r}: no profile {device.profile!r} for the {driver} driver"
                f"{_suggest(device.profile, names)}; known: {', '.join(names) or 'none'}"
            )
    return problems


# --- rendering -------------------------------------------------------------------------

_COMMENT_COLUMN = 36
_WRAP = 92
_PLAIN_CANDIDATE = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./@+-]*")
_YAML = YAML(typ="rt", pure=True)


def yaml_scalar(value: str | float | bool) -> str:
    """``value`` as a YAML scalar that reads back as the same value and type.

    Strings stay plain when that is unambiguous (``/dev/ttyUSB0``, ``192.0.2.10``) and are
    double-quoted otherwise (``"0"``, ``"yes"``, anything with ``:`` or ``#``), with the
    characters YAML does not allow raw escaped.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if _PLAIN_CANDIDATE.fullmatch(value):
        try:
            # Let the parser the loader uses decide: "0", "1e3", "null", "yes" are not strings.
            if _YAML.load(io.StringIO(f"k: {value}\n"))["k"] == value:
                return value
        except (YAMLError, TypeError):
            pass
    return _double_quoted(value)


# YAML's printable characters (YAML 1.2, 5.1) less the line breaks, which a quoted scalar
# would fold; everything else is escaped.
_UNPRINTABLE = re.compile(
    "[^\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _double_quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_UNPRINTABLE.sub(_escape, escaped)}"'


def format_number(value: float) -> str:
    """``10`` for 10.0, ``0.5`` for 0.5: how people write numbers in a config."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Lines:
    """YAML lines with end-of-line comments aligned to one column."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str = "", comment: str | None = None) -> None:
        if comment:
            text = f"{text.ljust(_COMMENT_COLUMN - 2)}  # {comment}" if text else f"# {comment}"
        self.lines.append(text)

    def comment(self, *texts: str, indent: int = 0) -> None:
        for text in texts:
            if not text:
                self.lines.append(" " * indent + "#")
                continue
            # Profile models can be long: wrap prose to stay readable in a terminal editor,
            # but never an indented command or example.
            wrapped = (
                [text]
                if text.startswith(" ")
                else textwrap.wrap(text, _WRAP - indent - 2, break_on_hyphens=False)
            )
            for line in wrapped:
                self.lines.append(" " * indent + f"# {line}")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def _render_header(out: _Lines, setup: GatewaySetup, config_path: Path, version: str) -> None:
    where = f" (site {setup.site})" if setup.site else ""
    out.comment(
        f"swm-edge configuration of gateway {setup.gateway_id}{where},",
        f"written by `swm-edge init` (swm-edge {version}). Edit it freely; then check it:",
        f"    swm-edge validate --config {config_path}",
        f"    swm-edge read --config {config_path}      # poll every device once, no MQTT",
        "Every error is reported as FILE:LINE:COL with the key's path, all at once.",
        "",
        "More: the swm-edge README (section Configuration) lists every key; its",
        "config/example.yaml is a commented site; docs/field-guide.md is the on-site",
        "procedure. `swm-edge profiles` lists the device profiles, `swm-edge profiles NAME`",
        "shows one register map. Relative paths here are relative to this file's folder.",
    )
    out.add()


def _render_gateway(out: _Lines, setup: GatewaySetup) -> None:
    out.add("gateway:")
    out.comment("Unique in the fleet; it is part of every MQTT topic of this gateway.", indent=2)
    out.add(f"  id: {yaml_scalar(setup.gateway_id)}")
    if setup.site:
        out.add(f"  site: {yaml_scalar(setup.site)}", "the site (e.g. DMA) it serves")
    else:
        out.add("  # site: dma-1", "the site (e.g. DMA) it serves (optional)")
    out.add("  # location: {lat: -12.046, lon: -77.043}", "WGS84, for the operator's map")
    out.add()


def _render_mqtt(out: _Lines, setup: GatewaySetup) -> None:
    out.add("mqtt:")
    out.comment("The broker readings are published to.", indent=2)
    out.add(f"  host: {yaml_scalar(setup.broker_host)}")
    port = setup.broker_port or (8883 if setup.tls else 1883)
    out.add(f"  port: {port}", "MQTT over TLS is 8883, plain 1883")
    if setup.username:
        out.add(f"  username: {yaml_scalar(setup.username)}")
    if setup.password_file:
        out.comment(
            "The password is never written here: it is read from this file (one line;",
            "mode 0640, group swm-edge) when the agent connects.",
            indent=2,
        )
        out.add(f"  password_file: {yaml_scalar(setup.password_file)}")
    if setup.tls:
        out.comment(
            "The broker's certificate is always verified: against ca_file when given, else",
            "against the system's CAs. cert_file + key_file (together) enable mutual TLS.",
            indent=2,
        )
        if setup.ca_file:
            out.add("  tls:")
            out.add(f"    ca_file: {yaml_scalar(setup.ca_file)}")
        else:
            out.add("  tls: {}")
    else:
        out.comment(
            "Without TLS the password and the readings cross the network in clear text;",
            "`tls: {}` (system CAs) or `tls: {ca_file: ...}` turns it on.",
            indent=2,
        )
    out.comment(
        'Defaults, see the README: qos: 1, keepalive: 30, topic_prefix: swm, protocol: "5".',
        indent=2,
    )
    out.add()


def _render_buffer(out: _Lines, setup: GatewaySetup) -> None:
    out.add("buffer:")
    out.comment(
        "Every reading is stored here first and deleted once the broker has it, so an",
        "outage of days loses nothing; when the file reaches max_mb the oldest go first.",
        indent=2,
    )
    out.add(f"  path: {yaml_scalar(setup.buffer_path)}")
    out.add(f"  max_mb: {format_number(setup.buffer_mb)}")
    out.add()


def _render_bus(out: _Lines, bus: BusEntry) -> None:
    defaults = BUS_DEFAULTS[bus.type]
    out.comment(f"{defaults.what[0].upper()}{defaults.what[1:]}.", indent=2)
    if bus.type == "modbus-rtu":
        out.comment(
            "Every device on one line must use the same baud rate, parity and stop bits.",
            indent=2,
        )
    out.add(f"  - id: {yaml_scalar(bus.id)}")
    out.add(f"    type: {bus.type}")
    if bus.type == "modbus-tcp":
        out.add(f"    host: {yaml_scalar(bus.host or '')}")
        out.add(f"    port: {bus.tcp_port or defaults.tcp_port}")
        out.add("    # timeout: 1.0", "seconds; raise it behind a RTU->TCP gateway")
        return
    port = bus.port or ""
    stable = port.startswith(("/dev/serial/by-id/", "/dev/serial/by-path/"))
    out.add(
        f"    port: {yaml_scalar(port)}",
        None if stable else "better: /dev/serial/by-id/..., stable across re-plugs",
    )
    if bus.type == "sdi12":
        out.comment("1200 baud 7E1, as SDI-12 always is (the bus type's defaults).", indent=4)
        out.add("    # timeout: 1.0", "wait for the first character of an answer")
        return
    out.add(f"    baudrate: {bus.baudrate or defaults.baudrate}")
    out.add(f"    parity: {bus.parity or defaults.parity}", "N(one), E(ven) or O(dd)")
    if bus.type == "modbus-rtu":
        out.add(f"    stopbits: {bus.stopbits or 1}")
        out.add("    # timeout: 0.5", "seconds to wait for an answer; devices may override")
    else:
        out.add("    # timeout: 0.5", "seconds until the first byte of an answer")


def _address_lines(out: _Lines, device: DeviceEntry, bus: BusEntry) -> None:
    if bus.type in ("modbus-rtu", "modbus-tcp"):
        out.add(f"    unit: {device.address}", "the device's Modbus unit id")
    elif bus.type == "mbus" and isinstance(device.address, str):
        # Quoted always: an all-digit secondary address would otherwise read as a number.
        out.add(f"    secondary: {json.dumps(device.address)}", "8-digit secondary address")
    elif bus.type == "mbus":
        out.add(f"    address: {device.address}", "M-Bus primary address")
    else:
        out.add(f"    address: {json.dumps(str(device.address))}", "SDI-12 address")


def _render_device(out: _Lines, device: DeviceEntry, bus: BusEntry, catalog: Catalog) -> None:
    profile = catalog.profile(bus.type, device.profile) if device.profile else None
    if profile is not None:
        out.comment(f"{profile.describe()}; swm-edge profiles {profile.name}", indent=2)
    elif bus.type == "mbus":
        out.comment(
            "No points: every record of the meter is published, named by quantity. To pick",
            "values, list points (drivers/mbus/README.md of swm-edge).",
            indent=2,
        )
    out.add(f"  - id: {yaml_scalar(device.id)}")
    out.add(f"    bus: {yaml_scalar(device.bus)}")
    _address_lines(out, device, bus)
    interval = device.interval if device.interval is not None else BUS_DEFAULTS[bus.type].interval
    out.add(f"    interval: {format_number(interval)}", "seconds between polls")
    if device.profile:
        out.add(f"    profile: {yaml_scalar(device.profile)}")


def render_config(
    setup: GatewaySetup, catalog: Catalog, *, config_path: Path, version: str = ""
) -> str:
    """The commented YAML text of ``setup``.

    ``config_path`` is where the file will be (named in the comments); ``catalog`` gives
    the profiles' descriptions. Settings left out of a bus get its type's defaults, so
    the file shows what the line runs at. The text is not checked here: see
    :func:`write_config`.
    """
    out = _Lines()
    _render_header(out, setup, config_path, version or "?")
    _render_gateway(out, setup)
    _render_mqtt(out, setup)
    _render_buffer(out, setup)
    if setup.buses:
        out.add("buses:")
        out.comment("The serial lines and TCP connections the devices are on.", indent=2)
        for bus in setup.buses:
            out.add()
            _render_bus(out, bus)
    else:
        out.add("buses: []", "serial lines and TCP connections; see the README")
    out.add()
    buses = {b.id: b for b in setup.buses}
    devices = [d for d in setup.devices if d.bus in buses]
    if devices:
        out.add("devices:")
        out.comment(
            "Polled every interval seconds, aligned to the clock. A device's own points",
            "add to its profile's and replace those of the same name, e.g. on Modbus:",
            "  points:",
            "    - {name: level, table: holding, address: 0, type: float32, unit: m}",
            "Per-device quirks (timeout, retries, request_delay, ...) are in the README.",
            indent=2,
        )
        for device in devices:
            out.add()
            _render_device(out, device, buses[device.bus], catalog)
    else:
        out.add("devices: []", "the meters and probes to poll; see the README")
    return out.text()


# --- writing ---------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (power loss on site).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _link_new(tmp: Path, path: Path) -> None:
    """Put ``tmp`` in place as ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        # link() fails if the name exists: no window between a check and a rename.
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links (FAT): check, then rename.
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
    else:
        tmp.unlink()


def write_config(
    path: Path, text: str, *, force: bool = False, group: int | None = None
) -> LoadedConfig:
    """Check ``text`` as the config at ``path`` and write it there, atomically.

    The text goes to a temporary file in ``path``'s folder (so relative paths and a
    ``profiles/`` folder next to it resolve as they will), is loaded with
    :func:`~swm_edge.config.load_config`, and only if that succeeds is renamed to
    ``path`` with mode :data:`CONFIG_MODE` (and group ``group``, if given). Without
    ``force`` an existing file is never replaced, not even one that appears meanwhile.

    Returns the loaded config (its ``warnings`` are worth showing).

    Raises:
        ConfigError: the text does not validate; nothing was written. Issues name ``path``.
        FileExistsError: ``path`` exists and ``force`` is false.
        OSError: the folder cannot be written.
    """
    path = Path(path)
    directory = path.absolute().parent
    if not force and path.exists():
        raise FileExistsError(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            # mkstemp creates 0600 and the umask may differ: set the mode the agent's
            # group needs to read it.
            os.fchmod(handle.fileno(), CONFIG_MODE)
            if group is not None:
                os.fchown(handle.fileno(), -1, group)
            os.fsync(handle.fileno())
        try:
            loaded = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(
                [
                    dataclasses.replace(issue, file=str(path)) if issue.file == str(tmp) else issue
                    for issue in exc.issues
                ]
            ) from None
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dataclasses.replace(
        loaded,
        path=path,
        warnings=[
            dataclasses.replace(w, file=str(path)) if w.file == str(tmp) else w
            for w in loaded.warnings
        ],
    )
