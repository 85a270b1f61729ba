"""Tests of the store-and-forward buffer against real SQLite files and real processes."""

from __future__ import annotations

import math
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from swm_edge.buffer import (
    MIN_MAX_BYTES,
    SCHEMA_VERSION,
    Buffer,
    BufferFileError,
    BufferStats,
    Row,
)
from swm_edge.model import PointValue, Quality, Reading, Reason

MiB = 1024 * 1024
WRITER = Path(__file__).with_name("buffer_writer_proc.py")


def meter_reading(i: int, device: str = "meter-1") -> Reading:
    """A realistic 10-point reading of a water meter; ``i`` makes it unique."""
    rng = random.Random(i)
    points = {
        "flow": PointValue.good(rng.uniform(0, 50), "m3/h"),
        "volume_fwd": PointValue.good(1_000_000 + i * 7, "m3"),
        "volume_rev": PointValue.good(rng.randrange(1000), "m3"),
        "pressure": PointValue.good(rng.uniform(1, 10), "bar"),
        "temperature": PointValue.good(round(rng.uniform(2, 25), 2), "°C"),
        "conductivity": PointValue.good(rng.uniform(100, 900), "µS/cm"),
        "battery": PointValue.good(rng.randrange(100), "%"),
        "leak_alarm": PointValue.good(i % 13 == 0),
        "empty_pipe": PointValue.good(False),
        "turbidity": PointValue.bad(Reason.TIMEOUT, "NTU"),
    }
    return Reading(device, 1_700_000_000 + i * 0.5, points)


def small_reading(i: int) -> Reading:
    return Reading("m", float(i), {"v": PointValue.good(i)})


def all_rows(buf: Buffer, dest: str = "default") -> list[Row]:
    return buf.fetch(dest, 0, 10**9)


def db_seqs(path: Path) -> list[int]:
    """The seqs stored in the file, read with a separate plain SQLite connection."""
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM readings ORDER BY seq")]


def used_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


# -- round trip ----------------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_type(tmp_path: Path) -> None:
    points = {
        "int": PointValue.good(-42, "l"),
        "uint64_max": PointValue.good(2**64 - 1),
        "int64_min": PointValue.good(-(2**63)),
        "true": PointValue.good(True),
        "false": PointValue.good(False),
        "tenth": PointValue.good(0.1, "m3/h"),
        "huge": PointValue.good(1.7976931348623157e308),
        "tiny": PointValue.good(5e-324),
        "neg_zero": PointValue.good(-0.0),
        "whole_float": PointValue.good(3.0),
        "big_float": PointValue.good(12345678901234567.0),
        "unicode_unit": PointValue.good(7.25, "µS/cm"),
        "bad_timeout": PointValue.bad(Reason.TIMEOUT, "bar"),
        "bad_exc": PointValue.bad("exception:2"),
        "bad_with_value": PointValue(9, Quality.BAD, None, "clock"),
        "good_with_note": PointValue(1.5, Quality.GOOD, "m", "note"),
    }
    first = Reading("meter-ä", 1_700_000_000.123456, points)
    second = Reading("probe-7", 1_700_000_001.5, {"level": PointValue.good(0.25, "m")})
    with Buffer(tmp_path / "b.db", max_bytes=MiB) as buf:
        assert buf.append([first, second]) == [1, 2]
        rows = buf.fetch("default", 0, 10)

    assert [r.seq for r in rows] == [1, 2]
    got = rows[0].reading
    assert got.device_id == "meter-ä"
    assert got.ts == 1_700_000_000.123456
    assert list(got.points) == list(points)  # order kept
    for name, want in points.items():
        have = got.points[name]
        assert type(have.value) is type(want.value), name
        assert have.value == want.value, name
        assert have.quality is want.quality, name
        assert have.unit == want.unit, name
        assert have.error == want.error, name
    assert math.copysign(1.0, got.points["neg_zero"].value) == -1.0  # type: ignore[arg-type]
    assert rows[1].reading == second


