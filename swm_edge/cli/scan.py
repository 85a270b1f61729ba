"""``swm-edge scan``: find the devices on a line before writing their config.

Four subcommands: ``serial`` and ``tcp`` (Modbus unit ids), ``mbus`` (primary scan or
secondary search) and ``sdi12``. The scanning itself is :mod:`swm_edge.scan` (Modbus, and
the agent's bus and port handling) and the drivers' scan modules (M-Bus, SDI-12); this
module parses arguments, shows progress and prints what was found.

Output: live lines and a progress bar with the time left on standard error (the bar only
on a terminal, nothing with ``--json``), the result on standard output: a table, or with
``--json`` a JSON array with one object per device. Exit status 0 after a scan (also when
nothing answered), 1 when the port or connection cannot be used, 2 for bad arguments,
130 after Ctrl-C, which still prints what was found until then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _ids_option(first: int, last: int, default: str, name: str = "--ids") -> Callable[[F], F]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
        from swm_edge.scan import parse_ids

        try:
            return parse_ids(value, first, last)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option(
        name,
        "ids",
        default=default,
        show_default=True,
        callback=parse,
        help=f"Ids to try: numbers and ranges, e.g. 1-10,17 (within {first}-{last}).",
    )


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON array of what was found; no progress."
)


def _timeout_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.001, max=60.0),
        default=None,
        help=help_text,
    )


class _Reporter:
    """Progress and live lines on standard error, and the list of what was found."""

    def __init__(self, as_json: bool, describe: Callable[[Any], str]) -> None:
        self.items: list[Any] = []
        self.as_json = as_json
        self.describe = describe
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._phase = "scanning"

    def _print(self, text: str) -> None:
        if self.as_json:
            return
        console = self._progress.console if self._progress is not None else self.err
        console.print(text, markup=False)

    # ScanEvents

    def start(self, total: int | None) -> None:
        if self.as_json or not self.err.is_terminal:
            return
        columns: list[ProgressColumn | str] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is None:
            columns += [TextColumn("{task.completed} probes")]
        else:
            columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=self.err, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(self._phase, total=total)

    def phase(self, text: str) -> None:
        self._phase = f"scanning {text}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=self._phase)
        else:
            self._print(self._phase)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def found(self, item: Any) -> None:
        self.items.append(item)
        self._print(f"found {self.describe(item)}")

    def note(self, text: str) -> None:
        self._print(text)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _run(
    reporter: _Reporter,
    scan: Coroutine[Any, Any, Any],
    show: Callable[[Sequence[Any]], None],
    summary: Callable[[Sequence[Any], float], str],
) -> NoReturn:
    """Run ``scan``; print what was found (also after an error or Ctrl-C) and exit."""
    from swm_edge.driver import ConnectionLost
    from swm_edge.scan import ScanError

    # The bus and pymodbus log through `logging`; without a handler Python prints their
    # warnings raw. The scan reports every problem itself, once, in its own words.
    logging.getLogger().addHandler(logging.NullHandler())
    started = time.monotonic()
    error: str | None = None
    interrupted = False
    try:
        asyncio.run(scan)
    except KeyboardInterrupt:
        interrupted = True
    except ScanError as exc:
        error = str(exc)
    except ConnectionLost as exc:
        error = f"lost the port during the scan ({exc}); check the cable/adapter"
    finally:
        reporter.stop()
    # From here on Ctrl-C must not cut the output short: it is what the user asked for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    found = reporter.items
    try:
        if reporter.as_json and (found or error is None):
            # Not after an error with nothing found: "[]" would read as "nobody answered".
            click.echo(json.dumps([item.as_json() for item in found], indent=2))
        elif found:
            show(found)
        sys.stdout.flush()
    except BrokenPipeError:
        # `scan ... | head` closed our output; the exit flush must not fail on it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    err = reporter.err
    if error is not None:
        if found:
            err.print(f"stopped after finding {len(found)}", markup=False)
        err.print(f"swm-edge scan: {error}", markup=False)
        sys.exit(EXIT_ERROR)
    if interrupted:
        err.print(f"interrupted: {len(found)} found so far", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    if not reporter.as_json:
        err.print(summary(found, time.monotonic() - started), markup=False)
    sys.exit(0)


def _profiles(driver: str) -> list[Any]:
    from swm_edge.cli.catalog import profile_catalog
    from swm_edge.scan import ProfileRef

    return [
        ProfileRef(row["name"], row["manufacturer"], row["model"])
        for row in profile_catalog()
        if row["driver"] == driver
    ]


def _out() -> Console:
    """Standard output; when it is not a terminal, wide enough that no cell is cut or
    wrapped (rich assumes 80 columns there)."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=400)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


