"""Store-and-forward buffer: readings wait in SQLite until every destination has them.

The scheduler appends readings, each publisher (one per MQTT broker, a *destination*) fetches
the rows still pending for it and acknowledges them once the broker has them; a row is deleted
when no destination needs it any more. Each row gets a ``seq`` that rises by one per message,
survives restarts and is never reused, so a consumer can spot gaps and duplicates.

Storage and durability
    One SQLite file in WAL mode. ``synchronous=FULL`` (the default) fsyncs the WAL on every
    commit: a reading :meth:`Buffer.append` returned for is on the medium, even if the gateway
    loses power the next moment. ``NORMAL`` only fsyncs at checkpoints: still consistent after a
    power cut, and still durable when only the *process* dies, but the last commits before the
    power cut may be gone. NORMAL writes faster (see ``bench/bench_buffer.py``); gateways lose
    power, so FULL is the default. Acknowledgements always commit with NORMAL: an ack lost
    in a power cut only means its readings are sent again (at-least-once, de-duplicated by
    seq), and the next append's FULL commit syncs it anyway; one fsync less per ack batch.

Bounded size
    The pages in use (``page_count - freelist_count``) never exceed ``max_bytes`` at a commit:
    an append that would not fit first drops the oldest rows (counted in
    :attr:`BufferStats.dropped`). Appending never fails for lack of room. Deleted rows leave
    free pages in the file that later appends reuse, so the file stays at about ``max_bytes``
    without VACUUM: that would rewrite the whole file (flash wear, as much free disk again,
    the worker blocked meanwhile) only for the file to grow back as the backlog refills. The
    one exception is opening a file larger than ``max_bytes`` (the limit was lowered): it is
    trimmed and vacuumed once.

Threads
    The agent calls every method from one dedicated worker thread; the connection is opened with
    ``check_same_thread=False`` only so that this thread need not be the one that constructed
    the buffer. Methods must never run concurrently; the class has no lock of its own.

Other processes
    :class:`BufferReader` reads a buffer without writing anything (``swm-edge buffer stats`` and
    ``export``), next to a running agent or on a copied file; :func:`purge_file` deletes old
    rows from another process (``swm-edge buffer purge``) in short transactions, so the agent's
    writer waits for the lock a few milliseconds at most.

Schema changes
    ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`) rises only for a change an older version
    could not read or write correctly; such a file is refused by older versions. A nullable
    column that older versions simply do not name (they list their columns in every INSERT
    and SELECT) is added in place instead, without a new version, so that going back to an
    older swm-edge keeps its buffer: ``clock`` (the reading's clock flag, added after 0.1.0)
    is one. :class:`Buffer` adds a missing one when it opens a file (``ALTER TABLE … ADD
    COLUMN``: a change of the schema text only, no row is rewritten); :class:`BufferReader`,
    which never writes, reads NULL for it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from swm_edge.model import PointValue, Quality, Reading

__all__ = [
    "PURGE_BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "Buffer",
    "BufferFileError",
    "BufferReader",
    "BufferStats",
    "BufferSummary",
    "DeviceSummary",
    "Row",
    "RowCount",
    "purge_file",
]

#: Version of the table layout, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a buffer file ("SWME"), so a foreign database is never touched.
APPLICATION_ID = 0x53574D45
#: Each destination owns one bit of the ``pending`` column; 62 keeps the mask a positive int64.
MAX_DESTINATIONS = 62
#: Below this the schema alone (tables, one index per destination) would not fit.
MIN_MAX_BYTES = 64 * 1024
# Pages the file may exceed max_bytes by before opening it shrinks it (header page, pages an
# append's size estimate missed).
_SLACK_PAGES = 16

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_RESERVED_META = frozenset({"dropped", "purged"})
# Meta key prefix of the per-destination count of rows dropped before that destination had
# them (``dropped:<destination>``).
_DROPPED_FOR = "dropped:"
# Per-row bytes besides device id and points: record header, ts, pending, rowid, cell pointer.
_ROW_OVERHEAD = 32
# Bytes of one entry in a destination's partial index (seq twice, header, cell pointer).
_INDEX_ENTRY = 14
_SQLITE_BUSY = 5
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
#: Seconds ``purge_file`` waits for the write lock. The agent's own transactions take
#: milliseconds (one batch of readings), so a lock held this long means something else is wrong.
PURGE_BUSY_TIMEOUT = 3.0
# Rows one purge transaction deletes at most: the agent's writer waits for one batch, not for
# the whole purge, and stays well inside its own 5 s busy timeout.
_PURGE_BATCH = 2000
# Rows one BufferReader query returns: each query is its own short read transaction, so a long
# export never pins an old snapshot that would keep the agent's checkpoints from recycling
# the WAL (which would then grow for as long as the export runs).
_READ_CHUNK = 1000
_SQLITE_MAGIC = b"SQLite format 3\x00"


def move_aside(path: Path) -> Path:
    """Rename a buffer file (and its -wal/-shm files) to ``<name>.damaged-<UTC time>``, so a
    new buffer can start while the old readings stay on disk for ``sqlite3 .recover``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    return aside


