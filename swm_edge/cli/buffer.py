"""``swm-edge buffer stats | export | purge``: inspect and rescue what the local buffer holds.

``stats`` and ``export`` only read (:class:`~swm_edge.buffer.BufferReader`): safe next to a
running agent and on a copied file. ``purge`` deletes, in short transactions the agent's
writer hardly notices, and only with ``--yes``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from click.core import ParameterSource

from swm_edge.buffer import BufferFileError, BufferReader, BufferSummary, Row, purge_file
from swm_edge.cli import config_option, load_or_exit
from swm_edge.publish.encoders.json_v1 import iso_ms, readings_doc

__all__ = ["CSV_COLUMNS", "buffer", "export_rows", "parse_time"]

F = TypeVar("F", bound=Callable[..., Any])

#: Columns of ``export --format csv``: one row per point value.
CSV_COLUMNS = (
    "seq",
    "gateway",
    "device",
    "ts",
    "point",
    "value",
    "unit",
    "quality",
    "error",
    "clock",
)

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# One encoder for every line (json.dumps with options builds a new one per call); compact and
# ASCII like the payloads the publisher sends.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_TIME_HELP = "an ISO 8601 time (UTC unless it has an offset) or an age such as 30m, 2h, 3d, 1w"


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds of ``text``: an ISO 8601 time or an age before ``now`` (default: now).

    Ages are a number and a unit: ``s``, ``m`` (minutes), ``h``, ``d`` or ``w``, e.g. ``2h``.
    A time without an offset is UTC, like every time the buffer commands print.

    Raises:
        ValueError: ``text`` is neither.
    """
    value = text.strip()
    age = _AGE.fullmatch(value.lower())
    if age:
        base = time.time() if now is None else now
        return base - float(age.group(1)) * _AGE_SECONDS[age.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give {_TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _time_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback of the time options: the text as epoch seconds, or a usage error."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _iso(ts: float | None) -> str | None:
    return None if ts is None or not math.isfinite(ts) else iso_ms(ts)


def _source_options(f: F) -> F:
    f = click.option(
        "--file",
        "-f",
        "db_file",
        type=click.Path(path_type=Path),
        help="A buffer database file (e.g. a copy) instead of the config's buffer.path.",
    )(f)
    return config_option(f)


def _source(config_path: Path, db_file: Path | None) -> tuple[Path, str | None]:
    """The buffer file to use and the gateway id, from ``--file`` or the config."""
    ctx = click.get_current_context()
    if db_file is not None:
        if ctx.get_parameter_source("config_path") is not ParameterSource.DEFAULT:
            raise click.UsageError("give --config or --file, not both")
        return db_file, None
    loaded = load_or_exit(config_path, show_warnings=False)
    return loaded.config.buffer.path, loaded.config.gateway.id


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A damaged, missing or locked file is the user's to fix: one line and exit 1."""
    try:
        yield
    except BufferFileError as exc:
        click.echo(f"swm-edge: {exc}", err=True)
        sys.exit(1)
    except sqlite3.Error as exc:  # anything SQLite reports that BufferFileError does not name
        click.echo(f"swm-edge: the buffer file cannot be read ({exc})", err=True)
        sys.exit(1)


def _size(n: int) -> str:
    # MB as in buffer.max_mb (MiB).
    for unit, scale in (("MB", 1024 * 1024), ("kB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@click.group()
def buffer() -> None:
    """Inspect, export and purge the local buffer (stats and export never write to it)."""


@buffer.command()
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(config_path: Path, db_file: Path | None, as_json: bool) -> None:
    """What the buffer holds: depth, times, seqs, dropped, size, pending and per device."""
    path, _gateway = _source(config_path, db_file)
    with _one_line_errors(), BufferReader(path) as reader:
        summary = reader.stats()
    if as_json:
        click.echo(json.dumps(_stats_doc(summary), indent=2))
    else:
        click.echo(_stats_text(summary))


def _stats_doc(s: BufferSummary) -> dict[str, Any]:
    return {
        "path": str(s.path),
        "schema_version": s.schema_version,
        "depth": s.depth,
        "first_seq": s.first_seq,
        "last_seq": s.last_seq,
        "last_assigned_seq": s.last_assigned_seq,
        "oldest": _iso(s.oldest_ts),
        "newest": _iso(s.newest_ts),
        "undated": s.undated,
        "dropped": s.dropped,
        "purged": s.purged,
        "size_bytes": s.size_bytes,
        "db_bytes": s.db_bytes,
        "wal_bytes": s.wal_bytes,
        "free_bytes": s.free_bytes,
        "pending": s.pending,
        "devices": {
            device: {"rows": d.rows, "oldest": _iso(d.oldest_ts), "newest": _iso(d.newest_ts)}
            for device, d in s.devices.items()
        },
    }


def _stats_text(s: BufferSummary) -> str:
    seqs = "" if s.first_seq is None else f", seq {s.first_seq}..{s.last_seq}"
    lines = [
        f"file        {s.path} (schema {s.schema_version})",
        f"size        {_size(s.size_bytes)} on disk (database {_size(s.db_bytes)}, "
        f"WAL {_size(s.wal_bytes)}); {_size(s.free_bytes)} free for new readings",
        f"readings    {s.depth:,}{seqs} (last seq assigned: {s.last_assigned_seq})",
    ]
    if s.oldest_ts is not None:
        undated = f" ({s.undated:,} without a valid time)" if s.undated else ""
        lines.append(f"time        {_iso(s.oldest_ts)} .. {_iso(s.newest_ts)}{undated}")
    lines.append(f"dropped     {s.dropped:,} (purged: {s.purged:,})")
    pending = ", ".join(f"{name}: {n:,}" for name, n in s.pending.items())
    lines.append(f"pending     {pending or '-'}")
    lines.append(f"devices     {len(s.devices)}")
    width = max((len(d) for d in s.devices), default=0)
    for device, d in s.devices.items():
        span = f"{_iso(d.oldest_ts)} .. {_iso(d.newest_ts)}" if d.oldest_ts is not None else ""
        lines.append(f"  {device:<{width}}  {d.rows:>10,}  {span}".rstrip())
    return "\n".join(lines)


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def _finite(readings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # JSON has no NaN or infinity; a stored one (a driver bug) is exported as null.
    return {
        name: {**item, "value": None}
        if isinstance(item["value"], float) and not math.isfinite(item["value"])
        else item
        for name, item in readings.items()
    }


def export_rows(
    rows: Iterable[Row], out: IO[str], fmt: str, gateway: str | None = None
) -> tuple[int, int]:
    """Write ``rows`` to ``out`` as ``jsonl`` or ``csv``; returns (readings, point values).

    ``jsonl``: one wire contract v1 object per reading (docs/wire-contract.md), without
    ``gateway`` when it is not known; a reading whose time is not a number has ``ts`` null.
    ``csv``: a header of :data:`CSV_COLUMNS`, then one row per point value; values as the
    JSON payload has them (bad points empty, bools ``true``/``false``, floats exact).
    """
    readings = points = 0
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    for row in rows:
        reading = row.reading
        doc = readings_doc(reading)
        ts = _iso(reading.ts)
        readings += 1
        points += len(doc)
        if writer is not None:
            for name, item in doc.items():
                writer.writerow(
                    (
                        row.seq,
                        gateway or "",
                        reading.device_id,
                        ts or "",
                        name,
                        _csv_value(item["value"]),
                        item.get("unit", ""),
                        item["quality"],
                        item.get("error", ""),
                        reading.clock or "",
                    )
                )
            continue
        head = {"gateway": gateway} if gateway is not None else {}
        msg: dict[str, Any] = {**head, "device": reading.device_id, "seq": row.seq, "ts": ts}
        if reading.clock is not None:  # as the wire contract has it
            msg["clock"] = reading.clock
        msg["readings"] = doc
        try:
            line = _JSON.encode(msg)
        except ValueError:
            line = _JSON.encode({**msg, "readings": _finite(doc)})
        out.write(line + "\n")
    return readings, points


@buffer.command()
@_source_options
@click.option(
    "--since",
    callback=_time_callback,
    metavar="TIME",
    help=f"Readings at or after this: {_TIME_HELP}.",
)
@click.option(
    "--until",
    callback=_time_callback,
    metavar="TIME",
    help="Readings before this (same forms as --since).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one wire-contract message per reading; csv: one row per point value.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here instead of standard output (replaced only once the export is complete).",
)
@click.option(
    "--gateway",
    help="Gateway id for the exported readings (default: gateway.id of the config; "
    "none with --file).",
)
def export(
    config_path: Path,
    db_file: Path | None,
    since: float | None,
    until: float | None,
    fmt: str,
    output: Path | None,
    gateway: str | None,
) -> None:
    """Write the buffered readings in seq order (read-only: safe while the agent runs).

    Without --since/--until every reading is exported. Readings stored after the export
    started are left out, so it ends even while the agent keeps writing.
    """
    if since is not None and until is not None and since >= until:
        raise click.BadParameter(
            f"--since ({iso_ms(since)}) must be before --until ({iso_ms(until)})",
            param_hint="--since/--until",
        )
    path, config_gateway = _source(config_path, db_file)
    gateway = gateway or config_gateway
    if output is not None and _same_file(output, path):
        raise click.BadParameter(
            "--output names the buffer file itself; choose another file", param_hint="--output"
        )
    with _one_line_errors(), BufferReader(path) as reader:
        rows = reader.iter_rows(since, until)
        if output is None:
            _export_to_stdout(rows, fmt, gateway)
            return
        count, points = _export_to_file(rows, fmt, gateway, output)
    click.echo(f"exported {count:,} readings ({points:,} point values) to {output}", err=True)


def _same_file(output: Path, db: Path) -> bool:
    # Replacing the buffer (or its WAL) with an export would destroy what is being rescued.
    for target in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        with contextlib.suppress(OSError):
            if output.exists() and output.samefile(target):
                return True
        if output.absolute() == target.absolute():
            return True
    return False


def _export_to_stdout(rows: Iterable[Row], fmt: str, gateway: str | None) -> None:
    # UTF-8 whatever the locale: units such as "°C" are part of the data.
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        export_rows(rows, out, fmt, gateway)
        out.flush()
    except BrokenPipeError:  # `export | head` closed the pipe: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    finally:
        out.detach()


def _export_to_file(
    rows: Iterable[Row], fmt: str, gateway: str | None, output: Path
) -> tuple[int, int]:
    # Written under another name and renamed at the end: an interrupted export never
    # leaves a file that looks complete.
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            counts = export_rows(rows, out, fmt, gateway)
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        click.echo(f"swm-edge: cannot write {output}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return counts


@buffer.command()
@_source_options
@click.option(
    "--before",
    callback=_time_callback,
    metavar="TIME",
    required=True,
    help=f"Delete readings older than this: {_TIME_HELP}.",
)
@click.option("--yes", is_flag=True, help="Really delete (without it: only say how many).")
def purge(config_path: Path, db_file: Path | None, before: float, yes: bool) -> None:
    """Delete readings older than --before, delivered or not (safe while the agent runs).

    They are counted in the buffer's dropped counter, so the gap in seq is explained.
    Without --yes nothing is deleted: it says how many would go and exits 1.
    """
    path, _gateway = _source(config_path, db_file)
    when = iso_ms(before)
    with _one_line_errors():
        with BufferReader(path) as reader:
            selected = reader.count(until=before)
        if selected.rows == 0:
            click.echo(f"no readings older than {when} in {path}; nothing to delete")
            return
        seqs = f"seq {selected.first_seq}..{selected.last_seq}"
        if not yes:
            click.echo(
                f"{selected.rows:,} readings older than {when} ({seqs}) would be deleted from "
                f"{path}; nothing was deleted: run again with --yes to delete them",
                err=True,
            )
            sys.exit(1)
        deleted = purge_file(path, before)
    click.echo(
        f"deleted {deleted:,} readings older than {when} ({seqs}) from {path}; counted as "
        "dropped. The file keeps its size: new readings reuse the space."
    )
