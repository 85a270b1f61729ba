"""Estimated wire time of Modbus RTU read transactions.

Used to check that a bus's devices can be polled within their intervals and to budget
timeouts. The figures are estimates: they assume back-to-back characters and a nominal
device turnaround, and ignore the master's own scheduling latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from swm_edge.modbus.planner import ReadRequest

__all__ = ["DEVICE_TURNAROUND_SECONDS", "poll_seconds", "rtu_request_seconds"]

#: Nominal time a slave takes between the end of a request and the start of its response.
#: Not fixed by the protocol; simple meters and probes typically answer within a few to a
#: few tens of milliseconds, so 10 ms is a middle-of-the-road planning figure.
DEVICE_TURNAROUND_SECONDS = 0.010

# Read request: address, function, start (2), quantity (2), CRC (2).
_REQUEST_BYTES = 8
# Read response without data: address, function, byte count, CRC (2).
_RESPONSE_OVERHEAD_BYTES = 5
_SILENT_CHARS = 3.5
# Modbus over Serial Line v1.02, 2.5.1.1: above 19200 baud t3.5 is a fixed 1.75 ms, so the
# silent interval does not keep shrinking with the character time.
_FIXED_SILENCE_ABOVE_BAUD = 19200
_FIXED_SILENCE_SECONDS = 0.00175
_PARITIES = frozenset("NEOMS")


def silent_interval(*, baudrate: int, parity: str, stopbits: int, bytesize: int) -> float:
    """The RTU inter-frame silence t3.5 (Modbus over Serial Line v1.02, 2.5.1.1), seconds."""
    if baudrate > _FIXED_SILENCE_ABOVE_BAUD:
        return _FIXED_SILENCE_SECONDS
    char = _char_seconds(baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize)
    return _SILENT_CHARS * char


def rtu_request_seconds(
    request: ReadRequest, *, baudrate: int, parity: str, stopbits: int, bytesize: int
) -> float:
    """Estimated seconds one RTU read transaction occupies the line.

    Request frame (8 bytes) + response frame (5 + 2 per register, or 5 + one per 8 bits),
    each followed by the 3.5-character silent interval, plus
    :data:`DEVICE_TURNAROUND_SECONDS`. A character is 1 start bit, ``bytesize`` data bits,
    a parity bit unless ``parity`` is ``"N"``, and ``stopbits`` stop bits.

    Raises:
        ValueError: a serial parameter is impossible.
    """
    char = _char_seconds(baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize)
    data_bytes = math.ceil(request.count / 8) if request.table.is_bits else 2 * request.count
    frame_chars = _REQUEST_BYTES + _RESPONSE_OVERHEAD_BYTES + data_bytes
    silence = silent_interval(
        baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize
    )
    return frame_chars * char + 2 * silence + DEVICE_TURNAROUND_SECONDS


def poll_seconds(
    requests: Iterable[ReadRequest],
    *,
    baudrate: int,
    parity: str,
    stopbits: int,
    bytesize: int,
    request_delay: float = 0.0,
) -> float:
    """Estimated seconds to run all of a device's ``requests`` one after the other.

    ``request_delay`` (a bus or device quirk) is counted once per request.
    """
    if request_delay < 0:
        raise ValueError(f"request_delay must be >= 0, got {request_delay}")
    total = 0.0
    for r in requests:
        total += request_delay + rtu_request_seconds(
            r, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize
        )
    return total


def _char_seconds(*, baudrate: int, parity: str, stopbits: int, bytesize: int) -> float:
    if baudrate <= 0:
        raise ValueError(f"baudrate must be > 0, got {baudrate}")
    if parity not in _PARITIES:
        raise ValueError(f"parity must be one of N, E, O, M, S, got {parity!r}")
    if stopbits not in (1, 2):
        raise ValueError(f"stopbits must be 1 or 2, got {stopbits}")
    if not 5 <= bytesize <= 8:
        raise ValueError(f"bytesize must be 5..8, got {bytesize}")
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return bits / baudrate
