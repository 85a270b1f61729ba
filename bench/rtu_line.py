"""W4 helper: N simulated Modbus RTU devices on one virtual RS-485 line with wire timing.

Runs in a process of its own (started by ``bench/run.py``)::

    agent --pty--> NullModem relay (delivers every byte only after its wire time at BAUD,
    CHAR_BITS bits per character) --pty--> serve_rtu(N simulators, units 1..N)

Prints one JSON line once the line is up (``{"port": <agent side>, ...}``). On SIGTERM it
prints a second JSON line with what the relay saw: every request's start on the wire and
the end of its reply on the wire, and bytes each way, then exits. The relay is the line, so
these are the figures a logic analyser on the RS-485 pair would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.profiles import synthetic_points
from swm_edge_hil.servers import serve_rtu


class TimedNullModem(NullModem):
    """A :class:`NullModem` that logs when each chunk occupies the line (start, end, side)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.on_wire: list[tuple[float, float, str, int]] = []

    def _send(self, side: str, data: bytes, now: float, *, delay: float = 0.0) -> None:
        # Same arithmetic as NullModem._send: the chunk is on the line from start to due.
        start = max(now + delay, self._busy_until[side])
        due = start + len(data) * self._char_time
        self.on_wire.append((start, due, side, len(data)))
        super()._send(side, data, now, delay=delay)


async def main_async(args: argparse.Namespace) -> None:
    points = synthetic_points(args.points)
    devices = [
        SimulatedDevice(points, unit=i + 1, seed=i, name=f"rtu-{i}") for i in range(args.devices)
    ]
    modem = TimedNullModem(baudrate=args.baud, char_bits=args.char_bits)
    modem.start()
    server = await serve_rtu(
        devices, modem.device_port, baudrate=args.baud, parity=args.parity, stopbits=args.stopbits
    )
    # Monotonic and wall clocks together, so the bench can put wire events on its timeline.
    print(
        json.dumps(
            {
                "port": modem.agent_port,
                "units": [d.unit for d in devices],
                "wall_minus_mono": time.time() - time.monotonic(),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    modem.close()
    print(
        json.dumps({"on_wire": modem.on_wire, "stats": dict(modem.stats)}),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--parity", default="N")
    parser.add_argument("--stopbits", type=int, default=2)
    parser.add_argument("--char-bits", type=int, default=11, help="8N2 = 11 bits per character")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
