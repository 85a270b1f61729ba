"""Modbus RTU frame helpers: CRC-16/MODBUS and frame lengths from their headers.

The null-modem relay and the fault hooks need to find frame boundaries on a byte stream
and to build or spoil frames; nothing here does I/O. Lengths include the address byte,
the function code and the two CRC bytes (Modbus over Serial Line v1.02, 2.5.1).
"""

from __future__ import annotations

__all__ = [
    "UNKNOWN_LENGTH",
    "check_crc",
    "crc16",
    "exception_frame",
    "read_request",
    "request_length",
    "response_length",
    "with_crc",
]

#: Returned by the length functions for a function code whose frame layout they do not
#: know: the caller falls back to the silent interval that ends every RTU frame.
UNKNOWN_LENGTH = 0


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (polynomial 0xA001 reflected, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first as RTU sends it."""
    return body + crc16(body).to_bytes(2, "little")


def check_crc(frame: bytes) -> bool:
    """True if the last two bytes of ``frame`` are the CRC of the bytes before them."""
    return len(frame) >= 4 and crc16(frame[:-2]).to_bytes(2, "little") == frame[-2:]


def exception_frame(unit: int, function: int, code: int) -> bytes:
    """The RTU exception response of ``unit`` to a request with function code ``function``."""
    return with_crc(bytes((unit, (function & 0x7F) | 0x80, code)))


def read_request(unit: int, function: int, address: int, count: int) -> bytes:
    """An RTU read request (function 1..4) for ``count`` registers or bits from ``address``."""
    return with_crc(bytes((unit, function)) + address.to_bytes(2, "big") + count.to_bytes(2, "big"))


# Function codes whose request is always 8 bytes: the four reads, the two single writes
# and diagnostics (sub-function + one data word).
_FIXED_REQUEST = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8, 8: 8, 7: 4, 11: 4, 12: 4, 17: 4, 22: 10}
_FIXED_RESPONSE = {5: 8, 6: 8, 8: 8, 15: 8, 16: 8, 7: 5, 11: 8, 22: 10}
# Responses of these function codes carry a byte count in their third byte.
_COUNTED_RESPONSE = {1, 2, 3, 4, 12, 17, 20, 21, 23}


def request_length(buf: bytes) -> int | None:
    """Total length of the request frame at the start of ``buf``.

    Returns ``None`` while ``buf`` is too short to tell, :data:`UNKNOWN_LENGTH` for a
    function code without a fixed layout here.
    """
    if len(buf) < 2:
        return None
    function = buf[1]
    if function in _FIXED_REQUEST:
        return _FIXED_REQUEST[function]
    if function in (15, 16):
        return None if len(buf) < 7 else 9 + buf[6]
    if function in (20, 21):
        return None if len(buf) < 3 else 5 + buf[2]
    if function == 23:
        return None if len(buf) < 11 else 13 + buf[10]
    return UNKNOWN_LENGTH


def response_length(buf: bytes) -> int | None:
    """Total length of the response frame at the start of ``buf``; see :func:`request_length`."""
    if len(buf) < 2:
        return None
    function = buf[1]
    if function & 0x80:
        return 5
    if function in _FIXED_RESPONSE:
        return _FIXED_RESPONSE[function]
    if function in _COUNTED_RESPONSE:
        return None if len(buf) < 3 else 5 + buf[2]
    return UNKNOWN_LENGTH