# --- Modbus ---------------------------------------------------------------------------------


def _describe_modbus(device: Any) -> str:
    where = f" at {device.settings}" if device.settings is not None else ""
    ident = ""
    if device.vendor or device.model:
        ident = f" - {device.vendor or '?'} {device.model or '?'}"
    profile = f" (profile {device.profile})" if device.profile else ""
    return f"unit {device.unit}{where}: {device.answer}{ident}{profile}"


def _show_modbus(found: Sequence[Any]) -> None:
    serial = any(d.settings is not None for d in found)
    headers = ["unit", *(["settings"] if serial else []), "answer", "vendor", "model", "profile"]
    table = RichTable(*headers)
    for d in found:
        settings = [str(d.settings)] if serial else []
        table.add_row(
            str(d.unit), *settings, d.answer, _cell(d.vendor), _cell(d.model), _cell(d.profile)
        )
    _out().print(table)


def _modbus_summary(
    ids: Sequence[int], tried: Sequence[str], *, serial: bool
) -> Callable[[Sequence[Any], float], str]:
    def summary(found: Sequence[Any], seconds: float) -> str:
        if not found:
            text = f"no device answered at {', '.join(tried)} (ids {_span(ids)}, {seconds:.1f} s)"
            if serial:
                text += (
                    "; check the wiring (A/B swapped?), the termination and the settings "
                    "(try --auto-baud)"
                )
            return text
        text = f"{len(found)} device(s) found in {seconds:.1f} s"
        if len(ids) > 2 and len(found) == len(ids):
            text += (
                "; every id answered: the device ignores the unit id (use the one its "
                "manual gives, often 1 or 255)"
            )
        return text

    return summary


def _span(ids: Sequence[int]) -> str:
    if len(ids) > 1 and ids[-1] - ids[0] + 1 == len(ids):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids)) if len(ids) <= 8 else f"{len(ids)} ids"


@click.group()
def scan() -> None:
    """Find the devices on a line: Modbus unit ids, M-Bus meters, SDI-12 sensors."""