def test_nan_does_not_crash(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", max_bytes=MiB) as buf:
        buf.append(
            [
                Reading(
                    "m", math.nan, {"v": PointValue.good(math.nan), "w": PointValue.good(math.inf)}
                )
            ]
        )
        (row,) = all_rows(buf)
        assert math.isnan(row.reading.ts)
        assert math.isnan(row.reading.points["v"].value)  # type: ignore[arg-type]
        assert row.reading.points["w"].value == math.inf
        assert buf.stats().depth == 1


def test_points_are_stored_compactly(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB) as buf:
        buf.append([meter_reading(1)])
    with sqlite3.connect(path) as conn:
        device, ts, points = conn.execute("SELECT device_id, ts, points FROM readings").fetchone()
    assert (device, ts) == ("meter-1", 1_700_000_000.5)
    assert '"empty_pipe":[false]' in points
    assert '"turbidity":[null,"NTU","bad","timeout"]' in points
    assert " " not in points
    assert len(points.encode()) < 300


# -- seq -----------------------------------------------------------------------------------------


def test_seq_is_contiguous_survives_restart_and_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB) as buf:
        assert buf.append([small_reading(i) for i in range(3)]) == [1, 2, 3]
        assert buf.append([small_reading(3)]) == [4]
        assert buf.append([]) == []
        buf.ack("default", [1, 2, 3, 4])
        assert buf.stats().depth == 0
        assert db_seqs(path) == []
    with Buffer(path, max_bytes=MiB) as buf:
        assert buf.append([small_reading(i) for i in range(2)]) == [5, 6]
        assert [r.seq for r in all_rows(buf)] == [5, 6]


# -- ack, several destinations -------------------------------------------------------------------


def test_ack_deletes_a_row_only_when_every_destination_acked(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB, destinations=("a", "b")) as buf:
        buf.append([small_reading(i) for i in range(1, 6)])
        buf.ack("a", [1, 2, 3])
        assert [r.seq for r in all_rows(buf, "a")] == [4, 5]
        assert [r.seq for r in all_rows(buf, "b")] == [1, 2, 3, 4, 5]
        assert db_seqs(path) == [1, 2, 3, 4, 5]

        buf.ack("b", [2, 3, 4, 999, -1])  # 999 and -1 do not exist: ignored
        assert db_seqs(path) == [1, 4, 5]
        assert [r.seq for r in all_rows(buf, "a")] == [4, 5]
        assert [r.seq for r in all_rows(buf, "b")] == [1, 5]
        assert (buf.depth_for("a"), buf.depth_for("b"), buf.stats().depth) == (2, 2, 3)

        buf.ack("a", [4, 4, 5])  # duplicates are fine
        buf.ack("a", [1, 2, 3])  # already acked (2, 3 even gone): nothing happens
        assert db_seqs(path) == [1, 5]
        buf.ack("b", iter([5, 1]))
        assert db_seqs(path) == []
        assert buf.stats() == BufferStats(0, None, 0, buf.stats().size_bytes)


def test_fetch_pages_by_after_seq(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", max_bytes=MiB, destinations=("a", "b")) as buf:
        buf.append([small_reading(i) for i in range(1, 26)])
        buf.ack("a", range(8, 13))  # a hole for a only
        pages, after = [], 0
        while page := buf.fetch("a", after, 7):
            pages.append([r.seq for r in page])
            after = page[-1].seq
        assert pages == [
            [1, 2, 3, 4, 5, 6, 7],
            [13, 14, 15, 16, 17, 18, 19],
            [20, 21, 22, 23, 24, 25],
        ]
        assert [r.seq for r in buf.fetch("b", 10, 3)] == [11, 12, 13]
        assert [r.reading.points["v"].value for r in buf.fetch("b", 10, 3)] == [11, 12, 13]
        assert buf.fetch("b", 25, 10) == []
        assert buf.fetch("b", 0, 0) == []
        with pytest.raises(KeyError, match="nope"):
            buf.fetch("nope", 0, 1)
        with pytest.raises(KeyError):
            buf.ack("nope", [1])


def test_reopened_buffer_returns_exactly_the_unacked_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    readings = [meter_reading(i) for i in range(200)]
    acked = set(random.Random(7).sample(range(1, 201), 120))
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append(readings[:100])
        buf.append(readings[100:])
        buf.ack("default", acked)
    with Buffer(path, max_bytes=4 * MiB) as buf:
        rows = all_rows(buf)
        assert [r.seq for r in rows] == sorted(set(range(1, 201)) - acked)
        assert all(r.reading == readings[r.seq - 1] for r in rows)
        stats = buf.stats()
        assert stats.depth == 80
        assert stats.oldest_ts == readings[rows[0].seq - 1].ts


def test_destinations_are_added_and_removed_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB, destinations=("a",)) as buf:
        buf.append([small_reading(i) for i in range(1, 4)])
        buf.ack("a", [1])
    # b is new: it needs every row still stored (1 is gone already).
    with Buffer(path, max_bytes=MiB, destinations=("a", "b")) as buf:
        assert buf.destinations == ("a", "b")
        assert [r.seq for r in all_rows(buf, "b")] == [2, 3]
        buf.append([small_reading(4)])
        buf.ack("b", [2, 4])  # 2 now waits only for a, 4 for a only too
        buf.ack("a", [3])  # 3 waits only for b
    # a is gone: rows only a needed (2, 4) are deleted, b keeps 3.
    with Buffer(path, max_bytes=MiB, destinations=("b",)) as buf:
        assert db_seqs(path) == [3]
        assert [r.seq for r in all_rows(buf, "b")] == [3]
        assert buf.stats().depth == 1
        with pytest.raises(KeyError):
            buf.depth_for("a")
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
        assert "readings_pending_0" not in indexes  # a's index was dropped
    # Replacing every destination: nobody needs the old rows any more.
    with Buffer(path, max_bytes=MiB, destinations=("c",)) as buf:
        assert buf.stats().depth == 0
        assert db_seqs(path) == []
        assert buf.append([small_reading(5)]) == [5]


