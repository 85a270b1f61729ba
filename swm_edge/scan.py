"""Finding devices on a line: which Modbus unit ids answer, and at which serial settings.

The logic behind ``swm-edge scan``, usable without the command line. Every request goes
through the agent's own :class:`~swm_edge.bus.Bus` and lines, so a port is opened, locked
and reported on exactly as the agent does it; :func:`check_serial_port` comes first and turns
the usual mistakes (no such port, no permission, port in use) into one line naming the fix.

A Modbus unit counts as found when it answers the probe in any valid way: a register value,
or an exception response (a device that refuses register 0 is still there). The probe is
one register, holding 0, then input 0 if the device does not implement holding registers
(exception 1). Exceptions 10 and 11 are a TCP gateway saying that *nobody* answered behind
it, so they do not count. For every unit found, Read Device Identification (function 43/14)
asks for vendor and model, which are matched against the device profiles
(:func:`suggest_profile`).

The raw serial buses (M-Bus, SDI-12) are scanned by their drivers' scan modules over the
:class:`~swm_edge.driver.SerialTransport` that :func:`serial_transport` opens here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import grp
import os
import pwd
import re
import socket
import stat
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from swm_edge.bus import SERIAL_QUIET_AFTER_TIMEOUT, Bus, Line, PymodbusLine, make_line
from swm_edge.driver import (
    ConnectionLost,
    CrcError,
    DecodeError,
    DeviceException,
    DeviceTimeout,
    ModbusTransport,
    SerialTransport,
)
from swm_edge.model import BusSpec, Table

__all__ = [
    "AUTO_BAUD_SETTINGS",
    "GATEWAY_EXCEPTIONS",
    "MODBUS_SERIAL_IDS",
    "MODBUS_TCP_IDS",
    "TCP_TIMEOUT",
    "ModbusDevice",
    "ProfileRef",
    "ScanError",
    "ScanEvents",
    "ScanLine",
    "SerialSettings",
    "check_serial_port",
    "identify_unit",
    "parse_ids",
    "probe_unit",
    "scan_modbus_serial",
    "scan_modbus_tcp",
    "serial_timeout",
    "serial_transport",
    "settings_to_try",
    "suggest_profile",
]

#: Unit ids a serial (RTU) device may have; 0 is broadcast, 248-255 are reserved.
MODBUS_SERIAL_IDS = (1, 247)
#: Unit ids on Modbus TCP: devices behind a gateway use 1-247, a device of its own often
#: answers to 255 or 0 as well.
MODBUS_TCP_IDS = (0, 255)
#: Default per-id timeout on Modbus TCP: a device on the LAN answers within milliseconds.
TCP_TIMEOUT = 0.1
#: Part of the default serial timeout for the device's turnaround and a USB adapter's
#: latency; the wire time of the request and answer comes on top (:func:`serial_timeout`).
SERIAL_TURNAROUND = 0.1
#: Exception codes of a gateway whose target did not answer: nobody is at that id.
GATEWAY_EXCEPTIONS = frozenset({10, 11})
# Bytes of the probe on the wire: the read request (8) and a one-register answer (7).
_PROBE_BYTES = 8 + 7
# Read Device Identification: read codes (stream access) and the objects used.
_READ_REGULAR, _READ_BASIC = 2, 1
_VENDOR_NAME, _PRODUCT_CODE, _PRODUCT_NAME, _MODEL_NAME = 0x00, 0x01, 0x04, 0x05
_MORE_FOLLOWS = 0xFF
# A long identification comes in pages; a device that keeps saying "more" is cut off here.
_MAX_ID_PAGES = 8
# How long a scan waits for the bus to reopen a line that dropped (a TCP device closing the
# connection after unanswered ids, a USB adapter re-plugged) before it gives up.
REOPEN_WAIT = 5.0


class ScanError(Exception):
    """The scan cannot start or go on. The message is one line for the user and names the
    fix; the command line prints it and exits 1."""


# --- arguments -----------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_ids(text: str, first: int, last: int) -> list[int]:
    """Ids from a list of numbers and ranges, e.g. ``"1-10,17"``: ascending, each once.

    Raises:
        ValueError: something that is not a number or range, a range running backwards,
            or an id outside ``first``..``last`` (the message says which).
    """
    ids: set[int] = set()
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"no ids in {text!r}: give numbers and ranges such as 1-10,17")
    for part in parts:
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not an id or a range such as 1-10")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"{part.strip()} runs backwards; write {high}-{low}")
        if low < first or high > last:
            raise ValueError(f"{part.strip()} is outside {first}-{last}")
        ids.update(range(low, high + 1))
    return sorted(ids)


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Speed and character framing of a serial line."""

    baudrate: int
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def char_bits(self) -> int:
        """Bits per character on the wire: start, data, parity, stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


#: What ``--auto-baud`` tries, in order: the usual speeds of water meters and probes, each
#: with even parity first (the Modbus serial line standard's default) and then none.
AUTO_BAUD_SETTINGS: tuple[SerialSettings, ...] = tuple(
    SerialSettings(baud, parity) for baud in (9600, 19200, 38400, 2400) for parity in ("E", "N")
)


def settings_to_try(first: SerialSettings | None, auto_baud: bool) -> list[SerialSettings]:
    """The settings a scan sweeps: ``first`` alone, or with ``auto_baud`` ``first`` (if
    given) and then :data:`AUTO_BAUD_SETTINGS` without repeating it."""
    if not auto_baud:
        if first is None:
            raise ValueError("no serial settings to scan")
        return [first]
    tried = [first] if first is not None else []
    return tried + [s for s in AUTO_BAUD_SETTINGS if s not in tried]


def serial_timeout(settings: SerialSettings) -> float:
    """Default per-id timeout on a serial line: the probe's wire time at this speed (request
    and one-register answer) plus :data:`SERIAL_TURNAROUND`."""
    return round(_PROBE_BYTES * settings.char_bits / settings.baudrate + SERIAL_TURNAROUND, 3)


# --- profiles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileRef:
    """What a device is matched on: a profile's name and its manufacturer and model."""

    name: str
    manufacturer: str | None
    model: str | None


