"""The buffer keeps each reading's clock flag, in seq order, across restarts; buffer files of
swm-edge 0.1.0 (no ``clock`` column) still open, deliver, and stay usable by 0.1.0."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from swm_edge.buffer import APPLICATION_ID, SCHEMA_VERSION, Buffer, BufferReader
from swm_edge.model import PointValue, Reading

MiB = 1024 * 1024
T1970 = 12.5  # a gateway without RTC, 12.5 s after boot
T2026 = 1_795_406_410.0  # 2026-11-23T04:00:10Z
UNSYNC = "unsynchronized"

# The schema of a buffer file written by swm-edge 0.1.0, as its buffer.py created it
# (_SCHEMA, then the pragmas and one destination with its partial index). Kept verbatim:
# it stands for the files already on gateways in the field.
SCHEMA_0_1_0 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE destinations (name TEXT PRIMARY KEY, bit INTEGER NOT NULL UNIQUE)",
    "CREATE TABLE readings ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " pending INTEGER NOT NULL,"
    " device_id TEXT NOT NULL,"
    " ts REAL,"
    " points TEXT NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('dropped', '0')",
)
# How 0.1.0 stores and reads rows (its INSERT and fetch SELECT, verbatim).
INSERT_0_1_0 = "INSERT INTO readings (pending, device_id, ts, points) VALUES (?, ?, ?, ?)"
SELECT_0_1_0 = (
    "SELECT seq, device_id, ts, points FROM readings "
    "INDEXED BY readings_pending_0 "
    "WHERE pending & 1 != 0 AND seq > ? ORDER BY seq LIMIT ?"
)


def make_0_1_0_file(path: Path, rows: int = 3) -> None:
    """A buffer file as swm-edge 0.1.0 leaves it: one destination, ``rows`` pending rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA_0_1_0:
            conn.execute(stmt)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO destinations (name, bit) VALUES ('default', 0)")
        conn.execute("CREATE INDEX readings_pending_0 ON readings (seq) WHERE pending & 1 != 0")
        for i in range(rows):
            conn.execute(INSERT_0_1_0, (1, "flow-1", T2026 + i, f'{{"flow":[{i}.5,"m3/h"]}}'))
        conn.execute("COMMIT")
    finally:
        conn.close()


def reading(ts: float, value: float, clock: str | None = None) -> Reading:
    return Reading("flow-1", ts, {"flow": PointValue.good(value, "m3/h")}, clock)


def columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[1] for r in conn.execute("PRAGMA table_info(readings)")]


def test_flags_come_back_in_seq_order_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    # Boot in 1970 (flagged), NTP syncs (trusted, 56 years later), then a step back.
    stored = [
        reading(T1970, 1.0, UNSYNC),
        reading(T1970 + 10, 2.0, UNSYNC),
        reading(T2026, 3.0),
        reading(T2026 + 10, 4.0),
        reading(T2026 - 3600, 5.0),
    ]
    with Buffer(path, max_bytes=MiB, destinations=("a", "b")) as buf:
        assert buf.append(stored[:1]) == [1]
        assert buf.append(stored[1:]) == [2, 3, 4, 5]
        assert [r.reading for r in buf.fetch("a", 0, 100)] == stored
    with Buffer(path, max_bytes=MiB, destinations=("a", "b")) as buf:
        rows = buf.fetch("b", 0, 100)
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert [r.reading.clock for r in rows] == [UNSYNC, UNSYNC, None, None, None]
        assert [r.reading.ts for r in rows] == [r.ts for r in stored]
        assert [r.reading for r in rows] == stored
        # Delivery by windows (after_seq) sees the same order; acks do not lose the flag.
        buf.ack("a", [1, 2])
        later = buf.fetch("a", 0, 100)
        assert [(r.seq, r.reading.clock) for r in later] == [(3, None), (4, None), (5, None)]
        assert [(r.seq, r.reading.clock) for r in buf.fetch("b", 1, 1)] == [(2, UNSYNC)]
    # The offline reader (swm-edge buffer export) sees the flags too.
    with BufferReader(path) as reader:
        assert [r.reading for r in reader.iter_rows()] == stored
        assert [r.seq for r in reader.iter_rows(chunk=2)] == [1, 2, 3, 4, 5]
    # NULL for trusted rows: nothing stored for the common case.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT seq, clock FROM readings ORDER BY seq").fetchall() == [
            (1, UNSYNC),
            (2, UNSYNC),
            (3, None),
            (4, None),
            (5, None),
        ]


