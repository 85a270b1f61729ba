"""``swm-edge status``: ask the running agent for its state over its status socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Column
from rich.table import Table as RichTable
from rich.text import Text

from swm_edge.cli import config_option, load_or_exit
from swm_edge.status import (
    BufferStatus,
    ClockStatus,
    MqttStatus,
    NoAgentError,
    StatusError,
    StatusSnapshot,
    request_status,
)

#: Exit status when no agent runs with the config (socket missing or stale).
EXIT_NO_AGENT = 3
#: Exit status when the agent could not be asked (permission, no answer, bad answer).
EXIT_STATUS_ERROR = 1


def _duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 20 s``, ``5 h 12 min``, ``2 d 4 h``: for a person, not a parser."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


_QUALITY_STYLE = {"good": "green", "bad": "bold red"}


def _yes(flag: bool, yes: str, no: str) -> Text:
    return Text(yes, style="green") if flag else Text(no, style="bold red")


def _mqtt_line(m: MqttStatus, label: str = "MQTT") -> Text:
    line = Text(f"{label} {m['host']}:{m['port']}: ")
    if m["connected"]:
        line.append("connected", style="green")
        if m["connected_since"]:
            line.append(f" since {m['connected_since']}")
    else:
        line.append("not connected", style="bold red")
        if m["last_error"]:
            line.append(f" ({m['last_error']})")
    line.append(
        f"; published {m['published']}, acknowledged {m['acked']}, re-sent {m['resent']}, "
        f"connections {m['connects']}"
    )
    return line


def _buffer_line(b: BufferStatus) -> Text:
    line = Text("Buffer: ")
    if b.get("condition"):
        line.append(f"FAILING: {b['condition']}", style="bold red")
        line.append(f"; {b.get('held', 0)} readings held in memory, {b.get('lost', 0)} lost; ")
    if b["error"]:
        line.append(b["error"], style="bold red")
        line.append(f"; {b['queued']} queued")
        return line
    depth = b["depth"] or 0
    line.append(f"{depth} readings waiting", style="yellow" if depth else "green")
    if b["oldest_age_s"] is not None:
        line.append(f" (oldest {_duration(b['oldest_age_s'])} old)")
    line.append(f", {b['queued']} queued, {_size(b['size_bytes'])} on disk, ")
    dropped = b["dropped"] or 0
    line.append(f"{dropped} dropped", style="bold red" if dropped else "")
    return line


def _clock_line(c: ClockStatus) -> Text:
    line = Text("Clock: ")
    flagged = c["flagged_readings"]
    if c["trusted"]:
        if c["synchronized"]:
            line.append("synchronised", style="green")
        else:
            # No word from the kernel (a container, say), but the date is plausible.
            line.append("trusted (synchronisation status unknown)")
        if flagged:
            line.append(f"; {flagged} readings were flagged unsynchronized before")
    else:
        why = "NOT synchronised" if c["synchronized"] is False else "NOT trusted (date too early)"
        line.append(why, style="bold red")
        line.append(f": readings are flagged unsynchronized ({flagged} so far)")
    steps = c["steps"]
    if steps:
        line.append(f"; {steps} step{'s' if steps != 1 else ''}")
        last = c["last_step"]
        if last is not None:
            line.append(f", last {last['size_s']:+.1f} s at {last['at'] or '?'}")
    return line


def render(console: Console, snap: StatusSnapshot) -> None:
    """Print a snapshot as a few lines and two tables."""
    console.print(
        Text(
            f"gateway {snap['gateway']}: swm-edge {snap['version']}, pid {snap['pid']}, "
            f"up {_duration(snap['uptime_s'])} (since {snap['started']})"
        )
    )
    destinations = snap.get("destinations", [])
    if len(destinations) > 1:
        for dest in destinations:
            console.print(_mqtt_line(dest, f"MQTT {dest['name']} ({dest['payload']})"))
    else:
        console.print(_mqtt_line(snap["mqtt"]))
    console.print(_buffer_line(snap["buffer"]))
    if "clock" in snap:  # an older agent has no clock section
        console.print(_clock_line(snap["clock"]))
    # Fits an 80-column terminal for the usual ids; a long last error folds onto a
    # second line rather than pushing the counters off screen.
    devices = RichTable(
        Column("device", no_wrap=True),
        Column("read ago", no_wrap=True),
        Column("quality", no_wrap=True),
        Column("polls", justify="right"),
        Column("errors", justify="right"),
        Column("overruns", justify="right"),
        Column("last error", overflow="fold", min_width=11),
        title="Devices",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for device_id, d in snap["devices"].items():
        quality = Text(d["quality"] or "-", style=_QUALITY_STYLE.get(d["quality"] or "", ""))
        if d["offline"]:
            quality = Text("backed off", style="bold red")
        age = d["last_read_age_s"]
        devices.add_row(
            Text(device_id),
            "never" if d["last_read"] is None else _duration(age),
            quality,
            str(d["polls"]),
            str(d["errors"]),
            str(d["overruns"]),
            Text(d["last_error"] or ""),
        )
    console.print(devices)
    buses = RichTable(
        Column("bus", no_wrap=True),
        "type",
        "line",
        Column("opened", justify="right"),
        Column("last error", overflow="fold"),
        title="Buses",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for bus_id, b in snap["buses"].items():
        buses.add_row(
            Text(bus_id),
            Text(b["type"]),
            _yes(b["open"], "open", "down"),
            str(b["opens"]),
            Text(b["last_error"] or ""),
        )
    console.print(buses)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the agent's answer.",
)
def status(config_path: Path, as_json: bool, timeout: float) -> None:
    """Ask the agent running with this config for its state: uptime, broker connection,
    each device's last read, quality and errors, buffer depth and age, dropped readings,
    whether the clock is synchronised (readings taken while it is not are flagged).

    The agent answers on its status socket (status_socket in the config; default:
    swm-edge.sock next to the buffer), mode 0660: run as root or as a member of the
    agent's group (swm-edge under the shipped systemd unit).

    Exit status: 0 answered, 1 could not ask it (permission, no answer), 2 config error,
    3 no agent is running with this config.
    """
    loaded = load_or_exit(config_path, show_warnings=False)
    path = loaded.config.status_socket_path()
    try:
        snap, raw = request_status(path, timeout=timeout)
    except NoAgentError as exc:
        click.echo(f"swm-edge: {exc}", err=True)
        sys.exit(EXIT_NO_AGENT)
    except StatusError as exc:
        click.echo(f"swm-edge: {exc}", err=True)
        sys.exit(EXIT_STATUS_ERROR)
    if as_json:
        click.echo(json.dumps(raw, indent=2))
        return
    render(Console(highlight=False), snap)
