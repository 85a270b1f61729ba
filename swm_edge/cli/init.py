"""``swm-edge init``: write a new gateway's config, from flags or by asking on a terminal.

The config is built by the pure functions of :mod:`swm_edge.config.writer`; this module
reads the flags, asks for what is missing when a technician runs it on a terminal, and
reports. A user mistake is a message and exit 2 with nothing written; an existing file
without ``--force``, or a folder that cannot be written, is exit 1.
"""

from __future__ import annotations

import functools
import grp
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from swm_edge import __version__
from swm_edge.config import ConfigError, LoadedConfig
from swm_edge.config.writer import (
    BUS_DEFAULTS,
    INIT_BUS_TYPES,
    BusEntry,
    Catalog,
    DeviceEntry,
    GatewaySetup,
    ProfileInfo,
    SpecError,
    address_help,
    check_id,
    check_setup,
    format_number,
    parse_address,
    parse_broker,
    parse_bus,
    parse_device,
    parse_host,
    parse_interval,
    render_config,
    write_config,
)

__all__ = ["DEFAULT_OUTPUT", "SERIAL_BY_ID", "build_catalog", "init"]

DEFAULT_OUTPUT = Path("/etc/swm-edge/config.yaml")
#: Where udev puts the stable names of USB serial adapters.
SERIAL_BY_ID = Path("/dev/serial/by-id")
#: The group the agent's service runs as (systemd/swm-edge.service); it must read the config.
SERVICE_GROUP = "swm-edge"

EXIT_USAGE = 2
EXIT_FAILED = 1

T = TypeVar("T")

_EPILOG = """\b
Compact specs (settings left out get the bus type's defaults):
  --bus ID:modbus-rtu:PORT[:BAUD[:PARITY[:STOPBITS]]]  e.g. rs485-1:modbus-rtu:/dev/ttyUSB0:9600:N
  --bus ID:modbus-tcp:HOST[:PORT]                      e.g. lan:modbus-tcp:192.0.2.10:502
  --bus ID:mbus:PORT[:BAUD[:PARITY]]                   e.g. mbus-1:mbus:/dev/ttyUSB1
  --bus ID:sdi12:PORT                                  e.g. sdi-1:sdi12:/dev/ttyUSB2
  --device ID:BUS:ADDRESS[:PROFILE[:INTERVAL]]         e.g. inlet-flow:lan:1:siemens-mag6000:10
ADDRESS is the Modbus unit id, the M-Bus primary (0..250) or 8-digit secondary address, or
the SDI-12 address, by the bus's type. M-Bus meters need no PROFILE (every record is
published); `swm-edge profiles` lists the profiles. Prefer /dev/serial/by-id/... ports.

\b
Example:
  swm-edge init --gateway-id gw-lima-0001 --site lima-d3 --broker mqtt.example.net \\
    --ca-file /etc/swm-edge/ca.pem --username gw-lima-0001 \\
    --password-file /etc/swm-edge/mqtt.password \\
    --bus rs485-1:modbus-rtu:/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0 \\
    --bus lan:modbus-tcp:192.0.2.10 \\
    --device inlet-flow:lan:1:siemens-mag6000 \\
    --device inlet-pressure:rs485-1:1:keller-series30:30

Run on a terminal without --gateway-id and --broker, it asks for what the flags do not give.
"""


def build_catalog(config_dir: Path) -> Catalog:
    """The installed drivers' bus types and profiles, plus the site profiles in
    ``config_dir/profiles/`` (which the loader searches first)."""
    from swm_edge.cli.catalog import driver_catalog, profile_catalog

    drivers: dict[str, str] = {}
    for row in driver_catalog():
        for bus_type in row["bus_types"]:
            drivers.setdefault(bus_type, row["name"])
    profiles = [_site_profile(path) for path in sorted((config_dir / "profiles").glob("*.yaml"))]
    profiles += [
        ProfileInfo(r["name"], r["driver"], r["manufacturer"], r["model"], r["kind"])
        for r in profile_catalog()
    ]
    return Catalog(drivers, tuple(profiles))


