"""What one Modbus TCP read costs the agent's process in the stack alone.

pymodbus' asyncio client against one hil simulator (a separate process), the same 20-register
read the W1 devices get, no decoding, no buffer, no MQTT: CPU time and wall time per read
over a few thousand reads. This is the floor under W1's per-poll cost::

    python bench/bench_tcp_read.py
    python bench/bench_tcp_read.py --reads 5000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import simulators


async def measure(host: str, port: int, unit: int, reads: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per read."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
    await client.connect()
    try:
        for _ in range(50):  # warm-up: connection, caches
            await client.read_holding_registers(0, count=20, device_id=unit)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(reads):
            await client.read_holding_registers(0, count=20, device_id=unit)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        client.close()
    return 1000 * cpu / reads, 1000 * wall / reads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args(argv)
    with simulators(1, 10) as (_proc, sims):
        cpu, wall = asyncio.run(measure(sims["host"], sims["ports"][0], sims["unit"], args.reads))
    print(f"pymodbus TCP read, 20 registers: {cpu:.3f} ms CPU, {wall:.3f} ms wall per read")
    print(f"at W1's 20 reads/s: {100 * cpu * 20 / 1000:.2f} % of one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
