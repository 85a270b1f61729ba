"""BufferReader, purge_file and Buffer.purge_before against real SQLite files and processes."""

from __future__ import annotations

import hashlib
import math
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swm_edge.buffer import (
    PURGE_BUSY_TIMEOUT,
    Buffer,
    BufferFileError,
    BufferReader,
    RowCount,
    purge_file,
)
from swm_edge.model import PointValue, Reading, Reason
from swm_edge.testing import unavailable

MiB = 1024 * 1024
WRITER = Path(__file__).with_name("buffer_writer_proc.py")
T0 = 1_700_000_000.0


def reading(i: int, device: str = "meter-1") -> Reading:
    """A reading with an int, a float, a bool and a bad point; ``ts`` = T0 + 60 i."""
    return Reading(
        device,
        T0 + 60 * i,
        {
            "volume": PointValue.good(10**15 + i, "m3"),
            "flow": PointValue.good(i / 3, "m3/h"),
            "alarm": PointValue.good(i % 2 == 0),
            "turbidity": PointValue.bad(Reason.TIMEOUT, "NTU"),
        },
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A closed buffer: 100 readings of two devices, 20 of them acked by destination a."""
    path = tmp_path / "buffer.sqlite"
    with Buffer(path, max_bytes=4 * MiB, destinations=("a", "b")) as buf:
        buf.append([reading(i, f"meter-{i % 2}") for i in range(100)])
        buf.ack("a", range(1, 21))
    return path


def test_iter_rows_returns_what_was_stored_in_seq_order(stored: Path) -> None:
    with BufferReader(stored) as reader:
        rows = list(reader.iter_rows(chunk=7))  # several pages
    assert [r.seq for r in rows] == list(range(1, 101))
    for row in rows:
        expected = reading(row.seq - 1, f"meter-{(row.seq - 1) % 2}")
        assert row.reading == expected
        assert type(row.reading.points["volume"].value) is int
        assert type(row.reading.points["alarm"].value) is bool


def test_iter_rows_and_count_select_by_time(stored: Path) -> None:
    since, until = T0 + 60 * 10, T0 + 60 * 20  # readings 10..19
    with BufferReader(stored) as reader:
        rows = list(reader.iter_rows(since, until, chunk=3))
        assert [r.seq for r in rows] == list(range(11, 21))
        assert reader.count(since, until) == RowCount(10, 11, 20)
        assert reader.count(until=T0 + 60 * 5) == RowCount(5, 1, 5)
        assert reader.count(since=T0 + 60 * 1000) == RowCount(0, None, None)
        assert list(reader.iter_rows(since=T0 + 60 * 99)) == list(reader.iter_rows())[-1:]


def test_stats_figures(stored: Path) -> None:
    with Buffer(stored, max_bytes=4 * MiB, destinations=("a", "b")) as buf:
        buf.purge_before(T0 + 60 * 3)  # readings 0, 1, 2
        buf.append([Reading("meter-9", math.nan, {"v": PointValue.good(1)})])
    with BufferReader(stored) as reader:
        s = reader.stats()
    assert s.depth == 98
    assert (s.first_seq, s.last_seq, s.last_assigned_seq) == (4, 101, 101)
    assert (s.oldest_ts, s.newest_ts) == (T0 + 60 * 3, T0 + 60 * 99)
    assert s.undated == 1
    assert (s.dropped, s.purged) == (3, 3)
    assert s.pending == {"a": 81, "b": 98}  # a acked 1..20, of which 4..20 were still there
    assert set(s.devices) == {"meter-0", "meter-1", "meter-9"}
    assert s.devices["meter-0"].rows == 48 and s.devices["meter-1"].rows == 49
    assert s.devices["meter-0"].oldest_ts == T0 + 60 * 4
    assert s.devices["meter-1"].newest_ts == T0 + 60 * 99
    assert s.devices["meter-9"].oldest_ts is None
    assert s.db_bytes == stored.stat().st_size and s.wal_bytes == 0
    assert s.size_bytes == s.db_bytes
    assert s.schema_version == 1


def test_an_empty_buffer_has_no_ranges(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    Buffer(path, max_bytes=MiB).close()
    with BufferReader(path) as reader:
        s = reader.stats()
        assert list(reader.iter_rows()) == []
    assert (s.depth, s.first_seq, s.oldest_ts, s.last_assigned_seq) == (0, None, None, 0)
    assert s.pending == {"default": 0} and s.devices == {}


def test_reading_a_closed_buffer_writes_nothing(stored: Path) -> None:
    before = (digest(stored), stored.stat().st_mtime_ns, siblings(stored))
    with BufferReader(stored) as reader:
        assert reader.immutable  # no -wal: opened immutable, no -wal/-shm created
        reader.stats()
        assert len(list(reader.iter_rows())) == 100
    assert (digest(stored), stored.stat().st_mtime_ns, siblings(stored)) == before


def test_reading_next_to_an_open_writer_changes_neither_file(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    wal = Path(f"{path}-wal")
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append([reading(i) for i in range(50)])  # in the WAL, not yet checkpointed
        before = (digest(path), digest(wal))
        with BufferReader(path) as reader:
            assert not reader.immutable
            assert [r.seq for r in reader.iter_rows()] == list(range(1, 51))
            assert reader.stats().wal_bytes == wal.stat().st_size > 0
        assert (digest(path), digest(wal)) == before
        # A reader that is still open does not stop the writer.
        with BufferReader(path) as reader:
            rows = reader.iter_rows(chunk=10)
            next(rows)
            assert buf.append([reading(50)]) == [51]
            assert [r.seq for r in rows][-1] == 50  # the end was fixed when reading began


def test_copy_of_the_database_file_alone_is_readable(tmp_path: Path, stored: Path) -> None:
    copy = tmp_path / "elsewhere" / "copy.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(stored, copy)
    with BufferReader(stored) as a, BufferReader(copy) as b:
        assert list(a.iter_rows()) == list(b.iter_rows())
        assert b.stats().depth == 100
    assert siblings(copy) == ["copy.sqlite"]


def test_copy_taken_while_rows_sat_in_the_wal_reads_what_the_file_has(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    copy = tmp_path / "copy.sqlite"
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append([reading(i) for i in range(10)])
        shutil.copyfile(path, copy)  # without the -wal: the rows are not in it
    with BufferReader(copy) as reader:
        assert reader.stats().depth == 0


def _chattr(path: Path, flag: str) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody, root included, can create files in (the immutable attribute)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    yield folder
    _chattr(folder, "-i")


def test_copy_in_a_read_only_folder_is_readable(read_only_folder: Path, stored: Path) -> None:
    copy = read_only_folder / "copy.sqlite"
    shutil.copyfile(stored, copy)
    if not _chattr(read_only_folder, "+i"):
        unavailable("chattr +i is not available here (needs ext4 and CAP_LINUX_IMMUTABLE)")
    with pytest.raises(OSError):
        (read_only_folder / "probe").touch()  # the folder really is read-only
    with BufferReader(copy) as reader:
        assert reader.stats().depth == 100
        assert len(list(reader.iter_rows())) == 100
    # Purging needs a writable place for SQLite's WAL: a clear error, nothing changed.
    with pytest.raises(BufferFileError, match="cannot open the buffer file for writing"):
        purge_file(copy, T0 + 60 * 50)
    with BufferReader(copy) as reader:
        assert reader.stats().depth == 100


def test_a_writer_starting_during_an_immutable_read_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append([reading(i) for i in range(3000)])
    with BufferReader(path) as reader:
        assert reader.immutable
        rows = reader.iter_rows(chunk=100)
        next(rows)
        # An agent starts on the file and checkpoints (closing does) while we read.
        with Buffer(path, max_bytes=4 * MiB) as buf:
            buf.purge_before(T0 + 60 * 2000)
        with pytest.raises(BufferFileError, match="changed while it was read"):
            list(rows)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"readings,1,2\n" * 100), "not an SQLite database"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.close(), "not a"),
    ],
    ids=["missing", "folder", "empty", "text", "foreign-sqlite"],
)
def test_files_that_are_not_buffers(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "b.sqlite"
    make(path)  # type: ignore[operator]
    with pytest.raises(BufferFileError, match=message):
        BufferReader(path)
    with pytest.raises(BufferFileError, match=message):
        purge_file(path, T0)


def test_path_through_a_missing_folder_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(BufferFileError, match="no such file"):
        BufferReader(tmp_path / "nowhere" / "b.sqlite")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(BufferFileError, match="not a folder"):
        BufferReader(tmp_path / "plain" / "b.sqlite")


def damage(path: Path) -> None:
    """Overwrite the pages after the first few with noise (the header stays valid)."""
    data = bytearray(path.read_bytes())
    for i in range(4096 * 3, len(data)):
        data[i] = (i * 7 + 13) % 256
    path.write_bytes(bytes(data))


def test_damaged_buffer_is_a_buffer_file_error(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Buffer(path, max_bytes=4 * MiB) as buf:
        buf.append([reading(i) for i in range(2000)])
    damage(path)
    with pytest.raises(BufferFileError, match=r"damaged.*\.recover"), BufferReader(path) as reader:
        reader.stats()
        list(reader.iter_rows())


def test_newer_schema_is_refused(tmp_path: Path, stored: Path) -> None:
    with sqlite3.connect(stored) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(BufferFileError, match="schema version 99"):
        BufferReader(stored)


def test_purge_before_counts_in_dropped_and_purged(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Buffer(path, max_bytes=16 * MiB) as buf:
        buf.append([reading(i) for i in range(5000)])  # more than one purge batch
        buf.append([Reading("meter-1", math.nan, {"v": PointValue.good(1)})])
        assert buf.purge_before(T0 + 60 * 4500) == 4500
        s = buf.stats()
        assert (s.depth, s.dropped, s.oldest_ts) == (501, 4500, T0 + 60 * 4500)
        assert buf.get_meta("purged") == "4500"
        assert buf.purge_before(T0 + 60 * 10**6) == 500  # the undated row stays
        assert buf.stats().depth == 1
        assert buf.purge_before(T0) == 0
        with pytest.raises(ValueError, match="reserved"):
            buf.set_meta("purged", "0")
        # seqs go on after the purged ones, never reused
        assert buf.append([reading(1)]) == [5002]
    with Buffer(path, max_bytes=16 * MiB) as buf:
        assert (buf.stats().dropped, buf.get_meta("purged")) == (5000, "5000")


def test_purge_file_is_seen_by_an_open_buffer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Buffer(path, max_bytes=16 * MiB) as buf:
        buf.append([reading(i) for i in range(300)])
        assert purge_file(path, T0 + 60 * 100) == 100
        s = buf.stats()  # the agent's figures follow the purge by another process
        assert (s.depth, s.dropped, s.oldest_ts) == (200, 100, T0 + 60 * 100)
        assert buf.fetch("default", 0, 1)[0].seq == 101
        buf.ack("default", range(1, 151))  # acks of purged seqs are ignored
        assert buf.stats().depth == 150
        assert buf.append([reading(1)]) == [301]


def test_purge_file_gives_up_on_a_lock_held_too_long(tmp_path: Path, stored: Path) -> None:
    holder = sqlite3.connect(stored, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer in the middle of a transaction
    try:
        with pytest.raises(BufferFileError, match=r"locked by another process for 0\.3 s"):
            purge_file(stored, T0 + 60 * 50, busy_timeout=0.3)
        # readers are not blocked by the writer
        with BufferReader(stored) as reader:
            assert reader.stats().depth == 100
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert PURGE_BUSY_TIMEOUT < 5  # well inside the agent's own busy timeout
    assert purge_file(stored, T0 + 60 * 50) == 50


def test_export_and_purge_while_a_writer_process_appends(tmp_path: Path) -> None:
    """The agent's writer keeps committing while another process reads and purges."""
    path = tmp_path / "b.sqlite"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        last = 0
        while last < 3000:
            last = int(proc.stdout.readline())
        with BufferReader(path) as reader:
            assert not reader.immutable
            rows = reader.iter_rows(chunk=200)
            seen = []
            for row in rows:
                seen.append(row)
                if len(seen) % 500 == 0:
                    # the writer commits meanwhile: its printed seq moves on
                    before = last
                    while last <= before:
                        last = int(proc.stdout.readline())
        assert [r.seq for r in seen] == list(range(1, len(seen) + 1))
        assert len(seen) >= 3000
        for row in seen:  # the writer's n is the seq; every field as written
            n = row.seq
            assert row.reading.device_id == "kill-test" and row.reading.ts == 1.7e9 + n
            assert row.reading.points == {
                f"p{k}": PointValue.good(n + k / 10, "m3") for k in range(10)
            }
        assert purge_file(path, 1.7e9 + 1001) == 1000
        before = last
        while last < before + 200:
            last = int(proc.stdout.readline())
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "Traceback" not in err and "locked" not in err
    with BufferReader(path) as reader:
        s = reader.stats()
    assert (s.first_seq, s.dropped, s.purged) == (1001, 1000, 1000)
    assert s.depth == s.last_seq - 1000