def _norm(text: str | None) -> str:
    return " ".join((text or "").casefold().split())


def _overlap(a: str, b: str) -> bool:
    return bool(a and b) and (a in b or b in a)


def suggest_profile(
    vendor: str | None, model: str | None, profiles: Iterable[ProfileRef]
) -> str | None:
    """The profile whose manufacturer and model match what a device reported, or ``None``.

    Case-insensitive substring match either way round (a device reporting ``KELLER`` and
    ``Series 30`` matches ``KELLER AG`` / ``Series 30 / Series 40 pressure transmitter``),
    whitespace runs counting as one blank; both vendor and model must match. With several
    matches the one whose model is closest in length to the reported model wins (then the
    name, so the answer does not depend on the order of ``profiles``).
    """
    v, m = _norm(vendor), _norm(model)
    if not v or not m:
        return None
    matches = [
        p for p in profiles if _overlap(v, _norm(p.manufacturer)) and _overlap(m, _norm(p.model))
    ]
    if not matches:
        return None
    best = min(matches, key=lambda p: (abs(len(_norm(p.model)) - len(m)), p.name))
    return best.name


# --- serial port checks ------------------------------------------------------------------------


def _by_id_hint() -> str:
    by_id = Path("/dev/serial/by-id")
    try:
        present = sorted(str(p) for p in by_id.iterdir())
    except OSError:
        present = []
    if present:
        return f" (present: {', '.join(present[:4])}{', ...' if len(present) > 4 else ''})"
    return ""


