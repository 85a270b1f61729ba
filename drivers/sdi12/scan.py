"""Finding SDI-12 sensors on a data line: ``a!`` at every address, ``aI!`` at each found.

Works over a :class:`~swm_edge.driver.SerialTransport` that the caller opened (``swm-edge
scan sdi12`` opens it through the agent's bus), with the wire format of
:mod:`~swm_edge_drivers.sdi12.protocol`. Each command is sent as a data recorder sends it:
a break, the marking, the command; the answer is one line ending in ``<CR><LF>``.

The acknowledge-active command ``a!`` is answered by the sensor at ``a`` with its address
alone, so it finds sensors without disturbing them (unlike ``?!``, which every sensor
answers at once). A garbled answer at an address is reported too: something is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from swm_edge_drivers.sdi12.protocol import (
    CHAR_SECONDS,
    CRLF,
    Identification,
    command,
    frame,
    parse_address,
    parse_identification,
    response_size,
)

from swm_edge.driver import CrcError, DecodeError, DeviceTimeout, ReadError, SerialTransport

__all__ = [
    "BREAK_SECONDS",
    "DEFAULT_TIMEOUT",
    "MARKING_SECONDS",
    "SCAN_ORDER",
    "FoundSensor",
    "acknowledge",
    "identify",
    "scan",
]

T = TypeVar("T")

#: Addresses in the order a scan asks them: the standard's 0-9 first, then a-z, A-Z.
SCAN_ORDER = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Seconds until the first character of an answer: a sensor starts within 15 ms, a USB
#: adapter adds some tens of milliseconds (the driver's default response timeout).
DEFAULT_TIMEOUT = 0.2
#: Break before each command (the standard asks for at least 12 ms) and the marking after
#: it (at least 8.33 ms); the driver's defaults.
BREAK_SECONDS = 0.015
MARKING_SECONDS = 0.010
# Tries of aI! at a sensor that acknowledged: it is there, so one lost line is worth a retry.
_IDENTIFY_ATTEMPTS = 2
# Longest identification body: 2 version + 8 vendor + 6 model + 3 version + 13 optional.
_IDENT_BODY = 32


@dataclass(frozen=True, slots=True)
class FoundSensor:
    """A sensor that answered ``a!``; ``identification`` is ``None`` when ``aI!`` failed
    (``error`` says why), ``answer`` is ``"ack"`` or what was garbled about it."""

    address: str
    answer: str = "ack"
    identification: Identification | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON object of ``swm-edge scan sdi12 --json``."""
        ident = self.identification
        return {
            "address": self.address,
            "answer": self.answer,
            "sdi12_version": ident.sdi12_version if ident else None,
            "vendor": ident.vendor if ident else None,
            "model": ident.model if ident else None,
            "version": ident.version if ident else None,
            "extra": ident.extra if ident else None,
            "error": self.error,
        }


async def _once(t: SerialTransport, cmd: bytes, size: int, timeout: float) -> bytes:
    """Break, marking, ``cmd``; the answer line (without ``<CR><LF>``)."""
    await t.reset_input()  # a late answer to an earlier command must not pass for this one
    await t.send_break(BREAK_SECONDS)
    await asyncio.sleep(MARKING_SECONDS)
    await t.write(cmd)
    first = await t.read(1, timeout=timeout)
    if not first:
        raise DeviceTimeout(f"no response to {cmd.decode('ascii')} within {timeout:g} s")
    most = len(cmd) + size  # some adapters echo the command before the answer
    rest = await t.read_until(CRLF, timeout=timeout + most * CHAR_SECONDS, max_size=most - 1)
    return frame(first + rest, cmd)


async def _exchange(
    t: SerialTransport,
    cmd: bytes,
    size: int,
    parse: Callable[[bytes], T],
    *,
    timeout: float,
    attempts: int,
) -> T:
    last: ReadError | None = None
    for _ in range(attempts):
        try:
            return parse(await _once(t, cmd, size, timeout))
        except (DeviceTimeout, CrcError) as exc:
            last = exc
    assert last is not None
    raise last


async def acknowledge(t: SerialTransport, address: str, *, timeout: float) -> str | None:
    """``a!``: ``"ack"`` when the sensor at ``address`` answers with its address, a short
    description when the answer is garbled or comes from elsewhere, ``None`` on silence.

    Raises:
        ConnectionLost: the port went away.
    """

    def parse(line: bytes) -> str:
        if parse_address(line) != address:
            raise CrcError(f"answer {line.decode('ascii', 'replace')!r}")
        return "ack"

    try:
        return await _exchange(
            t, command(address, ""), response_size(0), parse, timeout=timeout, attempts=1
        )
    except DeviceTimeout:
        return None
    except (CrcError, DecodeError) as exc:
        return f"garbled: {exc}"


async def identify(t: SerialTransport, address: str, *, timeout: float) -> Identification:
    """``aI!``: SDI-12 version, vendor, model, version and the optional rest.

    Raises:
        DeviceTimeout, CrcError: no valid answer after two tries.
        DecodeError: the answer is not an identification.
    """
    return await _exchange(
        t,
        command(address, "I"),
        response_size(_IDENT_BODY),
        lambda line: parse_identification(line, address),
        timeout=timeout,
        attempts=_IDENTIFY_ATTEMPTS,
    )


async def scan(
    t: SerialTransport,
    addresses: Sequence[str] = SCAN_ORDER,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_step: Callable[[], None] | None = None,
    on_found: Callable[[FoundSensor], None] | None = None,
) -> list[FoundSensor]:
    """Every sensor at ``addresses``: ``a!`` each, ``aI!`` each one that answered.

    ``on_step`` runs after each address, ``on_found`` for each sensor as soon as it is
    identified.

    Raises:
        ConnectionLost: the port went away.
    """
    found: list[FoundSensor] = []
    for address in addresses:
        answer = await acknowledge(t, address, timeout=timeout)
        if answer is not None:
            try:
                sensor = FoundSensor(address, answer, await identify(t, address, timeout=timeout))
            except (DeviceTimeout, CrcError, DecodeError) as exc:
                sensor = FoundSensor(address, answer, error=f"aI!: {exc}")
            found.append(sensor)
            if on_found is not None:
                on_found(sensor)
        if on_step is not None:
            on_step()
    return found