@scan.command("serial", short_help="Modbus RTU unit ids on an RS-485 line.")
@click.option(
    "--port", required=True, help="Serial port, e.g. /dev/serial/by-id/usb-FTDI_...-port0."
)
@click.option("--baudrate", type=click.IntRange(min=50), default=None, help="Line speed.")
@click.option(
    "--parity",
    type=click.Choice(["N", "E", "O"], case_sensitive=False),
    default=None,
    help="Parity (default N; with --auto-baud alone: only this parity).",
)
@_ids_option(1, 247, "1-247")
@click.option(
    "--auto-baud",
    is_flag=True,
    help="Try 9600, 19200, 38400 and 2400 baud with parity E and N (after --baudrate if "
    "given), stopping after the first settings at which anything answers.",
)
@_timeout_option("Seconds to wait per id [default: from the baud rate, ~0.12 s at 9600].")
@_json_option
def serial_command(
    port: str,
    baudrate: int | None,
    parity: str | None,
    ids: list[int],
    auto_baud: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Find Modbus RTU devices on an RS-485 line: which unit ids answer, and how."""
    from swm_edge.scan import SerialSettings, scan_modbus_serial, settings_to_try

    parity = parity.upper() if parity else None
    if baudrate is None and not auto_baud:
        raise click.UsageError(
            "give --baudrate N (e.g. 9600), or --auto-baud to try the usual ones"
        )
    first = SerialSettings(baudrate, parity or "N") if baudrate is not None else None
    settings = settings_to_try(first, auto_baud)
    if auto_baud and baudrate is None and parity is not None:
        settings = [s for s in settings if s.parity == parity]
    reporter = _Reporter(as_json, _describe_modbus)
    coro = scan_modbus_serial(
        port, settings, ids, events=reporter, profiles=_profiles("modbus"), timeout=timeout
    )
    _run(
        reporter, coro, _show_modbus, _modbus_summary(ids, [str(s) for s in settings], serial=True)
    )


@scan.command("tcp", short_help="Modbus TCP unit ids (a device or a gateway).")
@click.option("--host", required=True, help="Device or gateway address.")
@click.option("--port", type=click.IntRange(1, 65535), default=502, show_default=True)
@_ids_option(0, 255, "1-247")
@_timeout_option("Seconds to wait per id [default: 0.1].")
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.01, max=120.0),
    default=3.0,
    show_default=True,
    help="Seconds to wait for the connection.",
)
@_json_option
def tcp_command(
    host: str,
    port: int,
    ids: list[int],
    timeout: float | None,
    connect_timeout: float,
    as_json: bool,
) -> None:
    """Find Modbus TCP devices (or the devices behind a TCP gateway) by unit id."""
    from swm_edge.scan import TCP_TIMEOUT, scan_modbus_tcp

    reporter = _Reporter(as_json, _describe_modbus)
    coro = scan_modbus_tcp(
        host,
        port,
        ids,
        events=reporter,
        profiles=_profiles("modbus"),
        timeout=timeout if timeout is not None else TCP_TIMEOUT,
        connect_timeout=connect_timeout,
    )
    _run(reporter, coro, _show_modbus, _modbus_summary(ids, [f"{host}:{port}"], serial=False))


# --- M-Bus ----------------------------------------------------------------------------------


def _describe_meter(meter: Any) -> str:
    where = f"primary {meter.primary}" if meter.primary is not None else "secondary"
    ident = f" {meter.ident} {meter.manufacturer or '?'}" if meter.ident else ""
    medium = f" {meter.medium_name}" if meter.medium_name else ""
    return f"meter at {where}:{ident}{medium} ({meter.answer})"


def _show_meters(found: Sequence[Any]) -> None:
    table = RichTable("primary", "secondary address", "ident", "manufacturer", "medium", "answer")
    for m in found:
        medium = f"{m.medium_name} (0x{m.medium:02X})" if m.medium is not None else None
        table.add_row(
            _cell(m.primary),
            _cell(m.secondary),
            _cell(m.ident),
            _cell(m.manufacturer),
            _cell(medium),
            m.answer,
        )
    _out().print(table)


def _count_summary(what: str) -> Callable[[Sequence[Any], float], str]:
    def summary(found: Sequence[Any], seconds: float) -> str:
        return f"{len(found) or 'no'} {what} found in {seconds:.1f} s"

    return summary


@scan.command("mbus", short_help="Wired M-Bus meters (primary or secondary).")
@click.option("--port", required=True, help="Serial port of the M-Bus level converter.")
@click.option("--baudrate", type=click.IntRange(min=50), default=2400, show_default=True)
@_ids_option(0, 250, "0-250", name="--addresses")
@click.option(
    "--secondary",
    is_flag=True,
    help="Search by secondary address (identification numbers, wildcards digit by digit) "
    "instead of trying each primary address.",
)
@_timeout_option("Seconds to wait for an answer [default: from the baud rate, ~0.24 s at 2400].")
@_json_option
def mbus_command(
    port: str,
    baudrate: int,
    ids: list[int],
    secondary: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Find wired M-Bus meters: identification number, manufacturer, medium."""
    # swm_edge_drivers is installed from drivers/ under another name, which mypy cannot
    # map (as swm_edge_hil, see pyproject.toml): to it the module is untyped.
    from swm_edge_drivers.mbus import scan as mbus_scan

    from swm_edge.scan import SerialSettings, serial_transport

    wait = timeout if timeout is not None else mbus_scan.answer_timeout(baudrate)
    reporter = _Reporter(as_json, _describe_meter)

    async def run() -> None:
        async with serial_transport(
            port, "mbus", SerialSettings(baudrate, "E"), timeout=wait
        ) as transport:
            if secondary:
                reporter.start(None)
                reporter.phase(f"secondary addresses at {baudrate} 8E1")
                await mbus_scan.search_secondary(
                    transport, timeout=wait, on_step=reporter.advance, on_found=reporter.found
                )
            else:
                reporter.start(len(ids))
                reporter.phase(f"primary addresses at {baudrate} 8E1")
                await mbus_scan.scan_primary(
                    transport,
                    ids,
                    timeout=wait,
                    on_step=reporter.advance,
                    on_found=reporter.found,
                )

    _run(reporter, run(), _show_meters, _count_summary("meter(s)"))


# --- SDI-12 ---------------------------------------------------------------------------------


class _Sensor:
    """A found SDI-12 sensor with the profile its identification matches."""

    def __init__(self, found: Any, profile: str | None) -> None:
        self.found = found
        self.profile = profile

    def as_json(self) -> dict[str, Any]:
        return {**self.found.as_json(), "profile": self.profile}


def _describe_sensor(sensor: _Sensor) -> str:
    ident = sensor.found.identification
    what = f"{ident.vendor} {ident.model} {ident.version}" if ident else sensor.found.error
    return f"sensor at address {sensor.found.address}: {what}"


def _show_sensors(found: Sequence[_Sensor]) -> None:
    table = RichTable("address", "vendor", "model", "version", "extra", "profile", "answer")
    for s in found:
        ident = s.found.identification
        table.add_row(
            s.found.address,
            _cell(ident.vendor if ident else None),
            _cell(ident.model if ident else None),
            _cell(ident.version if ident else None),
            _cell(ident.extra if ident else s.found.error),
            _cell(s.profile),
            s.found.answer,
        )
    _out().print(table)


@scan.command("sdi12", short_help="SDI-12 sensors at every address.")
@click.option("--port", required=True, help="Serial port of the SDI-12 adapter.")
@_timeout_option("Seconds to wait for the first character of an answer [default: 0.2].")
@_json_option
def sdi12_command(port: str, timeout: float | None, as_json: bool) -> None:
    """Find SDI-12 sensors: a! at each address 0-9, a-z, A-Z, then aI! at each found."""
    # swm_edge_drivers is installed from drivers/ under another name, which mypy cannot
    # map (as swm_edge_hil, see pyproject.toml): to it the module is untyped.
    from swm_edge_drivers.sdi12 import scan as sdi12_scan

    from swm_edge.scan import SerialSettings, serial_transport, suggest_profile

    wait = timeout if timeout is not None else sdi12_scan.DEFAULT_TIMEOUT
    profiles = _profiles("sdi12")
    reporter = _Reporter(as_json, _describe_sensor)

    def found(sensor: Any) -> None:
        ident = sensor.identification
        profile = suggest_profile(ident.vendor, ident.model, profiles) if ident else None
        reporter.found(_Sensor(sensor, profile))

    async def run() -> None:
        settings = SerialSettings(1200, "E", bytesize=7)
        async with serial_transport(port, "sdi12", settings, timeout=wait) as transport:
            reporter.start(len(sdi12_scan.SCAN_ORDER))
            reporter.phase("addresses 0-9, a-z, A-Z at 1200 7E1")
            await sdi12_scan.scan(transport, timeout=wait, on_step=reporter.advance, on_found=found)

    _run(reporter, run(), _show_sensors, _count_summary("sensor(s)"))
