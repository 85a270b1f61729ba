"""The ``swm-edge`` command line: thin commands over the agent's modules."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table as RichTable

from swm_edge import __version__
from swm_edge.config import ConfigError, LoadedConfig, load_config
from swm_edge.model import Reading

EXIT_CONFIG = 2

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("/etc/swm-edge/config.yaml"),
    show_default=True,
    help="The gateway's config file.",
)


def load_or_exit(path: Path, *, show_warnings: bool = True) -> LoadedConfig:
    """Load a config; on errors print every one of them and exit 2."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        err.print(f"{len(exc.issues)} error(s) in {path}", markup=False)
        sys.exit(EXIT_CONFIG)
    if show_warnings:
        for warning in loaded.warnings:
            err.print(f"warning: {warning}", markup=False)
    return loaded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swm-edge")
def main() -> None:
    """swm-edge: polls water meters and probes, buffers readings, publishes them over MQTT."""
    # pymodbus logs every failed transaction itself; our commands say it better, once.
    # (`run` sets up full logging on top of this.)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@main.command()
@config_option
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "text", "journal", "json"]),
    help="auto: journald prefixes under systemd, text on a terminal.",
)
def run(config_path: Path, log_level: str, log_format: str) -> None:
    """Run the agent until SIGTERM or Ctrl-C."""
    from swm_edge.agent import Agent
    from swm_edge.buffer import BufferFileError
    from swm_edge.notify import Notifier
    from swm_edge.service import install_signal_handlers, setup_logging

    loaded = load_or_exit(config_path)
    setup_logging(log_level, log_format)

    async def _main() -> None:
        agent = Agent(loaded, notifier=Notifier())
        install_signal_handlers(agent.stop, agent.request_reload)
        await agent.run()

    try:
        asyncio.run(_main())
    except LookupError as exc:  # password_env names a variable that is not set
        click.echo(f"swm-edge: mqtt.password_env: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except (BufferFileError, OSError) as exc:
        # The buffer or the password file cannot be opened: nothing to run on, nothing lost.
        click.echo(f"swm-edge: {exc}", err=True)
        sys.exit(1)


@main.command()
@config_option
def validate(config_path: Path) -> None:
    """Check a config file: every error at once as FILE:LINE:COL: path: message (exit 2)."""
    loaded = load_or_exit(config_path)
    click.echo(
        f"{config_path}: OK ({len(loaded.buses)} buses, {len(loaded.devices)} devices, "
        f"{sum(len(d.points) for d in loaded.devices)} points)"
    )


@main.command()
@config_option
@click.option("--device", "device_ids", multiple=True, help="Only this device (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--watch",
    is_flag=True,
    help="Keep polling at each device's interval and show the latest values until Ctrl-C; "
    "with --json, one JSON line per poll.",
)
def read(config_path: Path, device_ids: tuple[str, ...], as_json: bool, watch: bool) -> None:
    """Poll each device once (with --watch: on its interval until Ctrl-C) and print what
    it answered (no buffer, no MQTT)."""
    from swm_edge.agent import read_once
    from swm_edge.publish.encoders.json_v1 import iso_ms, readings_doc

    loaded = load_or_exit(config_path, show_warnings=not as_json)
    known = {d.id for d in loaded.devices}
    unknown = [d for d in device_ids if d not in known]
    if unknown:
        click.echo(
            f"unknown device(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}", err=True
        )
        sys.exit(EXIT_CONFIG)
    if watch:
        _watch(loaded, device_ids, as_json)
        return
    readings = asyncio.run(read_once(loaded, device_ids))
    if as_json:
        docs = [
            {"device": r.device_id, "ts": iso_ms(r.ts), "readings": readings_doc(r)}
            for r in readings
        ]
        click.echo(json.dumps(docs, indent=2))
        return
    table = RichTable("device", "point", "value", "unit", "quality", "error")
    for r in readings:
        for name, pv in r.points.items():
            table.add_row(
                r.device_id,
                name,
                "" if pv.value is None else str(pv.value),
                pv.unit or "",
                str(pv.quality),
                pv.error or "",
            )
    Console().print(table)


# A poll still in flight at Ctrl-C gets this long to finish before it is cancelled: a
# person waiting for the prompt matters more than one last reading nobody keeps.
_WATCH_STOP_GRACE = 1.0


async def _poll_until_stopped(
    loaded: LoadedConfig, device_ids: Sequence[str], show: Callable[[Reading], None]
) -> None:
    """Poll the devices on their wall-clock grids (the agent's Bus/DevicePoller path,
    without buffer or MQTT), handing each reading to ``show``, until SIGINT or SIGTERM."""
    from swm_edge.agent import build_pollers
    from swm_edge.bus import Bus
    from swm_edge.scheduler import DevicePoller

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def sink(reading: Reading) -> None:
        try:
            show(reading)
        except BrokenPipeError:  # `read --watch --json | head -3` closed our output
            stopping.set()

    buses = {spec.id: Bus(spec) for spec in loaded.buses}
    pollers = build_pollers(loaded, buses, sink, device_ids)

    async def poll(poller: DevicePoller) -> None:
        # A first reading now rather than at the next slot, which may be minutes away.
        await sink(await poller.poll_once())
        await poller.run(stopping)

    tasks: list[asyncio.Task[None]] = []
    try:
        for bus_id in {p.device.bus for p in pollers}:
            await buses[bus_id].start()
        tasks = [asyncio.create_task(poll(p), name=f"watch-{p.device.id}") for p in pollers]
        await stopping.wait()
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=_WATCH_STOP_GRACE)
            for task in late:
                task.cancel()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bus in buses.values():
            await bus.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _watch(loaded: LoadedConfig, device_ids: Sequence[str], as_json: bool) -> None:
    """``read --watch``: a live table (or JSON lines) until Ctrl-C, then exit 0."""
    from rich.live import Live
    from rich.text import Text

    from swm_edge.publish.encoders.json_v1 import iso_ms, readings_doc

    if not any(not device_ids or d.id in device_ids for d in loaded.devices):
        click.echo(f"{loaded.path}: no devices to poll", err=True)
        return
    if as_json:

        def emit(r: Reading) -> None:
            doc = {"device": r.device_id, "ts": iso_ms(r.ts), "readings": readings_doc(r)}
            click.echo(json.dumps(doc))

        asyncio.run(_poll_until_stopped(loaded, device_ids, emit))
        _quiet_closed_stdout()
        return

    order = [d.id for d in loaded.devices if not device_ids or d.id in device_ids]
    latest: dict[str, Reading] = {}
    styles = {"good": "green", "bad": "bold red"}

    def render() -> RichTable:
        table = RichTable(
            "device", "point", "value", "unit", "quality", "error", "read at",
            title="swm-edge read --watch (Ctrl-C to stop)", title_justify="left",
        )  # fmt: skip
        for device_id in order:
            r = latest.get(device_id)
            if r is None:
                table.add_row(Text(device_id), Text("waiting for the first poll", style="dim"))
                continue
            at = time.strftime("%H:%M:%S", time.localtime(r.ts))
            for name, pv in r.points.items():
                quality = str(pv.quality)
                table.add_row(
                    Text(r.device_id),
                    Text(name),
                    "" if pv.value is None else str(pv.value),
                    Text(pv.unit or ""),
                    Text(quality, style=styles.get(quality, "")),
                    Text(pv.error or ""),
                    at,
                )
        return table

    with Live(render(), console=Console(), auto_refresh=False) as live:

        def emit(r: Reading) -> None:
            latest[r.device_id] = r
            live.update(render(), refresh=True)

        asyncio.run(_poll_until_stopped(loaded, device_ids, emit))
    _quiet_closed_stdout()


