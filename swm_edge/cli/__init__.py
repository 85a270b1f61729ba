"""The ``swm-edge`` command line: thin commands over the agent's modules."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table as RichTable

from swm_edge import __version__
from swm_edge.config import ConfigError, LoadedConfig, load_config

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
    from swm_edge.service import install_stop_handlers, setup_logging

    loaded = load_or_exit(config_path)
    setup_logging(log_level, log_format)

    async def _main() -> None:
        agent = Agent(loaded)
        install_stop_handlers(agent.stop)
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
def read(config_path: Path, device_ids: tuple[str, ...], as_json: bool) -> None:
    """Poll each device once and print what it answered (no buffer, no MQTT)."""
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


def _register_catalog() -> None:
    from swm_edge.cli.catalog import drivers, profiles

    main.add_command(drivers)
    main.add_command(profiles)


_register_catalog()