def _not_found(port: str) -> str:
    return (
        f"serial port {port} not found; check the cable/adapter and use "
        f"/dev/serial/by-id/...{_by_id_hint()}"
    )


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _no_permission(port: str) -> str:
    """Who may open the port, and what this user has to do about it."""
    try:
        st = os.stat(port)
    except OSError:
        return f"permission denied on serial port {port}: add your user to the dialout group"
    user = _user_name()
    group = _group_name(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    where = f"serial port {port} (owner {_owner_name(st.st_uid)}, group {group}, mode {mode:04o})"
    if mode & 0o060 == 0o060 and st.st_gid != 0:
        try:
            members = grp.getgrgid(st.st_gid).gr_mem
        except KeyError:
            members = []
        if user in members:
            return (
                f"permission denied on {where}: user {user} is in the {group} group, but this "
                "login session is not yet; log in again"
            )
        return (
            f"permission denied on {where}: add user {user} to the {group} group "
            f"(sudo usermod -aG {group} {user}) and log in again"
        )
    return (
        f"permission denied on {where}: give serial ports to the dialout group "
        f'(udev rule GROUP="dialout", MODE="0660") and add user {user} to it '
        f"(sudo usermod -aG dialout {user})"
    )


def _lock_holders(port: str) -> list[int]:
    """Processes holding a lock (flock, as pyserial's exclusive open and pymodbus take it)
    on the device node ``port``, from /proc/locks."""
    try:
        st = os.stat(port)
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids: list[int] = []
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:3 0 EOF" ("->" marks a waiting lock)
        match = re.match(
            r"^\d+:\s+(?:->\s+)?\S+\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s", line
        )
        if match is None:
            continue
        pid = int(match.group(1))
        found = (int(match.group(2), 16), int(match.group(3), 16), int(match.group(4)))
        if found == key and pid != os.getpid() and pid not in pids:
            pids.append(pid)
    return pids


def _command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return text if len(text) <= 60 else text[:57] + "..."


def _busy(port: str) -> str:
    holders = _lock_holders(port)
    who = (
        ", ".join(f"process {pid} ({_command_of(pid)})" for pid in holders)
        if holders
        else "another program"
    )
    return (
        f"serial port {port} is busy: {who} has it open; stop it first "
        "(e.g. sudo systemctl stop swm-edge) or scan another port"
    )


def check_serial_port(port: str) -> int:
    """Open ``port`` as the scan will, and lock it against other programs.

    Returns the open, locked descriptor: keep it open while scanning over a line that does
    not lock the port itself, close it before a line that does (pymodbus locks it, and two
    locks of one process conflict).

    Raises:
        ScanError: the port does not exist, this user may not open it, another program has
            it locked or opened exclusively, or it is not a serial port.
    """
    if not os.path.exists(port):
        raise ScanError(_not_found(port))
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise ScanError(_no_permission(port)) from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # another program holds it with TIOCEXCL
            raise ScanError(_busy(port)) from None
        if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise ScanError(_not_found(port)) from None
        raise ScanError(f"cannot open serial port {port}: {exc.strerror}") from None
    try:
        if not os.isatty(fd):
            raise ScanError(f"{port} is not a serial port; use /dev/serial/by-id/...")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScanError(_busy(port)) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- TCP diagnosis -------------------------------------------------------------------------------


def _tcp_timed_out(where: str, timeout: float) -> str:
    return (
        f"no answer from {where} within {timeout:g} s: check the address and that the "
        "device is on this network"
    )


async def _tcp_problem(host: str, port: int, timeout: float) -> str:
    """Why a TCP connection to ``host:port`` cannot be made, in one line."""
    where = f"{host}:{port}"
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return _tcp_timed_out(where, timeout)
    except ConnectionRefusedError:
        return (
            f"connection to {where} refused: nothing accepts Modbus TCP on port {port} there; "
            "check the host and --port"
        )
    except socket.gaierror:
        return f"unknown host {host!r}: check the name or use an IP address"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"{where} is unreachable: check the address and this gateway's network"
        return f"cannot connect to {where}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"cannot open a Modbus TCP connection to {where}"


# --- Modbus -----------------------------------------------------------------------------------


class ScanLine(PymodbusLine):
    """The agent's pymodbus line, plus Read Device Identification (43/14).

    Also on RTU, where the agent's default is its own framing (:class:`~swm_edge.bus.RtuLine`,
    decision 0006): that framing covers the four reads only, and a 43/14 answer's length is
    known only by walking its objects, which pymodbus does.
    """

    async def read_device_identification(
        self, unit: int, read_code: int, object_id: int, *, timeout: float
    ) -> Any:
        """One 43/14 request; returns pymodbus' response (``information``, ``more_follows``,
        ``next_object_id``). Raises the same :class:`~swm_edge.driver.ReadError` subclasses
        as the register reads."""
        client = self._client
        if client is None:
            raise ConnectionLost(f"{self._where()} is not open")

        # _call maps pymodbus' errors as for every other request; it passes its arguments
        # as (address, count=, device_id=), here the read code and the first object.
        def request(code: int, count: int, device_id: int) -> Any:
            return client.read_device_information(
                read_code=code, object_id=count, device_id=device_id
            )

        return await self._call(request, read_code, object_id, unit, timeout)


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """A unit that answered a scan, and how."""

    unit: int
    #: How it answered the probe: ``"holding 0: 1234"``, ``"input 0: 7"``, ``"exception 2"``.
    answer: str
    #: Serial settings it answered at (``None`` on TCP).
    settings: SerialSettings | None = None
    #: Serial port, or TCP host and port, it was found on.
    port: str | None = None
    host: str | None = None
    tcp_port: int | None = None
    #: From Read Device Identification; ``None`` when the device does not support it.
    vendor: str | None = None
    model: str | None = None
    #: Name of the device profile that matches vendor and model, if any.
    profile: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON object of ``swm-edge scan --json``."""
        doc: dict[str, Any] = {
            "unit": self.unit,
            "baudrate": self.settings.baudrate if self.settings else None,
            "parity": self.settings.parity if self.settings else None,
            "answer": self.answer,
            "vendor": self.vendor,
            "model": self.model,
            "profile": self.profile,
        }
        if self.settings is not None:
            doc.update(
                port=self.port, bytesize=self.settings.bytesize, stopbits=self.settings.stopbits
            )
        else:
            doc.update(host=self.host, tcp_port=self.tcp_port)
        return doc


class ScanEvents(Protocol):
    """What a scan reports while it runs (progress bars, live lines); all optional work."""

    def start(self, total: int | None) -> None:
        """The scan makes ``total`` probes (``None``: not known beforehand)."""

    def phase(self, text: str) -> None:
        """It now scans at ``text`` (e.g. the serial settings)."""

    def advance(self, steps: int = 1) -> None:
        """``steps`` probes are done."""

    def found(self, item: Any) -> None:
        """Something answered (a :class:`ModbusDevice`, or a driver's scan result)."""

    def note(self, text: str) -> None:
        """Something the user should know that does not stop the scan."""


@dataclass
class _Sweep:
    """State of one scan: where it runs and what it found."""

    events: ScanEvents
    profiles: Sequence[ProfileRef]
    timeout: float
    found: list[ModbusDevice] = field(default_factory=list)


async def probe_unit(transport: ModbusTransport, unit: int, timeout: float) -> str | None:
    """How ``unit`` answers the probe (see the module docstring), or ``None`` when nobody
    answered (silence, a garbled answer, or a gateway's exception 10/11).

    Raises:
        ConnectionLost: the line or connection went away.
        CrcError: bytes arrived that were no valid answer.
    """
    code: int | None = None
    for table in (Table.HOLDING, Table.INPUT):
        try:
            words = await transport.read_registers(unit, table, 0, 1, timeout=timeout)
        except DeviceTimeout:
            return None
        except DeviceException as exc:
            if exc.code in GATEWAY_EXCEPTIONS:
                return None
            code = exc.code
            if code != 1:  # only "illegal function" makes input registers worth a try
                break
            continue
        except DecodeError as exc:
            return f"{table} 0: {exc}"  # a valid frame with the wrong contents: still there
        return f"{table} 0: {words[0]}"
    return f"exception {code}"


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, bytes | str):
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = " ".join(text.replace("\0", " ").split())
    return text or None


async def identify_unit(line: ScanLine, unit: int, timeout: float) -> tuple[str | None, str | None]:
    """Vendor and model from Read Device Identification, ``(None, None)`` when the device
    does not support it or does not answer it.

    Asks for the regular objects (a device with only the basic ones answers with those, as
    the standard has it); a device that refuses that read code is asked for the basic ones.
    The model is ModelName, else ProductName, else ProductCode.

    Raises:
        ConnectionLost: the line or connection went away.
    """
    objects: dict[int, Any] = {}
    for read_code in (_READ_REGULAR, _READ_BASIC):
        objects.clear()
        object_id = 0
        try:
            for _ in range(_MAX_ID_PAGES):
                response = await line.read_device_identification(
                    unit, read_code, object_id, timeout=timeout
                )
                objects.update(response.information)
                if response.more_follows != _MORE_FOLLOWS or not response.next_object_id:
                    break
                object_id = int(response.next_object_id)
        except DeviceException as exc:
            if exc.code == 1:
                return None, None  # the function is not implemented
            continue
        except (DeviceTimeout, CrcError, DecodeError):
            if line.spec.type == "modbus-rtu":
                # As the bus does after a timeout: a late answer must not be taken for the
                # next one.
                await asyncio.sleep(SERIAL_QUIET_AFTER_TIMEOUT)
            return None, None
        break
    vendor = _text(objects.get(_VENDOR_NAME))
    model = (
        _text(objects.get(_MODEL_NAME))
        or _text(objects.get(_PRODUCT_NAME))
        or _text(objects.get(_PRODUCT_CODE))
    )
    return vendor, model


async def _wait_reopen(bus: Bus, cause: Exception) -> None:
    """Wait for the bus to reopen its line (it does so by itself, with backoff)."""
    deadline = time.monotonic() + REOPEN_WAIT
    while not bus.line.is_open:
        if time.monotonic() > deadline:
            raise ScanError(
                f"lost the line ({bus.last_error or cause}) and could not reopen it within "
                f"{REOPEN_WAIT:g} s; check the cable/adapter or network"
            )
        await asyncio.sleep(0.02)


async def _probe(bus: Bus, sweep: _Sweep, unit: int) -> str | None:
    """The probe of one unit, over the bus; one reconnect when the line drops meanwhile
    (a TCP device may close the connection after unanswered ids)."""
    for attempt in range(2):
        try:
            async with bus.turn() as transport:
                assert isinstance(transport, ModbusTransport)
                return await probe_unit(transport, unit, sweep.timeout)
        except CrcError:
            return None  # bytes, but no answer: noise, or two devices at one id
        except ConnectionLost as exc:
            await _wait_reopen(bus, exc)
            if attempt:
                return None
    return None


async def _identify(bus: Bus, unit: int, timeout: float) -> tuple[str | None, str | None]:
    line = bus.line
    assert isinstance(line, ScanLine)
    try:
        async with bus.turn():
            return await identify_unit(line, unit, timeout)
    except ConnectionLost:
        # The next probe's turn finds the line down, has the bus reopen it and waits.
        return None, None


async def _sweep_ids(
    bus: Bus,
    sweep: _Sweep,
    ids: Sequence[int],
    *,
    settings: SerialSettings | None = None,
    port: str | None = None,
    host: str | None = None,
    tcp_port: int | None = None,
) -> int:
    """Probe every id; identify each one that answers. Returns how many answered."""
    count = 0
    for unit in ids:
        answer = await _probe(bus, sweep, unit)
        if answer is not None:
            vendor, model = await _identify(bus, unit, sweep.timeout)
            device = ModbusDevice(
                unit=unit,
                answer=answer,
                settings=settings,
                port=port,
                host=host,
                tcp_port=tcp_port,
                vendor=vendor,
                model=model,
                profile=suggest_profile(vendor, model, sweep.profiles),
            )
            sweep.found.append(device)
            sweep.events.found(device)
            count += 1
        sweep.events.advance()
    return count


async def _open(spec: BusSpec, line: Line) -> Bus:
    """A started bus with its line open, or :class:`ScanError` (no background retries: a
    scan reports the problem instead of waiting for it to go away)."""
    bus = Bus(spec, line, backoff_initial=0.05, backoff_max=1.0)
    started = time.monotonic()
    try:
        await bus.start()
    except termios.error as exc:
        # pyserial reports settings the port refuses as termios.error, which is no OSError,
        # so the raw serial line lets it through instead of retrying.
        await bus.stop()
        raise ScanError(
            f"cannot open serial port {spec.port} at {_settings_of(spec)}: {exc}"
        ) from None
    if bus.line.is_open:
        return bus
    elapsed = time.monotonic() - started
    error = bus.last_error or "unknown error"
    await bus.stop()
    # When pymodbus' port setup fails half-way (a setting the port refuses), the open port
    # is referenced only from the discarded traceback's frames, and it keeps its lock
    # until collected; collecting now lets the next settings open the port.
    gc.collect()
    if spec.type == "modbus-tcp":
        host, port = spec.host or "", spec.tcp_port
        if elapsed >= 0.9 * spec.timeout:
            # It already waited the whole connect timeout; asking again only doubles it.
            raise ScanError(_tcp_timed_out(f"{host}:{port}", spec.timeout))
        # pymodbus only says "not connected"; a connection of our own tells why.
        raise ScanError(await _tcp_problem(host, port, spec.timeout))
    # The line's message starts "cannot open PORT: " itself.
    detail = error.removeprefix(f"cannot open {spec.port}: ")
    raise ScanError(f"cannot open serial port {spec.port} at {_settings_of(spec)}: {detail}")


def _settings_of(spec: BusSpec) -> SerialSettings:
    return SerialSettings(spec.baudrate, spec.parity, spec.bytesize, spec.stopbits)


async def scan_modbus_serial(
    port: str,
    settings: Sequence[SerialSettings],
    ids: Sequence[int],
    *,
    events: ScanEvents,
    profiles: Sequence[ProfileRef] = (),
    timeout: float | None = None,
    stop_when_found: bool = True,
    make_line: Callable[[BusSpec], ScanLine] = ScanLine,
) -> list[ModbusDevice]:
    """Probe ``ids`` on the RS-485 line at ``port`` at each of ``settings`` in turn.

    With ``stop_when_found`` the settings after the first one at which anything answered
    are not tried (devices on one line share its settings). Settings the port refuses
    (an adapter without that speed; a pty, which has no parity) are skipped with a note
    when there are others to try. ``timeout`` is the per-id timeout; default
    :func:`serial_timeout` of each setting. ``make_line`` makes the line for each setting
    (tests put a fake line there).

    Raises:
        ScanError: the port cannot be used (see :func:`check_serial_port`), at none of the
            settings, or it went away during the scan.
    """
    # The check takes the port's lock only to see that nobody else holds it: pymodbus
    # takes its own, and two locks of one process on one port conflict.
    os.close(check_serial_port(port))
    sweep = _Sweep(events, profiles, timeout or 0.0)
    refused: list[str] = []
    events.start(len(settings) * len(ids))
    for index, setting in enumerate(settings):
        events.phase(str(setting))
        sweep.timeout = timeout if timeout is not None else serial_timeout(setting)
        spec = BusSpec(
            id="scan",
            type="modbus-rtu",
            port=port,
            baudrate=setting.baudrate,
            parity=setting.parity,
            bytesize=setting.bytesize,
            stopbits=setting.stopbits,
            timeout=max(sweep.timeout, 1.0),
        )
        try:
            bus = await _open(spec, make_line(spec))
        except ScanError as exc:
            if len(settings) == 1:
                raise
            refused.append(str(exc))
            events.note(f"skipped {setting}: {exc}")
            events.advance(len(ids))
            continue
        try:
            answered = await _sweep_ids(bus, sweep, ids, settings=setting, port=port)
        finally:
            await bus.stop()
        if answered and stop_when_found:
            events.advance((len(settings) - index - 1) * len(ids))
            break
    if len(refused) == len(settings):
        raise ScanError(f"serial port {port} refused every setting tried; last: {refused[-1]}")
    return sweep.found


async def scan_modbus_tcp(
    host: str,
    port: int,
    ids: Sequence[int],
    *,
    events: ScanEvents,
    profiles: Sequence[ProfileRef] = (),
    timeout: float = TCP_TIMEOUT,
    connect_timeout: float = 3.0,
) -> list[ModbusDevice]:
    """Probe ``ids`` over one Modbus TCP connection to ``host:port``.

    Raises:
        ScanError: no connection (refused, unreachable, unknown host, no answer within
            ``connect_timeout``), or it was lost and could not be made again.
    """
    spec = BusSpec(id="scan", type="modbus-tcp", host=host, tcp_port=port, timeout=connect_timeout)
    sweep = _Sweep(events, profiles, timeout)
    bus = await _open(spec, ScanLine(spec))
    events.start(len(ids))
    events.phase(f"{host}:{port}")
    try:
        await _sweep_ids(bus, sweep, ids, host=host, tcp_port=port)
    finally:
        await bus.stop()
    return sweep.found


# --- raw serial buses ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serial_transport(
    port: str, bus_type: str, settings: SerialSettings, *, timeout: float
) -> AsyncIterator[SerialTransport]:
    """The port as a raw serial bus of ``bus_type`` (``mbus``, ``sdi12``), opened by the
    agent's :class:`~swm_edge.bus.Bus`, locked against other programs while in use.

    Raises:
        ScanError: the port cannot be used (see :func:`check_serial_port`).
    """
    # The raw serial line does not lock the port itself, so the check's lock is kept.
    fd = check_serial_port(port)
    try:
        spec = BusSpec(
            id="scan",
            type=bus_type,
            port=port,
            baudrate=settings.baudrate,
            parity=settings.parity,
            bytesize=settings.bytesize,
            stopbits=settings.stopbits,
            timeout=timeout,
        )
        bus = await _open(spec, make_line(spec))
        try:
            async with bus.turn() as transport:
                assert isinstance(transport, SerialTransport)
                yield transport
        finally:
            await bus.stop()
    finally:
        os.close(fd)