# -- size bound ----------------------------------------------------------------------------------


def test_size_stays_bounded_and_the_oldest_rows_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    max_bytes = MiB
    slack = 16 * 4096  # a few pages the estimate may miss, plus the header page
    total, batch = 50_000, 250
    # NORMAL: this test is about size, not durability, and FULL's fsyncs would only slow it.
    with Buffer(path, max_bytes=max_bytes, synchronous="NORMAL") as buf:
        for start in range(0, total, batch):
            seqs = buf.append([meter_reading(i) for i in range(start, start + batch)])
            assert seqs == list(range(start + 1, start + batch + 1))
            assert path.stat().st_size <= max_bytes + slack
            assert used_bytes(path) <= max_bytes
        stats = buf.stats()
        rows = all_rows(buf)

    assert 1000 < stats.depth < 10_000  # ~250 B per reading: a few thousand fit in 1 MiB
    assert stats.dropped == total - stats.depth
    assert len(rows) == stats.depth
    survivors = [r.seq for r in rows]
    assert survivors == list(range(total - stats.depth + 1, total + 1))  # newest, contiguous
    assert all(r.reading == meter_reading(r.seq - 1) for r in rows)
    assert stats.size_bytes >= path.stat().st_size

    with Buffer(path, max_bytes=max_bytes) as buf:  # the dropped counter is persistent
        assert buf.stats().dropped == total - stats.depth
        assert buf.stats().depth == stats.depth


def test_lowering_max_bytes_shrinks_the_file_on_open(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=4 * MiB, synchronous="NORMAL") as buf:
        buf.append([meter_reading(i) for i in range(12_000)])  # ~3 MB
    assert path.stat().st_size > 3 * MiB
    with Buffer(path, max_bytes=MiB) as buf:
        stats = buf.stats()
        assert path.stat().st_size <= MiB + 16 * 4096
        assert used_bytes(path) <= MiB
        assert stats.dropped == 12_000 - stats.depth > 0
        assert [r.seq for r in all_rows(buf)] == list(range(12_001 - stats.depth, 12_001))
        assert buf.append([meter_reading(0)]) == [12_001]


def test_batch_larger_than_the_buffer_drops_its_own_oldest_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MIN_MAX_BYTES, synchronous="NORMAL") as buf:
        seqs = buf.append([meter_reading(i) for i in range(2000)])  # ~500 kB
        assert seqs == list(range(1, 2001))
        stats = buf.stats()
        assert 0 < stats.depth < 2000
        assert stats.dropped == 2000 - stats.depth
        assert [r.seq for r in all_rows(buf)] == list(range(2001 - stats.depth, 2001))
    assert used_bytes(path) <= MIN_MAX_BYTES


