"""Command line of the simulators.

``python -m swm_edge_hil site``
    start the demo site (see :class:`swm_edge_hil.site.DemoSite`), print where its devices
    are as one line of JSON, and serve until SIGINT or SIGTERM.
``python -m swm_edge_hil tcp --devices N --points P --port PORT``
    start N Modbus TCP simulators (unit 1) with P float32 holding-register points each
    (``p0``, ``p1``, ... at addresses 0, 2, ...), print their ports as JSON, serve until
    SIGINT or SIGTERM. Port 0 picks free ports; otherwise PORT, PORT+1, ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence

from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.profiles import synthetic_points
from swm_edge_hil.servers import SimServer, serve_tcp
from swm_edge_hil.site import DemoSite, tick_forever


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m swm_edge_hil", description="Simulated water devices for swm-edge."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    site = sub.add_parser("site", help="run the demo site until SIGINT/SIGTERM")
    site.add_argument("--host", default="127.0.0.1", help="TCP address of the flow meter")
    site.add_argument("--tcp-port", type=int, default=0, help="its TCP port (0: a free one)")
    site.add_argument("--link", default=None, help="stable symlink for the agent-side serial port")
    site.add_argument("--seed", type=int, default=0)
    site.add_argument("--tick", type=float, default=1.0, help="seconds between value updates")
    site.add_argument("--line-speed", action="store_true", help="emulate 9600 baud on the line")

    tcp = sub.add_parser("tcp", help="run N TCP simulators with P float32 points each")
    tcp.add_argument("--devices", type=int, default=1, metavar="N")
    tcp.add_argument("--points", type=int, default=10, metavar="P")
    tcp.add_argument("--port", type=int, default=0, help="first port (0: free ports)")
    tcp.add_argument("--host", default="127.0.0.1")
    tcp.add_argument("--unit", type=int, default=1)
    tcp.add_argument("--seed", type=int, default=0)
    tcp.add_argument("--tick", type=float, default=1.0, help="seconds between value updates")
    return parser


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _print(data: object) -> None:
    # One line, flushed: a parent process reads it from a pipe.
    print(json.dumps(data, separators=(",", ":")), flush=True)


async def _site(args: argparse.Namespace) -> None:
    site = DemoSite(
        seed=args.seed,
        tick=args.tick,
        host=args.host,
        tcp_port=args.tcp_port,
        serial_link=args.link,
        line_speed=args.line_speed,
    )
    async with site:
        _print(site.info())
        await _wait_for_signal()


async def _tcp(args: argparse.Namespace) -> None:
    if args.devices < 1 or args.points < 1:
        raise SystemExit("--devices and --points must be at least 1")
    points = synthetic_points(args.points)
    devices = [
        SimulatedDevice(points, unit=args.unit, seed=args.seed + i, name=f"sim-{i}")
        for i in range(args.devices)
    ]
    servers: list[SimServer] = []
    ticker = None
    try:
        for i, device in enumerate(devices):
            port = 0 if args.port == 0 else args.port + i
            servers.append(await serve_tcp(device, host=args.host, port=port))
        _print(
            {
                "host": args.host,
                "ports": [s.port for s in servers],
                "unit": args.unit,
                "points": args.points,
                "type": "float32",
                "table": "holding",
            }
        )
        if args.tick > 0:
            ticker = asyncio.create_task(tick_forever(devices, args.tick))
        await _wait_for_signal()
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        for server in servers:
            await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    run = _site if args.command == "site" else _tcp
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