def _quiet_closed_stdout() -> None:
    # After a reader closed the pipe, Python's final flush of stdout would print an
    # "Exception ignored ... BrokenPipeError" message: send what is left nowhere instead.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here instead of standard output.",
)
def schema(output: Path | None) -> None:
    """Print (or write) the JSON Schema of the config file."""
    from swm_edge.config.schema import json_schema, write_schema

    if output is not None:
        write_schema(output)
    else:
        click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@main.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds and print what reached the broker.",
)
def demo(duration: float | None) -> None:
    """Simulated water devices + a broker + the agent, with a live view of what arrives."""
    from swm_edge.cli.demo import run_demo

    sys.exit(run_demo(duration))


def _register_commands() -> None:
    # Commands that live in their own module; one line each (keep sorted).
    from swm_edge.cli.catalog import drivers, profiles

    main.add_command(__import__("swm_edge.cli.buffer", fromlist=["buffer"]).buffer)
    main.add_command(__import__("swm_edge.cli.cert", fromlist=["cert"]).cert)
    main.add_command(drivers)
    main.add_command(__import__("swm_edge.cli.init", fromlist=["init"]).init)
    main.add_command(profiles)
    main.add_command(__import__("swm_edge.cli.scan", fromlist=["scan"]).scan)
    main.add_command(__import__("swm_edge.cli.status", fromlist=["status"]).status)


_register_commands()