def test_new_files_have_the_column_and_the_same_version(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    Buffer(path, max_bytes=MiB).close()
    assert columns(path) == ["seq", "pending", "device_id", "ts", "points", "clock"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1


def test_a_0_1_0_file_opens_delivers_and_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    make_0_1_0_file(path)
    assert "clock" not in columns(path)

    # The read-only reader never writes: it reads the missing column as NULL.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with BufferReader(path) as reader:
        rows = list(reader.iter_rows())
    assert [(r.seq, r.reading.ts, r.reading.clock) for r in rows] == [
        (1, T2026, None),
        (2, T2026 + 1, None),
        (3, T2026 + 2, None),
    ]
    assert rows[1].reading.points["flow"] == PointValue.good(1.5, "m3/h")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "clock" not in columns(path)

    with Buffer(path, max_bytes=MiB) as buf:
        old = buf.fetch("default", 0, 100)
        assert [(r.seq, r.reading.clock) for r in old] == [(1, None), (2, None), (3, None)]
        assert old == rows
        assert buf.stats().depth == 3
        # New readings continue the seq and keep their flag.
        assert buf.append([reading(T1970, 9.0, UNSYNC)]) == [4]
        assert buf.fetch("default", 3, 10)[0].reading.clock == UNSYNC
    assert columns(path) == ["seq", "pending", "device_id", "ts", "points", "clock"]

    # Opening again does not migrate again (ALTER TABLE would fail on the existing column).
    with Buffer(path, max_bytes=MiB) as buf:
        assert [r.reading.clock for r in buf.fetch("default", 0, 100)] == [None] * 3 + [UNSYNC]
        buf.ack("default", [1, 2])
        assert buf.stats().depth == 2


def test_a_migrated_file_still_works_for_0_1_0(tmp_path: Path) -> None:
    """Going back to 0.1.0 keeps the buffer: same version number, and 0.1.0's statements
    (which name their columns) still store and read rows."""
    path = tmp_path / "old.sqlite"
    make_0_1_0_file(path, rows=1)
    with Buffer(path, max_bytes=MiB) as buf:
        buf.append([reading(T1970, 2.0, UNSYNC)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # 0.1.0 accepts <= 1
        conn.execute(INSERT_0_1_0, (1, "flow-1", T2026 + 5, '{"flow":[3.5,"m3/h"]}'))
        conn.commit()
        got = conn.execute(SELECT_0_1_0, (0, 10)).fetchall()
    assert [(seq, ts) for seq, _, ts, _ in got] == [(1, T2026), (2, T1970), (3, T2026 + 5)]
    # And back on this version, the row 0.1.0 wrote reads as trusted.
    with Buffer(path, max_bytes=MiB) as buf:
        clocks = [(r.seq, r.reading.clock) for r in buf.fetch("default", 0, 10)]
    assert clocks == [(1, None), (2, UNSYNC), (3, None)]


@pytest.mark.parametrize("flag", [None, UNSYNC])
def test_a_full_buffer_drops_oldest_whatever_the_flag(tmp_path: Path, flag: str | None) -> None:
    """The size bound counts the flag's bytes: a buffer of flagged readings stays bounded."""
    path = tmp_path / "b.sqlite"
    limit = 128 * 1024
    with Buffer(path, max_bytes=limit) as buf:
        for start in range(0, 3000, 100):
            buf.append([reading(T1970 + i, float(i), flag) for i in range(start, start + 100)])
        stats = buf.stats()
        rows = buf.fetch("default", 0, 10**6)
    assert stats.dropped > 0 and stats.depth == len(rows)
    assert [r.seq for r in rows] == list(range(rows[0].seq, 3001))  # newest kept, in order
    assert {r.reading.clock for r in rows} == {flag}
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert (pages - free) * size <= limit