def _site_profile(path: Path) -> ProfileInfo:
    try:
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError, UnicodeDecodeError):
        doc = None  # the loader reports a broken profile at the device that uses it
    header = doc if isinstance(doc, dict) else {}

    def text(key: str) -> str | None:
        value = header.get(key)
        return value if isinstance(value, str) else None

    return ProfileInfo(path.stem, None, text("manufacturer"), text("model"), text("kind"))


def _fail(messages: Sequence[str], code: int) -> NoReturn:
    for message in messages:
        click.echo(f"swm-edge init: {message}", err=True)
    sys.exit(code)


def _check_output(output: Path, force: bool) -> None:
    """Exit 1 before any question is asked if the file cannot be written."""
    if output.is_dir():
        _fail([f"{output} is a folder; give the config file's path with --output"], EXIT_FAILED)
    if output.exists() and not force:
        _fail(
            [f"{output} exists; nothing written (--force replaces it; the old file is not kept)"],
            EXIT_FAILED,
        )
    folder = output.parent
    if not folder.is_dir():
        _fail(
            [
                f"folder {folder} does not exist; create it first, e.g. "
                f"sudo install -d -m 0750 -g {SERVICE_GROUP} {folder}"
            ],
            EXIT_FAILED,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        _fail(
            [f"cannot write to {folder} (permission denied); run with sudo, or use --output PATH"],
            EXIT_FAILED,
        )


def _service_group(output: Path) -> tuple[int | None, str | None]:
    """The group to give the file, and a note if the agent may not be able to read it.

    A replaced file keeps its group; a new one gets the service's group, when this user
    may give it (root, or a member).
    """
    if output.exists():
        return output.stat().st_gid, None
    try:
        gid = grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        return None, None  # not installed as a service (yet): nothing to match
    if os.geteuid() == 0 or gid in os.getgroups():
        return gid, None
    return None, (
        f"the agent runs as group {SERVICE_GROUP} and cannot read a mode-0640 file of "
        f"another group: sudo chgrp {SERVICE_GROUP} {output}"
    )


def _absolute(path: Path | None) -> str | None:
    # A path typed on the command line is relative to the shell's folder, but in the
    # config relative paths are relative to the config's folder: write it absolute.
    return None if path is None else _absolute_path(str(path))


# --- interactive -------------------------------------------------------------------------


def _proc(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A click prompt ``value_proc``: a SpecError makes click print it and ask again."""

    def proc(text: str) -> T:
        try:
            return parse(text.strip())
        except SpecError as exc:
            raise click.BadParameter(str(exc)) from None

    return proc


def _ask(text: str, parse: Callable[[str], T], default: str | None = None) -> T:
    return click.prompt(text, default=default, value_proc=_proc(parse))


def _ask_optional(text: str, parse: Callable[[str], T], default: str = "") -> T | None:
    """A prompt that Enter leaves empty (or at ``default``); empty is ``None``."""

    def parse_or_none(value: str) -> T | None:
        return parse(value) if value else None

    return click.prompt(
        text, default=default, show_default=bool(default), value_proc=_proc(parse_or_none)
    )


def _new_id(what: str, taken: Sequence[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        check_id(value, what)
        if value in taken:
            raise SpecError(f"{what} {value!r} is taken; ids must be unique")
        return value

    return parse


def _free_id(prefix: str, taken: Sequence[str]) -> str:
    n = 1
    while f"{prefix}-{n}" in taken:
        n += 1
    return f"{prefix}-{n}"


def _choice(choices: Sequence[str], what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise SpecError(f"{what} {value!r} is not one of {', '.join(choices)}")

    return parse


def _absolute_path(value: str) -> str:
    return str(Path(value).expanduser().absolute())


def _serial_ports() -> list[str]:
    try:
        return sorted(str(p) for p in SERIAL_BY_ID.iterdir())
    except OSError:
        return []


def _ask_serial_port(used: Sequence[str]) -> str:
    ports = _serial_ports()
    if ports:
        click.echo("  Serial adapters found (their names stay the same across re-plugs):")
        for n, port in enumerate(ports, 1):
            click.echo(f"    {n}  {port}{'  (used above)' if port in used else ''}")
    else:
        click.echo(f"  No USB serial adapter found in {SERIAL_BY_ID} (plug it in to see it).")
    free = [p for p in ports if p not in used]

    def parse(value: str) -> str:
        if value.isdigit() and ports:
            if not 1 <= int(value) <= len(ports):
                raise SpecError(f"{value} is not a number from the list (1..{len(ports)})")
            return ports[int(value) - 1]
        if ":" in value and not value.startswith("/dev/serial/by-path/"):
            raise SpecError(f"{value!r}: give the port only; the line settings come next")
        return value

    label = "  Serial port (number or path)" if ports else "  Serial port, e.g. /dev/ttyUSB0"
    return _ask(label, parse, default=free[0] if free else None)


def _ask_bus(taken: Sequence[str], used_ports: Sequence[str]) -> BusEntry:
    bus_type = _ask(
        f"  Type ({', '.join(INIT_BUS_TYPES)})", _choice(INIT_BUS_TYPES, "bus type"), "modbus-rtu"
    )
    defaults = BUS_DEFAULTS[bus_type]
    bus_id = _ask("  Bus id", _new_id("bus id", taken), _free_id(defaults.id_prefix, taken))
    if bus_type == "modbus-tcp":
        host, port = _ask("  Host[:port] of the device or RTU->TCP gateway", parse_host)
        return BusEntry(bus_id, bus_type, host=host, tcp_port=port or defaults.tcp_port)
    port_path = _ask_serial_port(used_ports)
    if bus_type == "sdi12":
        return BusEntry(bus_id, bus_type, port=port_path)
    # The line settings are checked the way a --bus spec's are.
    baud = _ask(
        "  Baud rate",
        lambda v: parse_bus(f"{bus_id}:{bus_type}:/dev/x:{v}").baudrate,
        str(defaults.baudrate),
    )
    parity = _ask("  Parity (N, E, O)", _choice(("N", "E", "O"), "parity"), defaults.parity)
    return BusEntry(
        bus_id,
        bus_type,
        port=port_path,
        baudrate=baud,
        parity=parity,
        stopbits=1 if bus_type == "modbus-rtu" else None,
    )


def _ask_profile(bus: BusEntry, catalog: Catalog) -> str | None:
    profiles = catalog.profiles_for(bus.type)
    if not profiles:
        if bus.type != "mbus":
            click.echo(f"  No profile installed for {bus.type} devices.")
        return None
    click.echo("  Profiles (`swm-edge profiles NAME` shows one):")
    width = max(len(p.name) for p in profiles)
    for n, profile in enumerate(profiles, 1):
        click.echo(f"    {n:2}  {profile.name.ljust(width)}  {profile.short()}")
    names = [p.name for p in profiles]

    def parse(value: str) -> str | None:
        if not value and bus.type == "mbus":
            return None
        if value.isdigit():
            if not 1 <= int(value) <= len(names):
                raise SpecError(f"{value} is not a number from the list (1..{len(names)})")
            return names[int(value) - 1]
        if value not in names:
            raise SpecError(f"no profile {value!r} for {bus.type} devices; pick one from the list")
        return value

    if bus.type == "mbus":
        return _ask_optional("  Profile (number or name; empty: every record)", parse)
    return _ask("  Profile (number or name)", parse)


def _free_address(bus: BusEntry, devices: Sequence[DeviceEntry]) -> str | None:
    """The lowest address no device on ``bus`` has yet, as a default (none for M-Bus,
    whose meters come with their own)."""
    used = {d.address for d in devices if d.bus == bus.id}
    candidates: Sequence[int | str]
    if bus.type in ("modbus-rtu", "modbus-tcp"):
        candidates = range(1, 248)
    elif bus.type == "sdi12":
        candidates = "0123456789"
    else:
        return None
    return next((str(a) for a in candidates if a not in used), None)


def _ask_device(bus: BusEntry, devices: Sequence[DeviceEntry], catalog: Catalog) -> DeviceEntry:
    device_id = _ask("  Device id, e.g. inlet-flow", _new_id("device id", [d.id for d in devices]))
    address = _ask(
        f"  Address ({address_help(bus.type)})",
        lambda v: parse_address(v, bus.type),
        _free_address(bus, devices),
    )
    profile = _ask_profile(bus, catalog)
    interval = _ask(
        "  Poll interval, seconds", parse_interval, format_number(BUS_DEFAULTS[bus.type].interval)
    )
    return DeviceEntry(device_id, bus.id, address, profile, interval)


@dataclass
class _Answers:
    """The values of the new config, from flags and then from prompts (``None``: not
    given)."""

    gateway_id: str | None
    site: str | None
    broker: tuple[str, int | None] | None
    tls: bool | None
    ca_file: str | None
    username: str | None
    password_file: str | None
    buses: list[BusEntry]
    devices: list[DeviceEntry]


def _interactive(answers: _Answers, catalog: Catalog, output: Path) -> None:
    """Ask for every value not given as a flag."""
    a = answers
    click.echo(f"swm-edge init: a config for this gateway, to be written to {output}.")
    click.echo("Enter takes the [default]; Ctrl-C stops without writing anything.\n")
    if a.gateway_id is None:
        a.gateway_id = _ask(
            "Gateway id (unique in the fleet, part of every MQTT topic)",
            lambda v: check_id(v, "gateway id"),
        )
    if a.site is None:
        a.site = _ask_optional("Site, e.g. the DMA (empty: none)", lambda v: check_id(v, "site"))
    if a.broker is None:
        a.broker = _ask("MQTT broker HOST[:PORT]", parse_broker)
    if a.tls is None:
        a.tls = a.ca_file is not None or click.confirm(
            "Use TLS to the broker (its certificate is verified)?", default=a.broker[1] != 1883
        )
    if a.tls and a.ca_file is None:
        a.ca_file = _ask_optional(
            "CA file to verify the broker with (empty: the system's CAs)", _absolute_path
        )
    if a.username is None:
        a.username = _ask_optional("MQTT user name (empty: none)", str, a.gateway_id)
    if a.password_file is None:
        a.password_file = _ask_optional(
            "File holding the MQTT password (empty: none)",
            _absolute_path,
            str(output.parent / "mqtt.password") if a.username else "",
        )
    if not a.buses:
        while True:
            click.echo(f"\nBus {len(a.buses) + 1} (a serial line or a TCP connection)")
            a.buses.append(
                _ask_bus([b.id for b in a.buses], [b.port for b in a.buses if b.port is not None])
            )
            if not click.confirm("Add another bus?", default=False):
                break
    if not a.devices:
        for bus in a.buses:
            click.echo(f"\nDevices on {bus.id} ({bus.type})")
            while True:
                a.devices.append(_ask_device(bus, a.devices, catalog))
                if not click.confirm(f"Add another device on {bus.id}?", default=False):
                    break
    click.echo()


# --- the command ---------------------------------------------------------------------------


def _parse_flags(
    broker: str | None,
    gateway_id: str | None,
    site: str | None,
    username: str | None,
    tls: bool | None,
    ca_file: Path | None,
    bus_specs: Sequence[str],
    device_specs: Sequence[str],
) -> tuple[_Answers, list[str]]:
    """The flags' values, and every problem with them (all at once)."""
    problems: list[str] = []

    def attempt(flag: str, parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except SpecError as exc:
            problems.append(f"{flag}: {exc}")
            return None

    if gateway_id is not None:
        attempt("--gateway-id", lambda: check_id(gateway_id, "gateway id"))
    if site is not None:
        attempt("--site", lambda: check_id(site, "site"))
    if username is not None and not username.strip():
        problems.append("--username: must not be empty (leave the flag out for none)")
    if tls is False and ca_file is not None:
        problems.append("--ca-file: needs TLS, but --no-tls was given")
    parsed_broker = attempt("--broker", lambda: parse_broker(broker)) if broker else None
    buses: list[BusEntry] = []
    failed_bus_ids: set[str] = set()
    for spec in bus_specs:
        bus = attempt("--bus", functools.partial(parse_bus, spec))
        if bus is None:
            failed_bus_ids.add(spec.partition(":")[0])
        else:
            buses.append(bus)
    known = {b.id: b for b in buses}
    devices: list[DeviceEntry] = []
    for spec in device_specs:
        bus_id = spec.split(":")[1] if spec.count(":") >= 1 else ""
        if bus_id in failed_bus_ids and bus_id not in known:
            continue  # its bus's spec was reported already
        device = attempt("--device", functools.partial(parse_device, spec, known))
        if device is not None:
            devices.append(device)
    answers = _Answers(
        gateway_id=gateway_id,
        site=site,
        broker=parsed_broker,
        tls=tls,
        ca_file=_absolute(ca_file),
        username=username,
        password_file=None,
        buses=buses,
        devices=devices,
    )
    return answers, problems


def _notes(setup: GatewaySetup, loaded: LoadedConfig) -> list[str]:
    """What is worth checking before the agent starts: files to create, unstable port
    names, shared addresses, and the loader's warnings."""
    notes = [f"warning: {w.path}: {w.message}" for w in loaded.warnings]
    for flag, value in (("password file", setup.password_file), ("CA file", setup.ca_file)):
        if value and not Path(value).exists():
            notes.append(f"{flag} {value} does not exist yet; create it before starting the agent")
    by_id = {}
    for link in _serial_ports():
        try:
            by_id[os.path.realpath(link)] = link
        except OSError:
            continue
    for bus in setup.buses:
        if bus.port is None:
            continue
        if not os.path.exists(bus.port):
            notes.append(f"bus {bus.id}: serial port {bus.port} is not there now (plugged in?)")
        elif not bus.port.startswith("/dev/serial/") and os.path.realpath(bus.port) in by_id:
            notes.append(
                f"bus {bus.id}: {bus.port} may get another number after a re-plug or reboot; "
                f"{by_id[os.path.realpath(bus.port)]} is the same adapter under a stable name"
            )
    seen: dict[tuple[str, int | str], str] = {}
    for device in setup.devices:
        other = seen.setdefault((device.bus, device.address), device.id)
        if other != device.id:
            notes.append(
                f"devices {other} and {device.id} have the same address {device.address} "
                f"on bus {device.bus}; fine only if they are one device read twice"
            )
    if not setup.devices:
        notes.append("no devices: the agent will only publish its status; add devices later")
    return notes


@click.command(epilog=_EPILOG)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="Where to write the config.",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@click.option("--gateway-id", help="Gateway id, unique in the fleet (part of every MQTT topic).")
@click.option("--site", help="Site the gateway serves, e.g. the DMA.")
@click.option("--broker", metavar="HOST[:PORT]", help="MQTT broker.")
@click.option(
    "--tls/--no-tls",
    default=None,
    help="TLS to the broker, certificate verified [default: on with --ca-file or port 8883].",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CA bundle (PEM) to verify the broker with; default: the system's CAs.",
)
@click.option("--username", help="MQTT user name.")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the MQTT password (never written into the config).",
)
@click.option("--bus", "bus_specs", multiple=True, metavar="SPEC", help="A bus (repeatable).")
@click.option(
    "--device", "device_specs", multiple=True, metavar="SPEC", help="A device (repeatable)."
)
@click.option(
    "--buffer-path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="SQLite file of the local buffer  [default: /var/lib/swm-edge/buffer.sqlite]",
)
@click.option(
    "--buffer-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Largest size of the buffer, MB  [default: 256]",
)
def init(
    output: Path,
    force: bool,
    gateway_id: str | None,
    site: str | None,
    broker: str | None,
    tls: bool | None,
    ca_file: Path | None,
    username: str | None,
    password_file: Path | None,
    bus_specs: tuple[str, ...],
    device_specs: tuple[str, ...],
    buffer_path: Path | None,
    buffer_mb: float | None,
) -> None:
    """Write a commented, validated config for this gateway.

    From the flags, or, run on a terminal without --gateway-id and --broker, by asking.
    The file is checked as `swm-edge validate` would before it is written (atomically,
    mode 0640); an existing file is replaced only with --force.
    """
    output = output.expanduser().absolute()
    catalog = build_catalog(output.parent)
    answers, problems = _parse_flags(
        broker, gateway_id, site, username, tls, ca_file, bus_specs, device_specs
    )
    answers.password_file = _absolute(password_file)
    # What spans the flags (duplicate ids, profiles) is checked now too, so a mistyped
    # command line is answered with every mistake at once.
    partial = GatewaySetup("-", "-", buses=tuple(answers.buses), devices=tuple(answers.devices))
    problems += check_setup(partial, catalog)
    if problems:
        _fail([*problems, "nothing written"], EXIT_USAGE)
    _check_output(output, force)
    if answers.gateway_id is None or answers.broker is None:
        if not sys.stdin.isatty():
            missing = [
                flag
                for flag, value in (("--gateway-id", gateway_id), ("--broker", broker))
                if value is None
            ]
            _fail(
                [
                    f"missing {' and '.join(missing)} (or run swm-edge init on a terminal to be "
                    "asked for everything); nothing written"
                ],
                EXIT_USAGE,
            )
        _interactive(answers, catalog, output)
    assert answers.gateway_id is not None and answers.broker is not None
    host, port = answers.broker
    setup = GatewaySetup(
        gateway_id=answers.gateway_id,
        site=answers.site,
        broker_host=host,
        broker_port=port,
        tls=answers.tls
        if answers.tls is not None
        else (answers.ca_file is not None or port == 8883),
        ca_file=answers.ca_file,
        username=answers.username,
        password_file=answers.password_file,
        buffer_path=_absolute(buffer_path) or GatewaySetup.buffer_path,
        buffer_mb=buffer_mb if buffer_mb is not None else GatewaySetup.buffer_mb,
        buses=tuple(answers.buses),
        devices=tuple(answers.devices),
    )
    problems = check_setup(setup, catalog)
    if problems:
        _fail([*problems, "nothing written"], EXIT_USAGE)
    text = render_config(setup, catalog, config_path=output, version=__version__)
    group, group_note = _service_group(output)
    try:
        loaded = write_config(output, text, force=force, group=group)
    except ConfigError as exc:
        _fail(
            [
                "the config would not validate:",
                *(f"  {issue.path}: {issue.message}" for issue in exc.issues),
                "nothing written",
            ],
            EXIT_USAGE,
        )
    except FileExistsError:
        _fail([f"{output} exists; nothing written (--force replaces it)"], EXIT_FAILED)
    except OSError as exc:
        _fail([f"cannot write {output}: {exc.strerror or exc}; nothing written"], EXIT_FAILED)
    points = sum(len(d.points) for d in loaded.devices)
    click.echo(
        f"wrote {output} ({len(loaded.buses)} buses, {len(loaded.devices)} devices, "
        f"{points} points); it validates"
    )
    for note in [*_notes(setup, loaded), *([group_note] if group_note else [])]:
        click.echo(f"note: {note}")
    click.echo(f"next: swm-edge read --config {output}    # poll every device once")