def last_seq_of(path: Path) -> int | None:
    """The last seq a (possibly damaged) buffer file assigned, or None if unreadable."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else 0


class BufferFileError(Exception):
    """The buffer file cannot be used: not a buffer, corrupt, too new, or cannot be opened.

    Nothing is deleted; ``path`` is the file and the message says what to do. ``damaged``:
    the file is corrupt or not a database at all (as opposed to someone else's database, a
    newer schema, or a file that cannot be opened), so moving it aside is the remedy.
    """

    def __init__(
        self, path: Path, message: str, *, damaged: bool = False, cannot_open: bool = False
    ) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.damaged = damaged
        #: The file or its folder cannot be opened now (read-only, missing): worth retrying.
        self.cannot_open = cannot_open


@dataclass(frozen=True, slots=True)
class Row:
    """A buffered reading with its sequence number."""

    seq: int
    reading: Reading


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Buffer figures for status output and metrics.

    ``depth``: rows pending for any destination; ``oldest_ts``: ``ts`` of the lowest-seq
    pending row (by seq, not ``min(ts)``, so a clock jump does not hide the backlog);
    ``dropped``: rows ever dropped to stay within ``max_bytes`` or deleted by a purge
    (persistent); ``size_bytes``: the database file plus its WAL file.
    """

    depth: int
    oldest_ts: float | None
    dropped: int
    size_bytes: int


_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE destinations (name TEXT PRIMARY KEY, bit INTEGER NOT NULL UNIQUE)",
    # ts may be NULL: SQLite stores a NaN REAL as NULL (a NaN never comes from a driver, but a
    # bad clock source must not make append fail).
    "CREATE TABLE readings ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " pending INTEGER NOT NULL,"
    " device_id TEXT NOT NULL,"
    " ts REAL,"
    " points TEXT NOT NULL,"
    " clock TEXT)",
    "INSERT INTO meta (key, value) VALUES ('dropped', '0')",
)
# Columns of ``readings`` added after files with SCHEMA_VERSION 1 were first written (see
# "Schema changes" in the module docs), with their declaration: NULL in the rows stored before.
# clock: Reading.clock, NULL when the clock was trusted (nearly always: costs one header byte).
_ADDED_COLUMNS = {"clock": "clock TEXT"}

_GOOD = Quality.GOOD
# One encoder for every call: json.dumps with non-default options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_QUALITIES: dict[str, Quality] = {q.value: q for q in Quality}


def _encode_points(points: Mapping[str, PointValue]) -> str:
    """Compact JSON: ``{"name": [value, unit, quality, error]}``, trailing defaults left out.

    Defaults are unit None, quality good, error None, so the usual good point with a unit is
    ``[12.5,"m3/h"]``. ``json`` writes floats with ``repr``, which round-trips exactly; ints
    (any size) and bools keep their type.
    """
    out: dict[str, list[Any]] = {}
    for name, pv in points.items():
        if pv.error is not None:
            out[name] = [pv.value, pv.unit, str(pv.quality), pv.error]
        elif pv.quality != _GOOD:
            out[name] = [pv.value, pv.unit, str(pv.quality)]
        elif pv.unit is not None:
            out[name] = [pv.value, pv.unit]
        else:
            out[name] = [pv.value]
    return _ENCODER.encode(out)


def _decode_points(text: str) -> dict[str, PointValue]:
    points: dict[str, PointValue] = {}
    good = PointValue.good  # the fast constructor, for the usual case
    for name, item in json.loads(text).items():
        n = len(item)
        if n <= 2:
            points[name] = good(item[0], item[1] if n > 1 else None)
        else:
            points[name] = PointValue(
                item[0],
                _QUALITIES.get(item[2], item[2]),
                item[1],
                item[3] if n > 3 else None,
            )
    return points


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, distinct seqs as inclusive ranges of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


