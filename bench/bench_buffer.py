"""Throughput of the store-and-forward buffer: append and fetch+ack drain, FULL vs NORMAL.

Prints figures, asserts nothing. Run it on the gateway's own storage (SD card, eMMC), since
fsync cost is what separates FULL from NORMAL::

    python bench/bench_buffer.py --dir /var/lib/swm-edge --count 20000
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from swm_edge.buffer import Buffer
from swm_edge.model import PointValue, Reading, Reason


def meter_reading(i: int) -> Reading:
    """A realistic 10-point water meter reading (about 230 bytes stored)."""
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
    return Reading(f"meter-{i % 16}", 1_700_000_000 + i * 0.5, points)


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


def run(folder: Path, sync: str, batch: int, readings: list[Reading]) -> tuple[float, float]:
    """Append ``readings`` in batches, then drain them; returns (append/s, drain/s)."""
    path = folder / f"bench-{sync}-{batch}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    buf = Buffer(path, max_bytes=1 << 30, synchronous=sync)
    try:

        def append() -> int:
            for start in range(0, len(readings), batch):
                buf.append(readings[start : start + batch])
            return len(readings)

        def drain() -> int:
            # What a publisher does: fetch a window, deliver it, ack it.
            n, after = 0, 0
            while rows := buf.fetch("default", after, batch):
                buf.ack("default", [r.seq for r in rows])
                after = rows[-1].seq
                n += len(rows)
            return n

        n_in, t_in = timed(append)
        n_out, t_out = timed(drain)
        assert n_out == n_in
        return n_in / t_in, n_out / t_out
    finally:
        buf.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="folder for the database files")
    parser.add_argument("--count", type=int, default=20_000, help="readings per run")
    args = parser.parse_args()
    readings = [meter_reading(i) for i in range(args.count)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"{args.count} readings of 10 points, files in {tmp}")
        print(f"{'synchronous':<12}{'batch':>6}{'append/s':>12}{'fetch+ack/s':>14}")
        for sync in ("FULL", "NORMAL"):
            for batch in (100, 1000):
                append_rate, drain_rate = run(Path(tmp), sync, batch, readings)
                print(f"{sync:<12}{batch:>6}{append_rate:>12,.0f}{drain_rate:>14,.0f}")


if __name__ == "__main__":
    main()
