"""``swm-edge buffer stats | export | purge`` run as a user would: subprocesses, exit codes."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from swm_edge.broker import free_port
from swm_edge.buffer import Buffer, BufferReader, Row
from swm_edge.cli.buffer import CSV_COLUMNS, export_rows, parse_time
from swm_edge.model import PointValue, Quality, Reading, Reason
from swm_edge.testing import ModbusTcpDeviceFactory, RunningAgent
from swm_edge.testing import write_config as write_agent_config

MiB = 1024 * 1024
GATEWAY = "gw-lima-0001"
T0 = 1_700_000_000.0
WRITER = Path(__file__).resolve().parents[1] / "buffer_writer_proc.py"


def swm_edge(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single stderr line of a failed command (no traceback), checked."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("swm-edge: ")
    return lines[0]


def readings() -> list[Reading]:
    """Every kind of value the buffer must carry through unchanged."""
    out = []
    for i in range(40):
        points = {
            "flow": PointValue.good(i / 7, "m3/h"),  # floats that need all 17 digits
            "volume": PointValue.good(2**60 + i, "m3"),  # ints beyond a double's precision
            "count": PointValue.good(-i),  # an int without a unit
            "alarm": PointValue.good(i % 3 == 0),  # bools stay bools
            "temperature": PointValue.good(12.0, "°C"),  # non-ASCII unit, float with .0
            "level": PointValue.bad(Reason.TIMEOUT, "m"),
            "ph": PointValue.bad(f"exception:{i % 4 + 1}"),  # bad without a unit
            "tiny": PointValue.good(5e-324 * (i + 1), "mg/L"),
        }
        out.append(Reading(f"dev-{i % 3}", T0 + 10 * i + 0.123, points))
    return out


def write_config(folder: Path, buffer_path: Path) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"gateway: {{id: {GATEWAY}, site: lima-d3}}\n"
        "mqtt: {host: 127.0.0.1}\n"
        f"buffer: {{path: {buffer_path}, max_mb: 16}}\n"
    )
    return config


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    path = tmp_path / "buffer.sqlite"
    with Buffer(path, max_bytes=16 * MiB) as buf:
        assert buf.append(readings()) == list(range(1, 41))
    return path


@pytest.fixture
def config(tmp_path: Path, stored: Path) -> Path:
    return write_config(tmp_path, stored)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expected_items(reading: Reading) -> dict[str, dict[str, Any]]:
    """The wire contract v1 readings object, written out by hand from the contract."""
    items = {}
    for name, pv in reading.points.items():
        item: dict[str, Any] = {"value": None if pv.quality is Quality.BAD else pv.value}
        if pv.unit is not None:
            item["unit"] = pv.unit
        item["quality"] = str(pv.quality)
        if pv.quality is Quality.BAD:
            item["error"] = pv.error
        items[name] = item
    return items


def test_export_jsonl_round_trips_every_field(config: Path) -> None:
    result = swm_edge("buffer", "export", "--config", config)
    assert result.returncode == 0, result.stderr
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 40
    for seq, (doc, reading) in enumerate(zip(docs, readings(), strict=True), start=1):
        assert list(doc) == ["gateway", "device", "seq", "ts", "readings"]  # contract order
        assert doc["gateway"] == GATEWAY and doc["seq"] == seq
        assert doc["device"] == reading.device_id
        assert doc["ts"] == iso(reading.ts)
        assert doc["readings"] == expected_items(reading)
        for name, item in doc["readings"].items():  # == alone would let 1 == 1.0 == True pass
            assert type(item["value"]) is type(expected_items(reading)[name]["value"]), name
        assert doc["readings"]["volume"]["value"] == 2**60 + seq - 1


def test_export_csv_has_one_row_per_point_value(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.csv"
    result = swm_edge("buffer", "export", "-c", config, "--format", "csv", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "exported 40 readings (320 point values)" in result.stderr
    text = out.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 40 * 8
    by_key = {(int(r["seq"]), r["point"]): r for r in rows}
    for seq, reading in enumerate(readings(), start=1):
        for name, pv in reading.points.items():
            row = by_key[(seq, name)]
            assert (row["gateway"], row["device"], row["ts"]) == (
                GATEWAY,
                reading.device_id,
                iso(reading.ts),
            )
            assert row["unit"] == (pv.unit or "") and row["quality"] == str(pv.quality)
            if pv.quality is Quality.BAD:
                assert (row["value"], row["error"]) == ("", pv.error)
                continue
            assert row["error"] == ""
            if isinstance(pv.value, bool):
                assert row["value"] == ("true" if pv.value else "false")
            elif isinstance(pv.value, int):
                assert int(row["value"]) == pv.value
            else:
                assert float(row["value"]) == pv.value  # exact, not rounded
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)
    assert not list(tmp_path.glob("*.partial"))


def test_export_selects_by_iso_time_and_relative_age(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    now = time.time()
    with Buffer(path, max_bytes=MiB) as buf:
        # 10 readings, 1 h apart, the newest half an hour ago
        buf.append(
            [
                Reading("d", now - 1800 - 3600 * (9 - i), {"v": PointValue.good(i)})
                for i in range(10)
            ]
        )

    def seqs(*args: str) -> list[int]:
        result = swm_edge("buffer", "export", "--file", path, *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["seq"] for line in result.stdout.splitlines()]

    assert seqs("--since", "2h") == [9, 10]
    assert seqs("--since", "3h", "--until", "1h") == [8, 9]
    assert seqs("--since", "1d") == list(range(1, 11))
    assert seqs("--until", "100m") == list(range(1, 9))
    first = iso(now - 1800 - 3600 * 9)
    assert seqs("--until", first) == []
    assert seqs("--since", first, "--until", iso(now - 1800 - 3600 * 8)) == [1]
    # without --gateway and a config there is no gateway field
    result = swm_edge("buffer", "export", "--file", path, "--since", "2h", "--gateway", "gw-x")
    assert json.loads(result.stdout.splitlines()[0])["gateway"] == "gw-x"
    assert "gateway" not in json.loads(
        swm_edge("buffer", "export", "-f", path).stdout.split("\n")[0]
    )


def test_parse_time_forms() -> None:
    now = 1_800_000_000.0
    assert parse_time("2h", now) == now - 7200
    assert parse_time("3d", now) == now - 3 * 86400
    assert parse_time("1.5h", now) == now - 5400
    assert parse_time("30m", now) == now - 1800
    assert parse_time("1w", now) == now - 7 * 86400
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000  # no offset: UTC
    assert parse_time("2023-11-15T00:13:20+02:00") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20.500Z") == 1_700_000_000.5
    assert parse_time("2023-11-15") == 1_700_006_400
    for bad in ("2x", "yesterday", "", "h", "-2h", "1700000000"):
        with pytest.raises(ValueError, match="not a time"):
            parse_time(bad, now)


def test_bad_arguments_exit_2(stored: Path, config: Path, tmp_path: Path) -> None:
    for args in (
        ["export", "--file", stored, "--since", "last tuesday"],
        ["export", "--file", stored, "--since", "1h", "--until", "2h"],  # since after until
        ["export", "--file", stored, "--config", config],  # both sources
        ["export", "--file", stored, "--format", "xml"],
        ["export", "--file", stored, "--output", stored],  # would replace the buffer
        ["purge", "--file", stored],  # --before is required
        ["purge", "--file", stored, "--before", "soon", "--yes"],
    ):
        result = swm_edge("buffer", *args)
        assert result.returncode == 2, (args, result)
        assert "Traceback" not in result.stderr and "Error:" in result.stderr, args
    assert BufferReader(stored).stats().depth == 40


def test_stats_figures(config: Path, stored: Path) -> None:
    with Buffer(stored, max_bytes=16 * MiB, destinations=("default", "backup")) as buf:
        buf.ack("default", range(1, 11))
    result = swm_edge("buffer", "stats", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["path"] == str(stored) and s["schema_version"] == 1
    assert (s["depth"], s["first_seq"], s["last_seq"], s["last_assigned_seq"]) == (40, 1, 40, 40)
    assert (s["oldest"], s["newest"]) == (iso(T0 + 0.123), iso(T0 + 390.123))
    assert (s["dropped"], s["purged"], s["undated"]) == (0, 0, 0)
    assert s["pending"] == {"default": 30, "backup": 40}
    assert {d: v["rows"] for d, v in s["devices"].items()} == {
        "dev-0": 14,
        "dev-1": 13,
        "dev-2": 13,
    }
    assert s["devices"]["dev-2"]["oldest"] == iso(T0 + 20.123)
    assert s["size_bytes"] == stored.stat().st_size == s["db_bytes"]
    text = swm_edge("buffer", "stats", "--file", stored)
    assert text.returncode == 0, text.stderr
    assert "40, seq 1..40" in text.stdout and "backup: 40" in text.stdout
    assert "dev-0" in text.stdout and iso(T0 + 0.123) in text.stdout


def test_purge_needs_yes_and_counts_what_it_deleted(config: Path, stored: Path) -> None:
    before = iso(T0 + 100)  # readings 0..9 are older
    dry = swm_edge("buffer", "purge", "--config", config, "--before", before)
    assert dry.returncode == 1
    assert "10 readings older than" in dry.stderr and "--yes" in dry.stderr
    assert "Traceback" not in dry.stderr
    assert BufferReader(stored).stats().depth == 40  # nothing went

    done = swm_edge("buffer", "purge", "--config", config, "--before", before, "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 10 readings" in done.stdout and "seq 1..10" in done.stdout
    s = json.loads(swm_edge("buffer", "stats", "-c", config, "--json").stdout)
    assert (s["depth"], s["first_seq"], s["dropped"], s["purged"]) == (30, 11, 10, 10)

    again = swm_edge("buffer", "purge", "--config", config, "--before", before)
    assert again.returncode == 0 and "nothing to delete" in again.stdout
    # the agent's next seq is unaffected
    with Buffer(stored, max_bytes=16 * MiB) as buf:
        assert buf.append(readings()[:1]) == [41]
        assert buf.stats().dropped == 10


def test_purge_while_a_writer_holds_the_lock_says_so(stored: Path) -> None:
    holder = sqlite3.connect(stored, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # stats and export read past a writer's open transaction
        assert swm_edge("buffer", "stats", "--file", stored).returncode == 0
        started = time.monotonic()
        result = swm_edge("buffer", "purge", "--file", stored, "--before", "1h", "--yes")
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    line = one_line_error(result)
    assert "locked by another process" in line and "Try again" in line
    assert 2.5 < waited < 30
    assert BufferReader(stored).stats().depth == 40


def test_export_while_the_writer_process_appends_and_purge_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        last = 0
        while last < 5000:
            last = int(proc.stdout.readline())
        start = last
        out = tmp_path / "live.jsonl"
        result = swm_edge("buffer", "export", "--file", path, "--output", out)
        assert result.returncode == 0, result.stderr
        purge = swm_edge("buffer", "purge", "--file", path, "--before", iso(1.7e9 + 2001), "--yes")
        assert purge.returncode == 0, purge.stderr
        assert "deleted 2,000 readings" in purge.stdout
        while last < start + 500:  # the writer went on through all of it
            last = int(proc.stdout.readline())
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "Traceback" not in err, err
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) >= start
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
    for doc in docs:
        n = doc["seq"]
        assert doc["device"] == "kill-test" and doc["ts"] == iso(1.7e9 + n)
        assert doc["readings"] == {
            f"p{k}": {"value": n + k / 10, "unit": "m3", "quality": "good"} for k in range(10)
        }
    s = json.loads(swm_edge("buffer", "stats", "--file", path, "--json").stdout)
    assert (s["first_seq"], s["dropped"], s["purged"]) == (2001, 2000, 2000)


def test_export_of_a_copy_without_wal_writes_nothing(tmp_path: Path, stored: Path) -> None:
    copy = tmp_path / "copy" / "buffer.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(stored, copy)
    mtime = copy.stat().st_mtime_ns
    a = swm_edge("buffer", "export", "--file", stored, "--format", "csv")
    b = swm_edge("buffer", "export", "--file", copy, "--format", "csv")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout != ""
    assert sorted(p.name for p in copy.parent.iterdir()) == ["buffer.sqlite"]
    assert copy.stat().st_mtime_ns == mtime


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(4096 * 2, len(data)):
        data[i] = (i * 7 + 13) % 256
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["stats", "export", "purge"])
def test_unusable_files_give_one_line_and_exit_1(tmp_path: Path, command: str) -> None:
    extra = ["--before", "1h", "--yes"] if command == "purge" else []

    def run(path: Path) -> str:
        return one_line_error(swm_edge("buffer", command, "--file", path, *extra))

    assert "no such file" in run(tmp_path / "missing.sqlite")
    assert "no such file" in run(tmp_path / "no-such-folder" / "buffer.sqlite")
    (tmp_path / "folder.sqlite").mkdir()
    assert "is a folder" in run(tmp_path / "folder.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(bytes(range(256)) * 40)
    assert "not an SQLite database" in run(tmp_path / "junk.sqlite")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    assert "empty" in run(tmp_path / "empty.sqlite")
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE readings (x)")
    assert "not a swm-edge buffer" in run(foreign)
    damaged = tmp_path / "damaged.sqlite"
    with Buffer(damaged, max_bytes=16 * MiB) as buf:
        buf.append(readings() * 50)
    damage(damaged)
    line = run(damaged)
    assert "damaged" in line and ".recover" in line


def test_config_errors_and_a_missing_buffer_from_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "not-yet.sqlite")
    line = one_line_error(swm_edge("buffer", "stats", "--config", config))
    assert "not-yet.sqlite" in line and "no such file" in line
    result = swm_edge("buffer", "stats", "--config", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_into_a_missing_folder_fails_cleanly(stored: Path, tmp_path: Path) -> None:
    line = one_line_error(
        swm_edge("buffer", "export", "--file", stored, "-o", tmp_path / "nope" / "x.jsonl")
    )
    assert "cannot write" in line


def test_export_to_a_closed_pipe_is_quiet(stored: Path) -> None:
    result = subprocess.run(
        f"{sys.executable} -m swm_edge buffer export --file '{stored}' | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout)["seq"] == 1
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr


def test_nan_time_and_values_export_as_null(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Buffer(path, max_bytes=MiB) as buf:
        buf.append(
            [Reading("d", math.nan, {"v": PointValue.good(math.inf), "w": PointValue.good(1)})]
        )
    result = swm_edge("buffer", "export", "--file", path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # strict JSON: no NaN or Infinity
    assert doc["ts"] is None
    assert doc["readings"]["v"]["value"] is None and doc["readings"]["w"]["value"] == 1


RSS_PROBE = """
import resource, runpy, sys
sys.argv = ["swm-edge", *sys.argv[1:]]
try:
    runpy.run_module("swm_edge", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def export_peak_kb(db: Path, out: Path, fmt: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, "buffer", "export", "--file", str(db),
         "--format", fmt, "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(result.stderr.split("maxrss_kb")[1].split()[0])


@pytest.mark.slow
def test_export_streams_many_rows_in_constant_memory(tmp_path: Path) -> None:
    big, small = tmp_path / "big.sqlite", tmp_path / "small.sqlite"
    # 300k rows held in memory would take ~270 MB; the million-row figure (49 MB peak, as
    # for 1000 rows) is in docs/performance.md. Smaller here to keep the suite short.
    n = 300_000
    with Buffer(big, max_bytes=1024 * MiB, synchronous="OFF") as buf:
        for start in range(0, n, 50_000):
            buf.append(
                [
                    Reading(f"m-{i % 7}", T0 + i, {"flow": PointValue.good(i / 4, "m3/h")})
                    for i in range(start, start + 50_000)
                ]
            )
    with Buffer(small, max_bytes=MiB) as buf:
        buf.append(
            [Reading("m-0", T0 + i, {"flow": PointValue.good(i / 4, "m3/h")}) for i in range(1000)]
        )
    base = export_peak_kb(small, tmp_path / "small.jsonl", "jsonl")
    peak = export_peak_kb(big, tmp_path / "big.jsonl", "jsonl")
    # Streaming stays near the base, whatever the number of rows.
    assert peak - base < 20_000, (base, peak)
    with (tmp_path / "big.jsonl").open() as f:
        count = sum(1 for _ in f)
    assert count == n
    with (tmp_path / "big.jsonl").open("rb") as f:
        f.seek(-300, 2)
        last = json.loads(f.read().splitlines()[-1])
    assert last["seq"] == n and last["readings"]["flow"]["value"] == (n - 1) / 4


class _NoBroker:
    """A broker address nobody listens on: the agent keeps every reading in its buffer."""

    host = "127.0.0.1"
    port = free_port()


def wait_depth(path: Path, depth: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and Path(f"{path}-wal").exists():
            with BufferReader(path) as reader:
                found = reader.stats().depth
            if found >= depth:
                return found
        time.sleep(0.2)
    raise AssertionError(f"the agent did not buffer {depth} readings in {timeout} s")


def test_export_and_purge_next_to_the_real_agent(
    tmp_path: Path, modbus_tcp_device: ModbusTcpDeviceFactory
) -> None:
    device = modbus_tcp_device("keller-series30")
    config = write_agent_config(
        tmp_path / "config.yaml",
        broker=_NoBroker(),
        bus={"type": "modbus-tcp", "host": device.host, "port": device.port, "timeout": 0.5},
        device={"profile": "keller-series30", "unit": 1, "interval": 0.2},
        gateway=GATEWAY,
    )
    buffer_path = tmp_path / "buffer.sqlite"
    with RunningAgent(config) as agent:
        wait_depth(buffer_path, 10)
        exported = swm_edge("buffer", "export", "--config", config)
        assert exported.returncode == 0, exported.stderr
        docs = [json.loads(line) for line in exported.stdout.splitlines()]
        assert len(docs) >= 10
        assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
        expected = device.values()
        for doc in docs:
            assert doc["gateway"] == GATEWAY and doc["device"] == "dev-1"
            assert {k: v["value"] for k, v in doc["readings"].items()} == expected
            assert {v["quality"] for v in doc["readings"].values()} == {"good"}

        purged = swm_edge("buffer", "purge", "--config", config, "--before", "0s", "--yes")
        assert purged.returncode == 0, purged.stderr
        found = re.search(r"deleted ([\d,]+) readings", purged.stdout)
        assert found, purged.stdout
        gone = int(found[1].replace(",", ""))
        assert gone >= len(docs)
        wait_depth(buffer_path, 5)  # the agent goes on buffering after the purge
        assert agent.running
        after = swm_edge("buffer", "stats", "--config", config, "--json")
        s = json.loads(after.stdout)
        assert (s["dropped"], s["purged"]) == (gone, gone)
        assert s["first_seq"] == gone + 1 and s["last_seq"] == s["last_assigned_seq"]
        assert agent.stop() == 0
    log = agent.log()
    assert "Traceback" not in log and "locked" not in log


def test_export_keeps_the_clock_flag() -> None:
    flagged = Reading("flow-1", 12.0, {"flow": PointValue.good(1.5, "m3/h")}, "unsynchronized")
    trusted = Reading("flow-1", 1_795_000_000.0, {"flow": PointValue.good(1.5, "m3/h")})
    rows = [Row(1, flagged), Row(2, trusted)]
    out = io.StringIO()
    export_rows(rows, out, "jsonl", GATEWAY)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs[0]["clock"] == "unsynchronized" and "clock" not in docs[1]
    assert list(docs[0]) == ["gateway", "device", "seq", "ts", "clock", "readings"]
    out = io.StringIO()
    export_rows(rows, out, "csv", GATEWAY)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["clock"] for r in table] == ["unsynchronized", ""]