class Buffer:
    """A bounded, durable SQLite queue of readings for one or more destinations.

    ``destinations`` names the consumers (e.g. MQTT brokers); each must ack a row before it is
    deleted. Reopening with a different list adds new destinations (they need every stored row)
    and removes those no longer listed (rows only they needed are deleted); either rewrites
    every stored row once.

    ``max_bytes`` bounds the pages in use; ``synchronous`` is SQLite's setting (``FULL`` or,
    for benchmarks and gateways on a UPS, ``NORMAL``; see the module docs for the trade-off).

    Raises :class:`BufferFileError` when the file is not a buffer, is corrupt, was written
    by a newer version, or cannot be opened.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        destinations: Sequence[str] = ("default",),
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        names = tuple(destinations)
        if not names:
            raise ValueError("at least one destination is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"destinations must be distinct: {names!r}")
        if len(names) > MAX_DESTINATIONS:
            raise ValueError(f"at most {MAX_DESTINATIONS} destinations")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("destination names must be non-empty strings")
        self.max_bytes = max_bytes
        self._wal_path = Path(f"{self.path}-wal")
        self._bits: dict[str, int] = {}
        self._all_mask = 0
        self._depth = 0
        self._dropped = 0
        self._purged = 0
        self._closed = False
        with self._translate_errors():
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE, so the
            # write lock is taken up front, never upgraded mid-transaction).
            # check_same_thread=False: see the module docs; one worker thread uses the buffer.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            try:
                self._open(sync, names)
            except BaseException:
                self._conn.close()
                raise

    # -- opening -------------------------------------------------------------------------------

    def _open(self, sync: str, names: tuple[str, ...]) -> None:
        conn = self._conn
        # Look before writing anything: switching someone else's database to WAL would
        # already modify it.
        self._check_file()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BufferFileError(
                self.path,
                f"SQLite could not switch to WAL mode (got {mode!r}); put the buffer on a "
                "local file system (not NFS/SMB)",
            )
        conn.execute(f"PRAGMA synchronous={sync}")
        self._sync = sync
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        # A WAL of about 1/16 of the buffer (64..1000 pages) keeps the WAL small next to the
        # database and still batches many commits into one checkpoint (fewer flash writes).
        wal_pages = max(64, min(1000, self.max_bytes // self._page_size // 16))
        self._wal_limit = wal_pages * self._page_size
        conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        # After a checkpoint the WAL is truncated back to this size instead of keeping its
        # high-water mark (a big ack or drop writes many pages in one transaction).
        conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        with self._write():
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            missing = _ADDED_COLUMNS.keys() - _readings_columns(conn)
            for column in sorted(missing):
                conn.execute(f"ALTER TABLE readings ADD COLUMN {_ADDED_COLUMNS[column]}")
            deleted, added = self._sync_destinations(names)
        self._dropped = int(self._meta("dropped") or 0)
        self._purged = int(self._meta("purged") or 0)
        self._depth = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        if deleted or added:
            self._checkpoint()  # those rewrote up to every row: do not leave a big WAL
        self._shrink_to_limit()

    def _shrink_to_limit(self) -> None:
        """Bring a file that outgrew ``max_bytes`` (the limit was lowered) back under it."""
        pages: int = self._conn.execute("PRAGMA page_count").fetchone()[0]
        if pages * self._page_size <= self.max_bytes + _SLACK_PAGES * self._page_size:
            return
        used = self._used_bytes()
        dropped = 0
        if used > self.max_bytes:
            avg_row = max(1, used // max(1, self._depth))
            with self._write():
                dropped = self._make_room(self.max_bytes, avg_row)
                self._add_dropped(dropped)
            self._depth -= dropped
            self._dropped += dropped
        # Once, on a config change: the only time giving the free pages back is worth a
        # rewrite of the file.
        self._conn.execute("VACUUM")
        self._checkpoint()

    def _check_file(self) -> None:
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app_id == 0 and version == 0 and objects == 0:
            return  # new or empty file
        if app_id != APPLICATION_ID:
            raise BufferFileError(
                self.path,
                "this is an SQLite database, but not a swm-edge buffer; it was left untouched. "
                "Point the buffer path at another file.",
            )
        if version > SCHEMA_VERSION:
            raise BufferFileError(
                self.path,
                f"the buffer has schema version {version}, this swm-edge understands up to "
                f"{SCHEMA_VERSION}; upgrade swm-edge, or move the file aside to start a new buffer",
            )

    def _sync_destinations(self, names: tuple[str, ...]) -> tuple[int, int]:
        """Make the stored destinations equal ``names``; returns (rows deleted, dests added)."""
        conn = self._conn
        known: dict[str, int] = dict(conn.execute("SELECT name, bit FROM destinations").fetchall())
        deleted = 0
        for name, bit in known.items():
            if name in names:
                continue
            mask = 1 << bit
            conn.execute(f"DROP INDEX IF EXISTS readings_pending_{bit}")
            deleted += conn.execute("DELETE FROM readings WHERE pending = ?", (mask,)).rowcount
            conn.execute(
                "UPDATE readings SET pending = pending & ? WHERE pending & ? != 0", (~mask, mask)
            )
            conn.execute("DELETE FROM destinations WHERE name = ?", (name,))
        bits = {n: b for n, b in known.items() if n in names}
        free = iter(sorted(set(range(MAX_DESTINATIONS)) - set(bits.values())))
        added = 0
        for name in names:
            if name in bits:
                continue
            added += 1
            bit = bits[name] = next(free)
            conn.execute("INSERT INTO destinations (name, bit) VALUES (?, ?)", (name, bit))
            conn.execute("UPDATE readings SET pending = pending | ?", (1 << bit,))
        for bit in bits.values():
            # One partial index per destination, on seq: fetch walks exactly the rows pending
            # for that destination in seq order, even when another destination lags far
            # behind and keeps rows alive that this one already acked.
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS readings_pending_{bit} ON readings (seq) "
                f"WHERE pending & {1 << bit} != 0"
            )
        self._bits = {n: bits[n] for n in names}
        self._all_mask = sum(1 << b for b in bits.values())
        return deleted, added

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise BufferFileError(
                    self.path,
                    f"the buffer file is damaged or not an SQLite database ({exc}). Nothing was "
                    "deleted. Stop the agent and move the file aside (the agent then starts "
                    "with a new, empty buffer); if its readings matter, try "
                    f"`sqlite3 {self.path} .recover`.",
                    damaged=True,
                ) from exc
            if code == _SQLITE_CANTOPEN:
                raise BufferFileError(
                    self.path,
                    f"cannot open the buffer file ({exc}); does its folder exist and is it "
                    "writable by the agent?",
                    cannot_open=True,
                ) from exc
            raise

    @contextmanager
    def _write(self) -> Iterator[None]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # SQLite may already have rolled back by itself (e.g. on I/O errors).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _relaxed_sync(self) -> Iterator[None]:
        """Commit with ``synchronous=NORMAL`` inside (for what a power cut may undo)."""
        if self._sync != "FULL":
            yield
            return
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

    def _mask(self, destination: str) -> tuple[int, int]:
        try:
            bit = self._bits[destination]
        except KeyError:
            raise KeyError(
                f"unknown destination {destination!r} (known: {', '.join(self._bits)})"
            ) from None
        return bit, 1 << bit

    def _used_bytes(self) -> int:
        conn = self._conn
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
        free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def _drop_oldest(self, count: int) -> int:
        """Delete the ``count`` lowest-seq rows (inside a transaction); returns rows deleted."""
        last = self._conn.execute(
            "SELECT max(seq) FROM (SELECT seq FROM readings ORDER BY seq LIMIT ?)", (count,)
        ).fetchone()[0]
        if last is None:
            return 0
        # What each destination lost: the rows it had not acked yet (counted per destination
        # in the meta table, so `swm-edge status` can say which consumer missed how much).
        sums = ", ".join(f"sum((pending >> {bit}) & 1)" for bit in self._bits.values())
        lost = self._conn.execute(f"SELECT {sums} FROM readings WHERE seq <= ?", (last,)).fetchone()
        for name, n in zip(self._bits, lost, strict=True):
            if n:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                    (f"{_DROPPED_FOR}{name}", n),
                )
        return self._conn.execute("DELETE FROM readings WHERE seq <= ?", (last,)).rowcount

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, without waiting for readers."""
        conn = self._conn
        # TRUNCATE would wait busy_timeout for another process's reader; 0 makes it give up
        # at once (the next automatic checkpoint finishes the job).
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute("PRAGMA busy_timeout=5000")

    def _trim_wal(self) -> None:
        """Checkpoint when a large transaction (a big ack, drop or batch) blew up the WAL.

        The automatic checkpoint keeps the WAL near ``_wal_limit``, but one transaction writes
        all its pages there first, and the file keeps that size until the next checkpoint.
        A stat is cheap next to a commit, so this runs after every write transaction.
        """
        try:
            wal = self._wal_path.stat().st_size
        except FileNotFoundError:
            return
        if wal > self._wal_limit + self._wal_limit // 4:
            self._checkpoint()

    def _add_dropped(self, n: int) -> None:
        if n:
            self._conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped'", (n,)
            )

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- public API ----------------------------------------------------------------------------

    @property
    def destinations(self) -> tuple[str, ...]:
        """The destinations, in the order given to the constructor."""
        return tuple(self._bits)

    def append(self, readings: Sequence[Reading]) -> list[int]:
        """Store ``readings`` in one transaction and return their seqs (ascending, consecutive).

        When the buffer is full the oldest rows are dropped first (counted in ``dropped``);
        if the batch alone is larger than ``max_bytes`` its own oldest rows are dropped too,
        so a returned seq may already be gone.
        """
        if not readings:
            return []
        rows = []
        needed = 0
        per_row = _ROW_OVERHEAD + _INDEX_ENTRY * len(self._bits)
        for r in readings:
            points = _encode_points(r.points)
            clock = r.clock
            rows.append((self._all_mask, r.device_id, r.ts, points, clock))
            needed += per_row + len(points.encode()) + len(r.device_id.encode())
            if clock is not None:
                needed += len(clock.encode())
        avg = max(1, needed // len(rows))
        conn = self._conn
        dropped = 0
        with self._translate_errors():
            with self._write():
                # Make room before inserting, so new pages come from the freelist and the file
                # does not grow past max_bytes; then check for real (the estimate is rough)
                # and drop more if needed.
                dropped += self._make_room(self.max_bytes - needed, avg)
                conn.executemany(
                    "INSERT INTO readings (pending, device_id, ts, points, clock) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                dropped += self._make_room(self.max_bytes, avg)
                self._add_dropped(dropped)
            self._depth += len(rows) - dropped
            self._dropped += dropped
            self._trim_wal()
        # One writer inside BEGIN IMMEDIATE: AUTOINCREMENT hands out consecutive seqs.
        return list(range(last - len(rows) + 1, last + 1))

    def _make_room(self, target: int, avg_row: int) -> int:
        """Drop oldest rows until at most ``target`` bytes are in use; returns the rows dropped."""
        dropped = 0
        used = self._used_bytes()
        while used > target:
            # Pages are freed whole: ask for one page more than the excess so that one round
            # usually suffices.
            n = self._drop_oldest(max(1, math.ceil((used - target + self._page_size) / avg_row)))
            if n == 0:
                break  # nothing left to drop; the schema alone is what remains
            dropped += n
            used = self._used_bytes()
        return dropped

    def fetch(self, destination: str, after_seq: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows still pending for ``destination`` with seq > ``after_seq``.

        Rows come in ascending seq. The query walks the destination's partial index on seq
        from ``after_seq`` on, so its cost depends on ``limit``, not on the buffer's depth.
        """
        bit, mask = self._mask(destination)
        if limit <= 0:
            return []
        with self._translate_errors():
            rows = self._conn.execute(self._fetch_sql(bit, mask), (after_seq, limit)).fetchall()
        return [
            Row(
                seq,
                Reading(device_id, math.nan if ts is None else ts, _decode_points(points), clock),
            )
            for seq, device_id, ts, points, clock in rows
        ]

    @staticmethod
    def _fetch_sql(bit: int, mask: int) -> str:
        # INDEXED BY makes SQLite fail loudly rather than silently fall back to a scan; the
        # WHERE term must read exactly like the partial index's for the index to apply.
        return (
            "SELECT seq, device_id, ts, points, clock FROM readings "
            f"INDEXED BY readings_pending_{bit} "
            f"WHERE pending & {mask} != 0 AND seq > ? ORDER BY seq LIMIT ?"
        )

    def fetch_plan(self, destination: str) -> list[str]:
        """SQLite's query plan for :meth:`fetch` (for tests and troubleshooting)."""
        bit, mask = self._mask(destination)
        plan = self._conn.execute(
            "EXPLAIN QUERY PLAN " + self._fetch_sql(bit, mask), (0, 1)
        ).fetchall()
        return [str(row[3]) for row in plan]

    def ack(self, destination: str, seqs: Iterable[int]) -> None:
        """Mark ``seqs`` delivered to ``destination``, in one transaction.

        A row no destination still needs is deleted. Seqs that are unknown, already acked or
        already dropped are ignored.
        """
        _, mask = self._mask(destination)
        runs = _runs(seqs)
        if not runs:
            return
        conn = self._conn
        with self._translate_errors(), self._relaxed_sync():
            with self._write():
                # Acks mostly come as consecutive seqs: one range statement per run instead
                # of one per seq. Rows only this destination needed go; the rest lose its bit.
                deleted = 0
                for lo, hi in runs:
                    deleted += conn.execute(
                        "DELETE FROM readings WHERE seq BETWEEN ? AND ? AND pending = ?",
                        (lo, hi, mask),
                    ).rowcount
                    conn.execute(
                        "UPDATE readings SET pending = pending & ? "
                        "WHERE seq BETWEEN ? AND ? AND pending & ? != 0",
                        (~mask, lo, hi, mask),
                    )
            self._depth -= deleted
            self._trim_wal()

    def set_destinations(self, destinations: Sequence[str]) -> None:
        """Change the destinations of an open buffer, as reopening with them would: a new
        one needs every stored row; rows only a removed one still needed are deleted."""
        names = tuple(destinations)
        if names == tuple(self._bits):
            return
        with self._translate_errors(), self._write():
            deleted, _added = self._sync_destinations(names)
        self._depth -= deleted
        self._checkpoint()

    def raise_seq_floor(self, seq: int) -> None:
        """Make the next seq larger than ``seq`` (a buffer that replaces a damaged one goes on
        numbering after it, so a backend's de-duplication by seq stays right)."""
        with self._translate_errors(), self._write():
            row = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
            ).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)", (seq,)
                )
            elif int(row[0]) < seq:
                self._conn.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'readings'", (seq,)
                )

    def dropped_for(self, destination: str) -> int:
        """Rows dropped by the size bound before ``destination`` had acknowledged them."""
        self._mask(destination)  # unknown names are an error, not 0
        return int(self._meta(f"{_DROPPED_FOR}{destination}") or 0)

    def depth_for(self, destination: str) -> int:
        """Rows still pending for ``destination``.

        Counts the destination's index: O(depth), about 50 ms per million rows on a PC;
        keep it off hot paths (:meth:`stats` is cheap).
        """
        bit, mask = self._mask(destination)
        with self._translate_errors():
            row = self._conn.execute(
                f"SELECT count(*) FROM readings INDEXED BY readings_pending_{bit} "
                f"WHERE pending & {mask} != 0"
            ).fetchone()
        return int(row[0])

    def stats(self) -> BufferStats:
        """Depth, oldest pending timestamp, dropped rows and file size (cheap: no table scan).

        After another process purged rows (``swm-edge buffer purge``, which raises the
        persistent ``purged`` counter) the depth is counted again, once.
        """
        with self._translate_errors():
            self._resync_after_purge()
            row = self._conn.execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
        size = 0
        for p in (self.path, self._wal_path):
            with suppress(FileNotFoundError):
                size += p.stat().st_size
        oldest = None if row is None else (math.nan if row[0] is None else float(row[0]))
        return BufferStats(
            depth=self._depth, oldest_ts=oldest, dropped=self._dropped, size_bytes=size
        )

    def _resync_after_purge(self) -> None:
        # The in-memory depth and dropped counters only see this connection's writes; a purge
        # by another process shows up as a changed ``purged`` counter (one point query).
        purged = int(self._meta("purged") or 0)
        if purged != self._purged:
            self._purged = purged
            self._dropped = int(self._meta("dropped") or 0)
            self._depth = self._conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    def purge_before(self, ts: float) -> int:
        """Delete every row with a ``ts`` before ``ts`` (epoch seconds); returns the rows deleted.

        Rows pending for any destination go too. They are counted in ``dropped`` and in the
        meta value ``purged``. Rows without a valid time (NaN) are kept. Deletes in batches of
        a few thousand rows, each its own transaction.
        """
        with self._translate_errors():
            self._resync_after_purge()
            deleted = _purge_rows(self._conn, ts)
            self._depth -= deleted
            self._dropped += deleted
            self._purged += deleted
            self._trim_wal()
        return deleted

    def get_meta(self, key: str) -> str | None:
        """A small persistent value (e.g. the Sparkplug bdSeq), or None if never set."""
        with self._translate_errors():
            return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` durably (own transaction); some keys are the buffer's."""
        if key in _RESERVED_META or key.startswith(_DROPPED_FOR):
            raise ValueError(f"meta key {key!r} is reserved for the buffer")
        with self._translate_errors(), self._write():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, str(value)),
            )

    def close(self) -> None:
        """Close the database (idempotent); SQLite checkpoints and removes the WAL file."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- other processes: purge and read-only access -------------------------------------------------


def _purge_rows(conn: sqlite3.Connection, before: float, batch: int = _PURGE_BATCH) -> int:
    """Delete rows with ``ts < before`` in transactions of at most ``batch`` rows.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each batch is found by a
    plain read (no lock that blocks a writer), then deleted by seq runs in a short ``BEGIN
    IMMEDIATE`` transaction that also counts the rows in ``dropped`` and ``purged``; a purge
    cut short (Ctrl-C, lock timeout) leaves the counters matching the rows that went.
    """
    total = 0
    after = 0
    while True:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM readings WHERE seq > ? AND ts < ? ORDER BY seq LIMIT ?",
                (after, before, batch),
            )
        ]
        if not seqs:
            return total
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for lo, hi in _runs(seqs):
                # Every seq of a run matched, and seqs are never reused, so the range holds
                # no other row; rows the agent deleted since the read (acked) do not count.
                deleted += conn.execute(
                    "DELETE FROM readings WHERE seq BETWEEN ? AND ?", (lo, hi)
                ).rowcount
            if deleted:
                conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped'",
                    (deleted,),
                )
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('purged', ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                    (str(deleted),),
                )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        total += deleted
        after = seqs[-1]


@dataclass(frozen=True, slots=True)
class RowCount:
    """How many rows a selection holds, and the seqs of its first and last row."""

    rows: int
    first_seq: int | None
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """The rows one device has in the buffer and the time range of their readings."""

    rows: int
    oldest_ts: float | None
    newest_ts: float | None


@dataclass(frozen=True, slots=True)
class BufferSummary:
    """What a buffer file holds, for ``swm-edge buffer stats``.

    ``depth``: rows held; ``first_seq``/``last_seq``: their seq range; ``last_assigned_seq``:
    the highest seq ever handed out (rows above ``last_seq`` were delivered or dropped);
    ``oldest_ts``/``newest_ts``: earliest and latest reading time (``min``/``max`` of ``ts``,
    the times ``export`` and ``purge`` select by); ``undated``: rows whose time is not a number;
    ``dropped``: rows ever dropped for room or purged, ``purged`` those purged;
    ``pending``: rows each destination still needs; ``devices``: rows per device;
    ``db_bytes``/``wal_bytes``: the files on disk, ``free_bytes`` the part of the database
    file that deleted rows left for new ones.
    """

    path: Path
    schema_version: int
    depth: int
    first_seq: int | None
    last_seq: int | None
    last_assigned_seq: int
    oldest_ts: float | None
    newest_ts: float | None
    undated: int
    dropped: int
    purged: int
    pending: dict[str, int]
    devices: dict[str, DeviceSummary]
    db_bytes: int
    wal_bytes: int
    free_bytes: int

    @property
    def size_bytes(self) -> int:
        """The database file plus its WAL file."""
        return self.db_bytes + self.wal_bytes


def _db_uri(path: Path, **params: str) -> str:
    # quote() escapes "?", "#" and "%", which would otherwise end or garble the file name.
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.absolute()))}?{query}"


def _require_buffer_file(path: Path) -> os.stat_result:
    """Fail with a plain-language :class:`BufferFileError` unless ``path`` looks like a buffer.

    Looks at the file with the operating system first: SQLite reports a missing file, a folder
    and a permission problem all as "unable to open database file".
    """
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise BufferFileError(
                path, "is a folder, not a buffer file; give the buffer's .sqlite file"
            )
        if not stat.S_ISREG(st.st_mode):
            raise BufferFileError(path, "is not a regular file; give the buffer's .sqlite file")
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise BufferFileError(
            path,
            "no such file; check the path (the agent creates the buffer when it first runs)",
        ) from None
    except NotADirectoryError:
        raise BufferFileError(path, "no such file: a part of the path is not a folder") from None
    except PermissionError:
        raise BufferFileError(
            path, "permission denied; run as root or as the user the agent runs as"
        ) from None
    except OSError as exc:
        raise BufferFileError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not header:
        raise BufferFileError(path, "the file is empty: not a swm-edge buffer (yet)")
    if header != _SQLITE_MAGIC:
        raise BufferFileError(
            path, "not an SQLite database, so not a swm-edge buffer; check the path"
        )
    return st


def _readings_columns(conn: sqlite3.Connection) -> set[str]:
    """The column names of the ``readings`` table."""
    return {row[1] for row in conn.execute("PRAGMA table_info(readings)")}


def _check_buffer_schema(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of an existing buffer; raises unless it is one this code reads."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise BufferFileError(
            path, "this is an SQLite database, but not a swm-edge buffer; check the path"
        )
    if version > SCHEMA_VERSION:
        raise BufferFileError(
            path,
            f"the buffer has schema version {version}, this swm-edge reads up to "
            f"{SCHEMA_VERSION}; use the swm-edge version that wrote it",
        )
    return version


@contextmanager
def _outside_errors(
    path: Path, *, busy_timeout: float | None = None, writing: bool = False
) -> Iterator[None]:
    """SQLite errors of a reader or purger as :class:`BufferFileError` with what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            message = (
                f"the buffer file is damaged ({exc}); nothing was changed. To rescue what is "
                f"readable: `sqlite3 {path} .recover > rescue.sql`"
            )
        elif code == _SQLITE_BUSY:
            held = f" for {busy_timeout:g} s" if busy_timeout is not None else ""
            message = (
                f"the buffer stayed locked by another process{held}; nothing more was "
                "changed. Try again (is a large transaction or another purge running?)"
            )
        elif code == _SQLITE_READONLY:
            message = (
                f"the buffer file cannot be written ({exc}); purge needs write access: run "
                "as root or as the agent's user, on a writable file system"
            )
        elif code == _SQLITE_CANTOPEN and writing:
            message = (
                f"cannot open the buffer file for writing ({exc}); purge needs write access "
                "to the file and its folder (SQLite puts its -wal file there): run as root "
                "or as the agent's user, on a writable file system"
            )
        elif code == _SQLITE_CANTOPEN:
            message = (
                f"cannot open the buffer file ({exc}); SQLite needs to create {path.name}-shm "
                "next to it to read its -wal file: copy the file and its -wal file to a "
                "writable folder and try there"
            )
        else:
            message = f"cannot read the buffer file ({exc})"
        raise BufferFileError(path, message) from exc


class BufferReader:
    """Read-only access to a buffer file: its figures and its rows, without writing anything.

    Works next to a running agent: the file is opened with SQLite's ``mode=ro`` and reads in
    short queries, so the agent's writer is never blocked (WAL readers do not block writers)
    and its checkpoints are held back for one query at most. A file without a ``-wal`` file
    next to it (a stopped agent's buffer, a copy of the database file alone, a read-only
    medium) is opened ``immutable``: no ``-wal`` or ``-shm`` file is created. No ``-wal`` file
    means no process has the database open; should one open it and checkpoint while this
    reads, the change is noticed and :class:`BufferFileError` asks to run the command again.

    Raises :class:`BufferFileError` for a missing, unreadable, foreign or damaged file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._wal_path = Path(f"{self.path}-wal")
        st = _require_buffer_file(self.path)
        self._identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        #: True when the file was opened ``immutable`` (no -wal file next to it).
        self.immutable = not self._wal_path.exists()
        with _outside_errors(self.path):
            self._conn = self._connect()
            try:
                self.schema_version = _check_buffer_schema(self._conn, self.path)
                # A file no agent of this version has opened yet lacks the added columns;
                # this never writes, so it reads them as NULL.
                columns = _readings_columns(self._conn)
            except BaseException:
                self._conn.close()
                raise
        self._clock_column = "clock" if "clock" in columns else "NULL"

    def _connect(self) -> sqlite3.Connection:
        params = {"mode": "ro", "immutable": "1"} if self.immutable else {"mode": "ro"}
        conn = sqlite3.connect(
            _db_uri(self.path, **params),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=5.0,
        )
        try:
            # Opening is lazy: the first query is what finds the -wal/-shm problems.
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.OperationalError as exc:
            conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            # A read-only folder holding the database and an empty -wal file: SQLite cannot
            # create the -shm file it wants, but an empty WAL holds nothing to read anyway.
            if code != _SQLITE_CANTOPEN or self.immutable or self._wal_size() != 0:
                raise
            self.immutable = True
            return self._connect()
        except BaseException:
            conn.close()
            raise
        return conn

    def _wal_size(self) -> int | None:
        try:
            return self._wal_path.stat().st_size
        except OSError:
            return None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with _outside_errors(self.path):
                yield
        except BufferFileError:
            # A file rewritten under an immutable read looks damaged to SQLite; say what
            # really happened.
            self._check_unchanged()
            raise

    def _check_unchanged(self) -> None:
        """In immutable mode, fail if a writer changed the database file while it was read."""
        if not self.immutable:
            return
        try:
            st = self.path.stat()
        except OSError:
            st = None
        if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != self._identity:
            raise BufferFileError(
                self.path,
                "the file changed while it was read (did the agent start on it?); what was "
                "read may be inconsistent: run the command again",
            )

    def stats(self) -> BufferSummary:
        """Figures of the whole buffer, read in one snapshot (scans the table once)."""
        conn = self._conn
        with self._errors():
            conn.execute("BEGIN")  # one snapshot for every figure; a read lock only
            try:
                first, last = conn.execute("SELECT min(seq), max(seq) FROM readings").fetchone()
                row = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
                ).fetchone()
                assigned = int(row[0]) if row else 0
                devices: dict[str, DeviceSummary] = {}
                depth = dated = 0
                for device, rows, n_ts, lo, hi in conn.execute(
                    "SELECT device_id, count(*), count(ts), min(ts), max(ts) FROM readings "
                    "GROUP BY device_id ORDER BY device_id"
                ):
                    devices[device] = DeviceSummary(rows, lo, hi)
                    depth += rows
                    dated += n_ts
                starts = [d.oldest_ts for d in devices.values() if d.oldest_ts is not None]
                ends = [d.newest_ts for d in devices.values() if d.newest_ts is not None]
                pending = {
                    name: conn.execute(
                        f"SELECT count(*) FROM readings WHERE pending & {1 << bit} != 0"
                    ).fetchone()[0]
                    for name, bit in conn.execute(
                        "SELECT name, bit FROM destinations ORDER BY bit"
                    ).fetchall()
                }
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            finally:
                if conn.in_transaction:  # SQLite may have ended it itself after an error
                    conn.execute("COMMIT")
        self._check_unchanged()
        try:
            db_bytes = self.path.stat().st_size
        except OSError:
            db_bytes = 0
        return BufferSummary(
            path=self.path,
            schema_version=self.schema_version,
            depth=depth,
            first_seq=first,
            last_seq=last,
            last_assigned_seq=assigned,
            oldest_ts=min(starts, default=None),
            newest_ts=max(ends, default=None),
            undated=depth - dated,
            dropped=int(meta.get("dropped", 0)),
            purged=int(meta.get("purged", 0)),
            pending=pending,
            devices=devices,
            db_bytes=db_bytes,
            wal_bytes=0 if self.immutable else (self._wal_size() or 0),
            free_bytes=free * page_size,
        )

    @staticmethod
    def _time_filter(since: float | None, until: float | None) -> tuple[str, list[float]]:
        sql, args = "", []
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        return sql, args

    def count(self, since: float | None = None, until: float | None = None) -> RowCount:
        """Rows with ``since <= ts < until`` (either bound may be left out)."""
        where, args = self._time_filter(since, until)
        with self._errors():
            rows, first, last = self._conn.execute(
                f"SELECT count(*), min(seq), max(seq) FROM readings WHERE 1{where}", args
            ).fetchone()
        self._check_unchanged()
        return RowCount(rows, first, last)

    def iter_rows(
        self, since: float | None = None, until: float | None = None, *, chunk: int = _READ_CHUNK
    ) -> Iterator[Row]:
        """Rows with ``since <= ts < until`` in ascending seq, streamed in pages of ``chunk``.

        Memory stays constant however large the buffer. Rows stored after the first page was
        read are not included (the export has an end next to a running agent); rows the agent
        deletes meanwhile may or may not be. Without a time bound, rows whose time is not a
        number are included, with ``ts`` NaN.
        """
        where, args = self._time_filter(since, until)
        sql = (
            f"SELECT seq, device_id, ts, points, {self._clock_column} FROM readings "
            f"WHERE seq > ? AND seq <= ?{where} ORDER BY seq LIMIT ?"
        )
        with self._errors():
            top = self._conn.execute("SELECT max(seq) FROM readings").fetchone()[0]
        after = 0
        while top is not None:
            with self._errors():
                page = self._conn.execute(sql, (after, top, *args, chunk)).fetchall()
            for seq, device_id, ts, points, clock in page:
                yield Row(
                    seq,
                    Reading(
                        device_id, math.nan if ts is None else ts, _decode_points(points), clock
                    ),
                )
            if len(page) < chunk:
                break
            after = page[-1][0]
        self._check_unchanged()

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._conn.close()

    def __enter__(self) -> BufferReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def purge_file(path: Path, before: float, *, busy_timeout: float = PURGE_BUSY_TIMEOUT) -> int:
    """Delete the rows of the buffer file ``path`` with ``ts < before``; returns how many went.

    For use from another process than the agent's, also while it runs: the file is opened
    without the :class:`Buffer` set-up (which could rewrite rows or vacuum), deletes go in
    short transactions (see :func:`_purge_rows`), and each waits at most ``busy_timeout``
    seconds for the write lock. The rows are counted in ``dropped`` and ``purged``; a running
    agent notices at its next :meth:`Buffer.stats`.

    Raises :class:`BufferFileError` for a missing, foreign or damaged file, a read-only one, or
    when the lock stays taken.
    """
    path = Path(path)
    _require_buffer_file(path)
    with _outside_errors(path, busy_timeout=busy_timeout, writing=True):
        # mode=rw: never create a file that is not there (a plain connect would).
        conn = sqlite3.connect(
            _db_uri(path, mode="rw"), uri=True, isolation_level=None, timeout=busy_timeout
        )
        try:
            _check_buffer_schema(conn, path)
            return _purge_rows(conn, before)
        finally:
            conn.close()
