"""Finding wired M-Bus meters on a line: primary scan and secondary (wildcard) search.

Works over a :class:`~swm_edge.driver.SerialTransport` that the caller opened (``swm-edge
scan mbus`` opens it through the agent's bus), with the link-layer frames of
:mod:`~swm_edge_drivers.mbus.frames`:

* **primary scan**: per address ``SND_NKE(a)``; a meter there answers ``E5``, and
  ``REQ_UD2(a)`` then fetches its ``RSP_UD``, whose header gives identification number,
  manufacturer, version and medium. A garbled answer to ``SND_NKE`` is reported as a
  collision (two meters at one address).
* **secondary search** (EN 13757-3 annex, as libmbus does it): select with an
  identification number of ``F`` wildcards, fixing one digit at a time from the left. No
  answer: nobody's number starts so. One clean ``E5``: exactly one meter, read with
  ``REQ_UD2`` to address 253. A garbled answer: several meters collided, so the next digit
  is searched below that prefix.

Timeouts follow EN 13757-2: a slave answers within 330 bit times plus 50 ms.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from swm_edge_drivers.mbus.frames import (
    ADDRESS_NETWORK,
    MAX_FRAME,
    Frame,
    FrameKind,
    SecondaryAddress,
    frame_size,
    is_rsp_ud,
    manufacturer_code,
    manufacturer_letters,
    parse_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)
from swm_edge_drivers.mbus.records import CI_LONG_HEADER, MEDIUM_NAMES

from swm_edge.driver import CrcError, DecodeError, DeviceTimeout, SerialTransport

__all__ = [
    "FoundMeter",
    "Probe",
    "answer_timeout",
    "ping",
    "probe_primary",
    "scan_primary",
    "search_secondary",
    "select",
]

# EN 13757-2: a slave starts its answer between 11 bit times and 330 bit times + 50 ms after
# the request. Plus one character (the E5 itself) and a USB adapter's latency.
_ANSWER_BITS = 330 + 11
_ANSWER_SLACK = 0.05 + 0.05
# After a broken answer, bytes still arriving belong to it: read and dropped until the line
# is quiet this long.
_DRAIN_QUIET = 0.05


def answer_timeout(baudrate: int) -> float:
    """Seconds to wait for the first byte of an answer at ``baudrate`` (EN 13757-2's
    answer window plus a character and some adapter latency)."""
    return round(_ANSWER_BITS / baudrate + _ANSWER_SLACK, 3)


class Probe(enum.Enum):
    """What a SND_NKE or a selection got back."""

    NOTHING = "nothing"  # silence: nobody there
    SINGLE = "single"  # one clean E5: exactly one meter
    COLLISION = "collision"  # bytes that are not one E5: several meters answered at once


@dataclass(frozen=True, slots=True)
class FoundMeter:
    """A meter that answered; header fields ``None`` when its RSP_UD did not give them."""

    #: The primary address it answered at; ``None`` when found by secondary search.
    primary: int | None
    ident: str | None = None
    manufacturer: str | None = None
    version: int | None = None
    medium: int | None = None
    #: ``"RSP_UD"``, or what went wrong (a collision, E5 without a readable RSP_UD).
    answer: str = "RSP_UD"

    @property
    def medium_name(self) -> str | None:
        """The medium in words, e.g. ``"water"``."""
        if self.medium is None:
            return None
        return MEDIUM_NAMES.get(self.medium, f"reserved (0x{self.medium:02X})")

    @property
    def secondary(self) -> str | None:
        """The full secondary address as libmbus prints it: identification number,
        manufacturer code, version and medium in 16 hex digits, e.g. ``1149037804771407``;
        ``None`` unless every part is known."""
        if (
            self.ident is None
            or self.manufacturer is None
            or "?" in self.manufacturer
            or self.version is None
            or self.medium is None
        ):
            return None
        code = manufacturer_code(self.manufacturer)
        return f"{self.ident}{code:04X}{self.version:02X}{self.medium:02X}"

    def as_json(self) -> dict[str, Any]:
        """The JSON object of ``swm-edge scan mbus --json``."""
        return {
            "primary": self.primary,
            "secondary": self.secondary,
            "ident": self.ident,
            "manufacturer": self.manufacturer,
            "version": self.version,
            "medium": self.medium,
            "medium_name": self.medium_name,
            "answer": self.answer,
        }


# --- link layer --------------------------------------------------------------------------


async def _send(t: SerialTransport, frame: bytes) -> None:
    # Anything queued now is stale (a late answer, noise) and would pass for this answer.
    await t.reset_input()
    await t.write(frame)


async def _read_exact(t: SerialTransport, size: int, timeout: float) -> bytes:
    """``size`` bytes, or fewer once the line has been quiet for ``timeout``."""
    buf = bytearray()
    while len(buf) < size:
        chunk = await t.read(size - len(buf), timeout=timeout)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def _drain(t: SerialTransport) -> None:
    dropped = 0
    while dropped < 4 * MAX_FRAME:
        chunk = await t.read(MAX_FRAME, timeout=_DRAIN_QUIET)
        if not chunk:
            break
        dropped += len(chunk)
    await t.reset_input()


async def _receive(t: SerialTransport, timeout: float, what: str) -> Frame:
    """One frame (E5, short or long).

    Raises:
        DeviceTimeout: nothing arrived within ``timeout``.
        CrcError: bytes arrived that are not one valid frame.
    """
    head = await t.read(1, timeout=timeout)
    if not head:
        raise DeviceTimeout(f"no answer to {what} within {timeout:g} s")
    try:
        size = frame_size(head)
        if size is None:
            head += await _read_exact(t, 3, timeout)
            size = frame_size(head)
            if size is None:
                raise CrcError(f"answer to {what} broke off after {len(head)} bytes")
        return parse_frame(head + await _read_exact(t, size - len(head), timeout))
    except CrcError as exc:
        await _drain(t)
        raise CrcError(f"answer to {what}: {exc}") from None


async def _probe(t: SerialTransport, frame: bytes, timeout: float, what: str) -> Probe:
    await _send(t, frame)
    try:
        answer = await _receive(t, timeout, what)
    except DeviceTimeout:
        return Probe.NOTHING
    except CrcError:
        return Probe.COLLISION
    return Probe.SINGLE if answer.kind is FrameKind.ACK else Probe.COLLISION


async def ping(t: SerialTransport, address: int, *, timeout: float) -> Probe:
    """``SND_NKE`` to a primary address: is a meter there (and only one)?"""
    return await _probe(t, snd_nke(address), timeout, f"SND_NKE to {address}")


async def select(t: SerialTransport, mask: SecondaryAddress, *, timeout: float) -> Probe:
    """Select by secondary address (``F`` = any digit): how many meters match?"""
    return await _probe(t, select_secondary(mask), timeout, f"the selection of {mask.ident}")


def _header(ci: int, data: bytes) -> tuple[str | None, str | None, int | None, int | None]:
    """Identification number, manufacturer, version and medium of a RSP_UD's header.

    Read from the bytes directly rather than with
    :func:`~swm_edge_drivers.mbus.records.parse_header`, which refuses encrypted telegrams:
    their header is in the clear, and it is all a scan needs.
    """
    if ci != CI_LONG_HEADER:
        return None, None, None, None  # short or no header: the meter does not say
    if len(data) < 12:
        raise DecodeError(f"long header needs 12 bytes, got {len(data)}")
    ident = data[0:4][::-1].hex().upper()  # BCD, least significant byte first
    manufacturer = manufacturer_letters(int.from_bytes(data[4:6], "little"))
    return ident, manufacturer, data[6], data[7]


async def _read_header(
    t: SerialTransport, address: int, timeout: float
) -> tuple[str | None, str | None, int | None, int | None]:
    """REQ_UD2 (first telegram, FCB set as after a reset) and the header of its RSP_UD.

    Raises:
        DeviceTimeout, CrcError: no valid answer.
        DecodeError: a valid frame that is not a RSP_UD with a header.
    """
    await _send(t, req_ud2(address, True))
    frame = await _receive(t, timeout, f"REQ_UD2 to {address}")
    if not is_rsp_ud(frame) or frame.ci is None:
        raise DecodeError(f"answer to REQ_UD2 is a {frame.kind} frame, not RSP_UD")
    if address != ADDRESS_NETWORK and frame.a != address:
        raise CrcError(f"RSP_UD from address {frame.a}, asked {address}")
    return _header(frame.ci, frame.data)


# --- scans ----------------------------------------------------------------------------------


async def probe_primary(t: SerialTransport, address: int, *, timeout: float) -> FoundMeter | None:
    """The meter at primary ``address``, or ``None`` when nobody answers there.

    Raises:
        ConnectionLost: the port went away.
    """
    probe = await ping(t, address, timeout=timeout)
    if probe is Probe.NOTHING:
        return None
    if probe is Probe.COLLISION:
        return FoundMeter(address, answer="collision: garbled answer (two meters at this address?)")
    try:
        ident, manufacturer, version, medium = await _read_header(t, address, timeout)
    except (DeviceTimeout, CrcError, DecodeError) as exc:
        return FoundMeter(address, answer=f"E5, but no usable RSP_UD: {exc}")
    return FoundMeter(address, ident, manufacturer, version, medium)


async def scan_primary(
    t: SerialTransport,
    addresses: Sequence[int],
    *,
    timeout: float,
    on_step: Callable[[], None] | None = None,
    on_found: Callable[[FoundMeter], None] | None = None,
) -> list[FoundMeter]:
    """:func:`probe_primary` at each address, in order; ``on_step`` after each address,
    ``on_found`` for each meter as soon as it is found."""
    found: list[FoundMeter] = []
    for address in addresses:
        meter = await probe_primary(t, address, timeout=timeout)
        if meter is not None:
            found.append(meter)
            if on_found is not None:
                on_found(meter)
        if on_step is not None:
            on_step()
    return found


async def _read_selected(t: SerialTransport, mask: str, timeout: float) -> FoundMeter:
    try:
        ident, manufacturer, version, medium = await _read_header(t, ADDRESS_NETWORK, timeout)
    except (DeviceTimeout, CrcError, DecodeError) as exc:
        return FoundMeter(None, answer=f"E5 to selection {mask}, but no usable RSP_UD: {exc}")
    return FoundMeter(None, ident, manufacturer, version, medium)


async def search_secondary(
    t: SerialTransport,
    *,
    timeout: float,
    on_step: Callable[[], None] | None = None,
    on_found: Callable[[FoundMeter], None] | None = None,
) -> list[FoundMeter]:
    """Every meter on the line by the wildcard search of the module docstring.

    ``on_step`` runs after each selection (how many there will be depends on how the
    meters' numbers share prefixes), ``on_found`` for each meter as soon as it is read.
    Meters whose identification numbers are equal (they differ in manufacturer, version or
    medium) cannot be told apart by digits: they are reported as one collision.
    """
    found: list[FoundMeter] = []

    def report(meter: FoundMeter) -> None:
        found.append(meter)
        if on_found is not None:
            on_found(meter)

    # Whoever is still selected (a previous poll, an earlier search) is deselected first;
    # a selected meter answers E5, no meter selected gives silence, both are fine.
    await _send(t, snd_nke(ADDRESS_NETWORK))
    with contextlib.suppress(DeviceTimeout, CrcError):
        await _receive(t, timeout, "SND_NKE to 253")

    async def below(prefix: str) -> None:
        for digit in "0123456789":
            mask = (prefix + digit).ljust(8, "F")
            probe = await select(t, SecondaryAddress(mask), timeout=timeout)
            if on_step is not None:
                on_step()
            if probe is Probe.SINGLE:
                report(await _read_selected(t, mask, timeout))
            elif probe is Probe.COLLISION:
                if len(prefix) + 1 < len(mask):
                    await below(prefix + digit)
                else:
                    report(
                        FoundMeter(
                            None,
                            ident=mask,
                            answer="collision: several meters share this identification number",
                        )
                    )

    await below("")
    return found
