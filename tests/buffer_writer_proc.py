"""Child process for the SIGKILL test: appends batches forever, printing each committed batch.

Usage: python buffer_writer_proc.py PATH BATCH

After every ``Buffer.append`` returns (the transaction is committed) it prints the batch's last
seq and flushes, so every number the parent reads is a promise that this seq is stored.
"""

from __future__ import annotations

import sys
from pathlib import Path

from swm_edge.buffer import Buffer
from swm_edge.model import PointValue, Reading


def main() -> None:
    path, batch = Path(sys.argv[1]), int(sys.argv[2])
    buf = Buffer(path, max_bytes=64 * 1024 * 1024)
    n = 0
    while True:
        readings = []
        for _ in range(batch):
            n += 1
            points = {f"p{k}": PointValue.good(n + k / 10, "m3") for k in range(10)}
            readings.append(Reading("kill-test", 1.7e9 + n, points))
        seqs = buf.append(readings)
        print(seqs[-1], flush=True)


if __name__ == "__main__":
    main()