def test_wal_is_truncated_after_a_large_delete(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    wal = Path(f"{path}-wal")
    with Buffer(path, max_bytes=64 * MiB, synchronous="NORMAL") as buf:
        buf.append([meter_reading(i) for i in range(20_000)])  # ~5 MB in one transaction
        assert wal.stat().st_size == 0  # checkpointed and truncated right after
        assert path.stat().st_size > 4 * MiB
        buf.ack("default", range(1, 20_001))  # deletes ~5 MB of rows in one transaction
        assert buf.stats().depth == 0
        assert wal.stat().st_size == 0
        buf.append([meter_reading(i) for i in range(10)])  # small: WAL below its limit
        assert 0 < wal.stat().st_size <= 1000 * 4096


# -- durability ----------------------------------------------------------------------------------


def test_sigkill_loses_no_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    rng = random.Random()
    batch = 20
    stored_before = 0
    for _round in range(5):
        child = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        printed = [int(child.stdout.readline()) for _ in range(rng.randint(2, 8))]
        threading.Event().wait(rng.uniform(0, 0.03))  # kill at a random moment of a batch
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL, err
        # Lines the child managed to print before dying were committed too; a torn last
        # line (no newline) is not a promise.
        printed += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]

        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with Buffer(path, max_bytes=64 * MiB) as buf:
            seqs = [r.seq for r in all_rows(buf)]
        assert set(printed) <= set(seqs)
        assert seqs == list(range(1, len(seqs) + 1))  # contiguous from 1: nothing lost or reused
        # this round continued after the last stored seq of the previous one
        assert printed[0] == stored_before + batch
        assert len(seqs) % batch == 0  # whole batches only: an append is one transaction
        stored_before = len(seqs)


# -- bad files -----------------------------------------------------------------------------------


def test_non_sqlite_file_raises_buffer_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    garbage = bytes(random.Random(1).randrange(256) for _ in range(10_000))
    path.write_bytes(garbage)
    with pytest.raises(BufferFileError, match="move the file aside") as info:
        Buffer(path, max_bytes=MiB)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_foreign_sqlite_database_raises_buffer_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = path.read_bytes()
    with pytest.raises(BufferFileError, match="not a swm-edge buffer"):
        Buffer(path, max_bytes=MiB)
    assert path.read_bytes() == before  # not even switched to WAL


