"""The event loop's side of the buffer: one writer thread, batched commits, wake-ups.

SQLite calls block, so every call to :class:`~swm_edge.buffer.Buffer` runs on a single
worker thread (one connection, no lock needed). Readings from the scheduler queue up and
are committed in batches; only after the commit are publishers woken, so a reading is
durable before anyone can send it.

When the storage fails (the disk is full, the folder read-only, the file damaged) polling
goes on: readings are held in memory (bounded: the oldest go first, counted in ``lost``)
and the write is retried with backoff; :attr:`Spool.condition` says what is wrong, for the
status command and the status topic. A damaged file is moved aside by ``open_buffer(True)``
and a new buffer started: nothing on disk is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from swm_edge.buffer import Buffer, BufferFileError, BufferStats, Row
from swm_edge.lograte import FailureLog
from swm_edge.model import Reading

log = logging.getLogger(__name__)

#: What a failing disk raises; anything else is a bug and stays loud.
STORAGE_ERRORS = (BufferFileError, sqlite3.Error, OSError)
#: Readings held in memory while the buffer cannot be written (about 1 KB each).
HOLD_MAX = 20_000
#: Seconds between write attempts while the storage fails, at most.
RETRY_MAX = 30.0

T = TypeVar("T")


class Spool:
    """Batched, durable hand-off from the scheduler to the publishers."""

    def __init__(
        self,
        open_buffer: Callable[[bool], Buffer],
        *,
        queue_size: int = 10_000,
        batch_max: int = 2_000,
        linger: float = 0.02,
        hold_max: int = HOLD_MAX,
    ) -> None:
        # open_buffer(fresh): fresh=True moves a damaged file aside and starts a new one.
        self._open_buffer = open_buffer
        self._buffer: Buffer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        # Bounded so a stalled disk slows polling instead of growing memory without end.
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(maxsize=queue_size)
        self._batch_max = batch_max
        self._linger = linger
        self._listeners: list[asyncio.Event] = []
        self.committed = 0
        self._busy_since: float | None = None  # monotonic start of the write in progress
        #: What is wrong with the storage now (None: nothing), for status and the topic.
        self.condition: str | None = None
        #: Readings dropped from memory while the buffer could not be written.
        self.lost = 0
        self._held: deque[Reading] = deque()
        self._hold_max = hold_max
        self._failures = FailureLog(log, "buffer")
        self._retry = 1.0
        self._recent: list[Row] = []  # the last commit's rows, for caught-up publishers
        #: Changes when a new buffer replaced a damaged one: publishers start over.
        self.epoch = 0

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def buffer(self) -> Buffer:
        assert self._buffer is not None, "Spool.open() first"
        return self._buffer

    async def open(self) -> None:
        """Open the buffer on the worker thread. A buffer that cannot be opened now (a
        read-only or missing folder) is retried by :meth:`run`; a file that is not a
        swm-edge buffer at all (or of a newer version) raises :class:`BufferFileError`."""
        try:
            self._buffer = await self._run(lambda: self._open_buffer(False))
        except BufferFileError as exc:
            if not exc.cannot_open:
                raise  # someone else's file at buffer.path: a config mistake, not a fault
            self._storage_failed(exc)
        except (sqlite3.Error, OSError) as exc:
            self._storage_failed(exc)

    @property
    def held(self) -> int:
        """Readings waiting in memory for the storage to come back."""
        return len(self._held)

    def _storage_failed(self, exc: BaseException) -> None:
        self.condition = f"cannot write the buffer: {exc}"
        self._failures.failure(
            str(exc), "readings are held in memory and the write retried; polling goes on"
        )

    def listen(self) -> asyncio.Event:
        """An event set after every commit (a publisher clears it when it has caught up)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def unlisten(self, event: asyncio.Event) -> None:
        """Stop setting an event returned by :meth:`listen` (its publisher is gone)."""
        if event in self._listeners:
            self._listeners.remove(event)

    def busy_for(self, now: float) -> float:
        """Seconds the buffer write in progress has taken so far (0 when idle): a write that
        never returns means the storage hangs, which the watchdog must notice."""
        return 0.0 if self._busy_since is None else now - self._busy_since

    async def set_destinations(self, names: list[str]) -> None:
        """Change who the buffer keeps readings for (a config reload)."""
        buffer = self.buffer
        await self._run(lambda: buffer.set_destinations(names))

    async def set_max_bytes(self, max_bytes: int) -> None:
        """Change the buffer's size bound (a config reload); the next commit applies it."""
        buffer = self.buffer

        def change() -> None:
            buffer.max_bytes = max_bytes

        await self._run(change)

    async def put(self, reading: Reading) -> None:
        """Queue a reading for the next commit (the scheduler's sink)."""
        await self._queue.put(reading)

    async def run(self) -> None:
        """Commit queued readings in batches until cancelled; while the storage fails,
        hold them in memory and retry with backoff."""
        while True:
            if self._held:
                # Failing storage: keep taking readings so polling never blocks, retry
                # the write at the backoff's pace.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._take(), self._retry)
                await self._commit([])
                continue
            batch = [await self._queue.get()]
            if self._linger and self._queue.qsize() < self._batch_max:
                # A short linger turns a burst of polls into one transaction (one fsync).
                await asyncio.sleep(self._linger)
            await self._commit(batch)

    async def _take(self) -> None:
        self._hold([await self._queue.get()])
        while not self._queue.empty():
            self._hold([self._queue.get_nowait()])

    def _hold(self, readings: Iterable[Reading]) -> None:
        for reading in readings:
            if len(self._held) >= self._hold_max:
                self._held.popleft()  # the documented drop-oldest, counted
                self.lost += 1
            self._held.append(reading)

    async def _commit(self, batch: list[Reading]) -> None:
        while len(batch) < self._batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if self._held:
            self._hold(batch)
            batch = list(self._held)
        if not batch:
            return
        self._busy_since = time.monotonic()
        try:
            seqs = await self._run(lambda: self._append(batch))
        except STORAGE_ERRORS as exc:
            self._held = deque(batch)
            while len(self._held) > self._hold_max:
                self._held.popleft()
                self.lost += 1
            self._storage_failed(exc)
            self._retry = min(self._retry * 2, RETRY_MAX)
            return
        finally:
            self._busy_since = None
        if self.condition is not None:
            self.condition = None
            self._failures.success()
        self._held.clear()
        self._retry = 1.0
        self.committed += len(batch)
        self._recent = [Row(seq, reading) for seq, reading in zip(seqs, batch, strict=True)]
        for event in self._listeners:
            event.set()

    def _append(self, batch: list[Reading]) -> list[int]:
        """On the worker thread: open the buffer if needed (moving a damaged file aside),
        then append; the batch's seqs."""
        if self._buffer is None:
            self._buffer = self._open_buffer(False)
        try:
            return self._buffer.append(batch)
        except BufferFileError as exc:
            if not exc.damaged:
                raise
            # Damaged under us: keep the old file for recovery, go on with a new one.
            with contextlib.suppress(Exception):
                self._buffer.close()
            self._buffer = None
            self._buffer = self._open_buffer(True)
            self._buffer.raise_seq_floor(self.last_committed)
            self.epoch += 1
            return self._buffer.append(batch)

    async def drain(self) -> None:
        """Commit everything still queued (on shutdown, after polling stopped)."""
        while not self._queue.empty():
            await self._commit([self._queue.get_nowait()])
        if self._held:
            await self._commit([])  # one last try; what still fails is lost with the process
            if self._held:
                log.error(
                    "buffer: %d readings held in memory could not be written before the stop",
                    len(self._held),
                )

    @property
    def last_committed(self) -> int:
        """The seq of the last reading this process committed (0: none yet)."""
        return self._recent[-1].seq if self._recent else 0

    def committed_after(self, seq: int) -> list[Row]:
        """The rows of the last commit when they directly follow ``seq`` (a publisher that
        has caught up takes them from here instead of reading them back); else ``[]``."""
        recent = self._recent
        if recent and recent[0].seq == seq + 1:
            return recent
        return []

    async def fetch(self, destination: str, after_seq: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows pending for ``destination`` after ``after_seq``."""
        buffer = self._buffer
        if buffer is None:
            return []
        try:
            return await self._run(lambda: buffer.fetch(destination, after_seq, limit))
        except STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return []

    async def ack(self, destination: str, seqs: Iterable[int]) -> None:
        buffer, items = self._buffer, list(seqs)
        if items and buffer is not None:
            try:
                await self._run(lambda: buffer.ack(destination, items))
            except STORAGE_ERRORS as exc:
                # Not deleted now means sent again later (at-least-once), never lost.
                self._storage_failed(exc)

    async def stats(self) -> BufferStats:
        buffer = self.buffer
        return await self._run(buffer.stats)

    async def close(self) -> None:
        """Close the buffer and stop the worker thread."""
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            with contextlib.suppress(Exception):
                await self._run(buffer.close)
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        """Readings queued but not yet committed."""
        return self._queue.qsize()
