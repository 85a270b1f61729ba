"""Decoding one 100-point Modbus poll: generic per-point decode against the block decoder.

Prints µs per poll (the decode of every planned request's response into ``PointValue``s,
no I/O), best of several rounds; asserts nothing::

    python bench/bench_decode.py
    python bench/bench_decode.py --points 100 --rounds 7 --number 2000

"generic" is the reference path (``codec.decode`` through ``ReadRequest.slice``, then
scaling, one point at a time); "block" is what ``ModbusDriver.read`` runs, one
``_BlockDecoder`` per request.
"""

from __future__ import annotations

import argparse
import itertools
import random
import timeit
from collections.abc import Callable
from typing import Any

from swm_edge_drivers.modbus import _BlockDecoder, _decode_point

from swm_edge.modbus import ReadRequest, encode, plan_reads, register_count
from swm_edge.model import DataType, PointSpec, PointValue, Table, WordOrder

BIG, LITTLE = WordOrder.BIG, WordOrder.LITTLE
# (type, word order, byte swap, scale) cycled over for the mixed map: a flow meter's mix of
# floats, scaled integers, counters in either word order and status flags.
MIXED = [
    (DataType.FLOAT32, BIG, False, 1.0),
    (DataType.INT16, BIG, False, 0.01),
    (DataType.UINT32, LITTLE, False, 1.0),
    (DataType.FLOAT32, LITTLE, True, 1.0),
    (DataType.UINT16, BIG, False, 1.0),
    (DataType.FLOAT64, BIG, False, 1.0),
    (DataType.INT32, LITTLE, False, 0.001),
    (DataType.UINT64, BIG, False, 1.0),
    (DataType.BOOL, BIG, False, 1.0),
]


def device_map(n: int, kinds: list[tuple[DataType, WordOrder, bool, float]]) -> list[PointSpec]:
    """``n`` contiguous holding-register points, their kinds taken in turn from ``kinds``."""
    points = []
    address = 0
    for i, (dtype, order, swap, scale) in zip(range(n), itertools.cycle(kinds), strict=False):
        points.append(
            PointSpec(
                f"p{i}",
                Table.HOLDING,
                address,
                dtype,
                word_order=order,
                byte_swap=swap,
                scale=scale,
                unit="m3/h",
            )
        )
        address += register_count(dtype)
    return points


def responses(requests: list[ReadRequest], seed: int = 1) -> list[list[int]]:
    """A plausible response to each request: every point holds a value of its type."""
    rng = random.Random(seed)
    out = []
    for req in requests:
        words = [0] * req.count
        for p in req.points:
            raw: int | float | bool
            if p.type is DataType.BOOL:
                raw = rng.random() < 0.5
            elif p.type in (DataType.FLOAT32, DataType.FLOAT64):
                raw = rng.uniform(-100, 1000)
            else:
                raw = rng.randrange(0, 30000)
            start = p.address - req.address
            encoded = encode(p, raw)
            words[start : start + len(encoded)] = encoded
        out.append(words)
    return out


def poll_functions(points: list[PointSpec]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The generic and the block decode of one poll of ``points``, as the driver plans it."""
    requests = plan_reads(points)
    data = responses(requests)
    decoders = [_BlockDecoder(req) for req in requests]

    def generic() -> dict[str, PointValue]:
        values = {}
        for req, words in zip(requests, data, strict=True):
            for point in req.points:
                values[point.name] = _decode_point(req, point, words)
        return values

    def block() -> dict[str, PointValue]:
        values: dict[str, PointValue] = {}
        for decoder, words in zip(decoders, data, strict=True):
            decoder.decode(words, values)
        return values

    assert generic() == block()
    return generic, block


def best_us(fn: Callable[[], Any], rounds: int, number: int) -> float:
    return min(timeit.repeat(fn, repeat=rounds, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100, help="points per poll")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (best is kept)")
    parser.add_argument("--number", type=int, default=2000, help="polls per round")
    args = parser.parse_args()
    maps = {
        "float32": device_map(args.points, [(DataType.FLOAT32, BIG, False, 1.0)]),
        "mixed": device_map(args.points, MIXED),
    }
    print(f"{'map':<8} {'generic µs/poll':>16} {'block µs/poll':>14} {'speed-up':>9}")
    for name, points in maps.items():
        generic, block = poll_functions(points)
        g = best_us(generic, args.rounds, args.number)
        b = best_us(block, args.rounds, args.number)
        print(f"{name:<8} {g:>16.1f} {b:>14.1f} {g / b:>8.1f}x")


if __name__ == "__main__":
    main()
