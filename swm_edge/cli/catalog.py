"""``swm-edge drivers`` and ``swm-edge profiles``: what this gateway can talk to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table as RichTable
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from swm_edge.driver import DriverNotFound, available_drivers, load_driver


def driver_catalog() -> list[dict[str, Any]]:
    """Every installed driver: name, version and origin, bus types, profile folders."""
    rows = []
    for name, ep in sorted(available_drivers().items()):
        dist = ep.dist
        row: dict[str, Any] = {
            "name": name,
            "package": dist.name if dist is not None else None,
            "version": dist.version if dist is not None else None,
            "entry_point": ep.value,
            "location": None,
        }
        try:
            cls = load_driver(name)
        except (DriverNotFound, ImportError, AttributeError) as exc:
            row.update(bus_types=[], profile_dirs=[], error=str(exc))
        else:
            module = sys.modules.get(cls.__module__)
            row.update(
                bus_types=sorted(cls.bus_types),
                profile_dirs=[str(d) for d in cls.profile_dirs],
                location=getattr(module, "__file__", None),
                error=None,
            )
        rows.append(row)
    return rows


def profile_catalog() -> list[dict[str, Any]]:
    """Every profile the installed drivers ship, with its header fields and file."""
    yaml = YAML(typ="safe")
    rows = []
    for driver in driver_catalog():
        for folder in driver["profile_dirs"]:
            for path in sorted(Path(folder).glob("*.yaml")):
                try:
                    doc = yaml.load(path.read_text(encoding="utf-8"))
                except (OSError, YAMLError) as exc:
                    doc = {"error": str(exc)}
                if not isinstance(doc, dict):
                    doc = {"error": "not a mapping"}
                rows.append(
                    {
                        "name": path.stem,
                        "driver": driver["name"],
                        "manufacturer": doc.get("manufacturer"),
                        "model": doc.get("model"),
                        "kind": doc.get("kind"),
                        "source": doc.get("source"),
                        "points": doc.get("points") or [],
                        "device": doc.get("device") or {},
                        "file": str(path),
                    }
                )
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def drivers(as_json: bool) -> None:
    """List the installed drivers with their version and origin."""
    rows = driver_catalog()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = RichTable("driver", "bus types", "package", "version", "entry point")
    for row in rows:
        table.add_row(
            row["name"],
            f"[red]{row['error']}[/red]" if row["error"] else ", ".join(row["bus_types"]) or "-",
            str(row["package"]),
            str(row["version"]),
            row["entry_point"],
        )
    Console().print(table)


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def profiles(name: str | None, as_json: bool) -> None:
    """List the device profiles, or show one (NAME) with its register map and source."""
    rows = profile_catalog()
    if name is not None:
        found = [r for r in rows if r["name"] == name]
        if not found:
            known = ", ".join(sorted(r["name"] for r in rows))
            click.echo(f"no profile named {name!r}; known: {known}", err=True)
            sys.exit(2)
        if as_json:
            click.echo(json.dumps(found, indent=2, default=str))
            return
        for profile in found:  # one name may exist for several drivers (Modbus and SDI-12)
            _show(profile)
        return
    if as_json:
        click.echo(
            json.dumps([{k: v for k, v in r.items() if k != "points"} for r in rows], indent=2)
        )
        return
    table = RichTable("profile", "driver", "manufacturer", "model", "kind", "points")
    for r in rows:
        table.add_row(
            r["name"],
            r["driver"],
            str(r["manufacturer"]),
            str(r["model"]),
            str(r["kind"]),
            str(len(r["points"])),
        )
    Console().print(table)


def _show(profile: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]{profile['name']}[/bold] ({profile['driver']} driver): "
        f"{profile['manufacturer']} {profile['model']} - {profile['kind']}"
    )
    console.print(f"source: {profile['source']}", markup=False)
    if profile["device"]:
        console.print(f"device defaults: {profile['device']}", markup=False)
    keys: list[str] = []
    for point in profile["points"]:
        keys += [k for k in point if k not in keys]
    table = RichTable(*keys)
    for point in profile["points"]:
        table.add_row(*(str(point.get(k, "")) for k in keys))
    console.print(table)
