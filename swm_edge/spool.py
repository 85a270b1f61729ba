"""The event loop's side of the buffer: one writer thread, batched commits, wake-ups.

SQLite calls block, so every call to :class:`~swm_edge.buffer.Buffer` runs on a single
worker thread (one connection, no lock needed). Readings from the scheduler queue up and
are committed in batches; only after the commit are publishers woken, so a reading is
durable before anyone can send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from swm_edge.buffer import Buffer, BufferStats, Row
from swm_edge.model import Reading

T = TypeVar("T")


class Spool:
    """Batched, durable hand-off from the scheduler to the publishers."""

    def __init__(
        self,
        open_buffer: Callable[[], Buffer],
        *,
        queue_size: int = 10_000,
        batch_max: int = 2_000,
        linger: float = 0.02,
    ) -> None:
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

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def buffer(self) -> Buffer:
        assert self._buffer is not None, "Spool.open() first"
        return self._buffer

    async def open(self) -> None:
        """Open the buffer on the worker thread."""
        self._buffer = await self._run(self._open_buffer)

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
        """Commit queued readings in batches until cancelled."""
        while True:
            batch = [await self._queue.get()]
            if self._linger and self._queue.qsize() < self._batch_max:
                # A short linger turns a burst of polls into one transaction (one fsync).
                await asyncio.sleep(self._linger)
            await self._commit(batch)

    async def _commit(self, batch: list[Reading]) -> None:
        while len(batch) < self._batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        buffer = self.buffer
        self._busy_since = time.monotonic()
        try:
            await self._run(lambda: buffer.append(batch))
        finally:
            self._busy_since = None
        self.committed += len(batch)
        for event in self._listeners:
            event.set()

    async def drain(self) -> None:
        """Commit everything still queued (on shutdown, after polling stopped)."""
        while not self._queue.empty():
            await self._commit([self._queue.get_nowait()])

    async def fetch(self, destination: str, after_seq: int, limit: int) -> list[Row]:
        buffer = self.buffer
        return await self._run(lambda: buffer.fetch(destination, after_seq, limit))

    async def ack(self, destination: str, seqs: Iterable[int]) -> None:
        buffer, items = self.buffer, list(seqs)
        if items:
            await self._run(lambda: buffer.ack(destination, items))

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