def test_damaged_buffer_raises_buffer_error(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append([meter_reading(i) for i in range(2000)])
    data = bytearray(path.read_bytes())
    page = 4096
    for p in range(3, len(data) // page):  # scribble over every page but the schema
        data[p * page + 8 : p * page + 200] = b"\xa5" * 192
    path.write_bytes(bytes(data))
    # SQLite may notice at open or only at the first read of a bad page: either is fine.
    with (
        pytest.raises(BufferFileError, match="damaged") as info,
        Buffer(path, max_bytes=4 * MiB) as buf,
    ):
        buf.fetch("default", 0, 10**6)
    assert ".recover" in str(info.value)


def test_newer_schema_version_raises_buffer_error(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    Buffer(path, max_bytes=MiB).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(BufferFileError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Buffer(path, max_bytes=MiB)


def test_missing_folder_raises_buffer_error(tmp_path: Path) -> None:
    with pytest.raises(BufferFileError, match="folder"):
        Buffer(tmp_path / "nope" / "b.db", max_bytes=MiB)


def test_invalid_arguments(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with pytest.raises(ValueError, match="max_bytes"):
        Buffer(path, max_bytes=MIN_MAX_BYTES - 1)
    with pytest.raises(ValueError, match="distinct"):
        Buffer(path, max_bytes=MiB, destinations=("a", "a"))
    with pytest.raises(ValueError, match="at least one"):
        Buffer(path, max_bytes=MiB, destinations=())
    with pytest.raises(ValueError, match="synchronous"):
        Buffer(path, max_bytes=MiB, synchronous="SOMETIMES")
    assert not path.exists()


# -- meta, stats, threads ------------------------------------------------------------------------


def test_meta_values_persist(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB) as buf:
        assert buf.get_meta("bdSeq") is None
        buf.set_meta("bdSeq", "41")
        buf.set_meta("bdSeq", "42")
        with pytest.raises(ValueError, match="reserved"):
            buf.set_meta("dropped", "0")
    with Buffer(path, max_bytes=MiB) as buf:
        assert buf.get_meta("bdSeq") == "42"
        assert buf.get_meta("dropped") == "0"


def test_stats(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB, destinations=("a", "b")) as buf:
        assert buf.stats().depth == 0 and buf.stats().oldest_ts is None
        buf.append([small_reading(i) for i in range(10, 20)])
        buf.ack("a", range(1, 8))
        buf.ack("b", range(1, 4))
        stats = buf.stats()
        assert (stats.depth, stats.oldest_ts, stats.dropped) == (7, 13.0, 0)
        assert (buf.depth_for("a"), buf.depth_for("b")) == (3, 7)
        wal = Path(f"{path}-wal")
        assert stats.size_bytes == path.stat().st_size + wal.stat().st_size


def test_usable_from_a_worker_thread_other_than_the_creator(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db", max_bytes=MiB)
    result: list[object] = []

    def work() -> None:
        result.append(buf.append([small_reading(1)]))
        result.append(len(all_rows(buf)))
        buf.close()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert result == [[1], 1]


# -- fetch cost ----------------------------------------------------------------------------------


def test_fetch_near_the_end_of_200k_rows_walks_the_index(tmp_path: Path) -> None:
    total = 200_000
    with Buffer(
        tmp_path / "b.db", max_bytes=256 * MiB, destinations=("a", "b"), synchronous="OFF"
    ) as buf:
        for start in range(0, total, 20_000):
            buf.append([small_reading(i) for i in range(start, start + 20_000)])
        # a is almost done, b lags: the rows stay, but a must not walk over b's backlog.
        buf.ack("a", range(1, total - 50 + 1))

        for dest in ("a", "b"):
            plan = buf.fetch_plan(dest)
            assert len(plan) == 1, plan
            assert plan[0].startswith("SEARCH readings USING INDEX readings_pending_"), plan
            assert "(seq>?)" in plan[0]

        # Count SQLite VM instructions, a deterministic measure of the work (unlike time).
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        buf._conn.set_progress_handler(count, 100)  # private: the only way to see the work
        rows = buf.fetch("b", total - 100, 100)
        near_end = steps
        steps = 0
        rows_a = buf.fetch("a", 0, 100)  # a's first pending row is 199,951
        lagging = steps
        steps = 0
        buf.depth_for("b")  # walks all 200k index entries: the yardstick of a scan
        scan = steps
        buf._conn.set_progress_handler(None, 0)

    assert [r.seq for r in rows] == list(range(total - 99, total + 1))
    assert [r.seq for r in rows_a] == list(range(total - 49, total + 1))
    assert scan > 5000  # > 500k instructions
    assert near_end * 100 < scan
    assert lagging * 100 < scan


def test_dropped_rows_are_counted_per_destination_that_had_not_acked_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    with Buffer(path, max_bytes=MiB, synchronous="NORMAL", destinations=["cloud", "scada"]) as buf:
        # cloud keeps up, scada is down: only scada loses what the bound drops
        for start in range(0, 20_000, 500):
            seqs = buf.append([meter_reading(i) for i in range(start, start + 500)])
            buf.ack("cloud", seqs)
        dropped = buf.stats().dropped
        assert dropped > 0
        assert buf.dropped_for("scada") == dropped
        assert buf.dropped_for("cloud") == 0
        assert buf.depth_for("cloud") == 0
        with pytest.raises(KeyError):
            buf.dropped_for("nobody")
    with Buffer(path, max_bytes=MiB, destinations=["cloud", "scada"]) as buf:
        assert buf.dropped_for("scada") == dropped  # persistent


def test_acks_commit_without_fsync_and_appends_stay_full(tmp_path: Path) -> None:
    """An ack lost in a power cut is only a re-send: its commit runs under
    synchronous=NORMAL; appends (the readings themselves) keep FULL."""
    with Buffer(tmp_path / "b.db", max_bytes=MiB) as buf:
        seqs = buf.append([meter_reading(i) for i in range(5)])
        statements: list[str] = []
        buf._conn.set_trace_callback(statements.append)
        buf.ack("default", seqs[:3])
        buf.append([meter_reading(5)])
        buf._conn.set_trace_callback(None)
        commits = [i for i, s in enumerate(statements) if s == "COMMIT"]
        assert len(commits) == 2, statements

        def setting_at(i: int) -> str:
            return [s for s in statements[:i] if s.startswith("PRAGMA synchronous")][-1]

        assert setting_at(commits[0]) == "PRAGMA synchronous=NORMAL"
        assert setting_at(commits[1]) == "PRAGMA synchronous=FULL"
        assert buf._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert buf.stats().depth == 3
