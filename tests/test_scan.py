"""Scanning lines for devices (swm_edge.scan and the drivers' scan modules), below the CLI.

Real parts throughout: the agent's Bus and lines, pymodbus, pyserial; simulated Modbus
devices over TCP and over a virtual RS-485 line (two pty pairs and a relay), M-Bus meters
and SDI-12 sensors behind ptys. One fake appears: a line that records which serial
settings a scan opens, because a pty cannot carry parity (see
test_auto_baud_tries_settings_in_order_and_stops_at_the_first_that_answers).
"""

from __future__ import annotations

import asyncio
import grp
import os
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import serial
from pymodbus.client import AsyncModbusTcpClient
from swm_edge_drivers.mbus import scan as mbus_scan
from swm_edge_drivers.mbus.frames import SecondaryAddress
from swm_edge_drivers.sdi12 import scan as sdi12_scan
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.mbus import MbusSimulator, SimMeter
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.sdi12 import Sdi12Line, SimulatedSdi12Sensor
from swm_edge_hil.servers import serve_rtu, serve_tcp

import swm_edge.scan as scan
from swm_edge.cli.catalog import profile_catalog
from swm_edge.driver import ConnectionLost, DecodeError, DeviceException, DeviceTimeout
from swm_edge.model import BusSpec, DataType, PointSpec, Table
from swm_edge.scan import (
    AUTO_BAUD_SETTINGS,
    ModbusDevice,
    ProfileRef,
    ScanError,
    ScanLine,
    SerialSettings,
    check_serial_port,
    parse_ids,
    scan_modbus_serial,
    scan_modbus_tcp,
    serial_timeout,
    serial_transport,
    settings_to_try,
    suggest_profile,
)

T = TypeVar("T")
T0 = 1_700_000_000.0
KELLER = ("KELLER AG", "Series 30 / Series 40 pressure transmitter (Class.Group 5.20/5.21)")
Y4000 = ("Yosemitech", "Y4000 multi-parameter sonde")


def run(coro: Coroutine[Any, Any, T], limit: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, limit))


def modbus_profiles() -> list[ProfileRef]:
    return [
        ProfileRef(r["name"], r["manufacturer"], r["model"])
        for r in profile_catalog()
        if r["driver"] == "modbus"
    ]


class Events:
    """Records what a scan reports."""

    def __init__(self) -> None:
        self.total: int | None = -1
        self.phases: list[str] = []
        self.steps = 0
        self.items: list[Any] = []
        self.notes: list[str] = []

    def start(self, total: int | None) -> None:
        self.total = total

    def phase(self, text: str) -> None:
        self.phases.append(text)

    def advance(self, steps: int = 1) -> None:
        self.steps += steps

    def found(self, item: Any) -> None:
        self.items.append(item)

    def note(self, text: str) -> None:
        self.notes.append(text)


def device(profile: str, unit: int, **kw: Any) -> SimulatedDevice:
    return SimulatedDevice(profile, unit=unit, seed=3, start=T0, frozen=True, **kw)


def level_sensor(unit: int, level: int, **kw: Any) -> SimulatedDevice:
    """A device with a register at holding 0 (the profiles' devices have none there)."""
    points = [PointSpec("level", Table.HOLDING, 0, DataType.UINT16, unit="cm")]
    sensor = SimulatedDevice(points, unit=unit, frozen=True, **kw)
    sensor.set("level", level)
    return sensor


def pty_accepts_parity() -> bool:
    """Whether this kernel lets a pty be set to even parity twice (pymodbus reconfigures
    the port right after opening it); recent Linux refuses PARENB on a pty with EINVAL."""
    master, slave = os.openpty()
    try:
        with serial.Serial(os.ttyname(slave), 9600, parity="E") as port:
            port.timeout = 0
        return True
    except (OSError, Exception):
        return False
    finally:
        os.close(master)
        os.close(slave)


# --- arguments and settings --------------------------------------------------------------


def test_ids_are_lists_and_ranges() -> None:
    assert parse_ids("1-10,17", 1, 247) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17]
    assert parse_ids(" 5 , 3-4,4 ", 1, 247) == [3, 4, 5]
    assert parse_ids("247", 1, 247) == [247]
    assert parse_ids("0-255", 0, 255) == list(range(256))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-300", "0-300 is outside 1-247"),
        ("10-1", "10-1 runs backwards; write 1-10"),
        ("1-x", "'1-x' is not an id or a range such as 1-10"),
        (",", "no ids in ','"),
    ],
)
def test_bad_ids_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_ids(text, 1, 247)


def test_auto_baud_order_and_default_timeouts() -> None:
    assert [str(s) for s in AUTO_BAUD_SETTINGS] == [
        "9600 8E1",
        "9600 8N1",
        "19200 8E1",
        "19200 8N1",
        "38400 8E1",
        "38400 8N1",
        "2400 8E1",
        "2400 8N1",
    ]
    first = SerialSettings(19200, "N")
    assert settings_to_try(first, auto_baud=False) == [first]
    tried = settings_to_try(first, auto_baud=True)
    assert tried[0] == first and len(tried) == 8 and tried.count(first) == 1
    # 15 characters of probe on the wire plus 0.1 s for the device and the adapter.
    assert serial_timeout(SerialSettings(9600, "N")) == 0.116
    assert serial_timeout(SerialSettings(9600, "E")) == 0.117
    assert serial_timeout(SerialSettings(2400, "E")) == 0.169
    assert mbus_scan.answer_timeout(2400) == 0.242


def test_profile_suggestion_matches_vendor_and_model_substrings() -> None:
    profiles = modbus_profiles()
    assert suggest_profile(*KELLER, profiles) == "keller-series30"
    assert suggest_profile("keller", "SERIES 30", profiles) == "keller-series30"
    # Either way round: the device may say more than the profile, or less.
    assert suggest_profile("Siemens AG", "MAG 6000", profiles) == "siemens-mag6000"
    assert suggest_profile("Siemens", "SITRANS  F M   MAG 6000", profiles) == "siemens-mag6000"
    assert suggest_profile("Siemens", "MAG 5000", profiles) is None
    assert suggest_profile("ACME", "Y4000", profiles) is None
    assert suggest_profile(None, "Y4000", profiles) is None
    assert suggest_profile("Yosemitech", None, profiles) is None


# --- serial port checks -------------------------------------------------------------------


@pytest.fixture
def pty_path() -> Iterator[str]:
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_missing_port_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ScanError) as info:
        check_serial_port(str(tmp_path / "ttyUSB9"))
    assert str(info.value).startswith(
        f"serial port {tmp_path / 'ttyUSB9'} not found; check the cable/adapter and use "
        "/dev/serial/by-id/..."
    )


def test_a_file_is_not_a_serial_port(tmp_path: Path) -> None:
    path = tmp_path / "ttyS0"
    path.write_text("")
    with pytest.raises(ScanError, match=r"is not a serial port; use /dev/serial/by-id/"):
        check_serial_port(str(path))


def test_busy_port_names_the_process_holding_it(pty_path: str) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import serial, sys, time; p = serial.Serial(sys.argv[1], exclusive=True); "
            "print('locked', flush=True); time.sleep(30)",
            pty_path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ScanError) as info:
            check_serial_port(pty_path)
        assert str(info.value).startswith(
            f"serial port {pty_path} is busy: process {holder.pid} ({sys.executable} -c "
        )
        assert str(info.value).endswith(
            "has it open; stop it first (e.g. sudo systemctl stop swm-edge) or scan another port"
        )
    finally:
        holder.kill()
        holder.wait()
    os.close(check_serial_port(pty_path))  # free again


def test_permission_message_names_the_group_to_join(pty_path: str) -> None:
    # The message is built from the port's owner, group and mode; as root the open itself
    # cannot fail, which the CLI test covers by running as another user.
    os.chown(pty_path, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(pty_path, 0o660)
    message = scan._no_permission(pty_path)
    user = scan._user_name()
    assert message == (
        f"permission denied on serial port {pty_path} (owner root, group dialout, mode 0660): "
        f"add user {user} to the dialout group (sudo usermod -aG dialout {user}) and log in again"
    )
    os.chmod(pty_path, 0o600)
    assert scan._no_permission(pty_path).endswith(
        'give serial ports to the dialout group (udev rule GROUP="dialout", MODE="0660") and '
        f"add user {user} to it (sudo usermod -aG dialout {user})"
    )


# --- Modbus TCP ------------------------------------------------------------------------------


def test_tcp_sweep_finds_exactly_the_devices_with_identification() -> None:
    async def scenario() -> tuple[list[ModbusDevice], Events, int, float]:
        devices = [
            device("keller-series30", 3),
            device("yosemitech-y4000", 17),
            # No profile: no Read Device Identification either (exception 1).
            SimulatedDevice(device("keller-series30", 1).points, unit=40, frozen=True),
            level_sensor(200, 1234, vendor="ACME", model="Level 9"),
        ]
        async with await serve_tcp(devices) as server:
            server.set_fault(40, "exception:6")
            events = Events()
            started = time.monotonic()
            found = await scan_modbus_tcp(
                "127.0.0.1",
                server.port,
                list(range(1, 248)),
                events=events,
                profiles=modbus_profiles(),
            )
            return found, events, server.port, time.monotonic() - started

    found, events, port, seconds = run(scenario())
    where = {"host": "127.0.0.1", "tcp_port": port}
    assert found == [
        ModbusDevice(
            3,
            "exception 2",
            None,
            None,
            **where,
            vendor=KELLER[0],
            model=KELLER[1],
            profile="keller-series30",
        ),
        ModbusDevice(
            17,
            "exception 2",
            None,
            None,
            **where,
            vendor=Y4000[0],
            model=Y4000[1],
            profile="yosemitech-y4000",
        ),
        ModbusDevice(40, "exception 6", None, None, **where),
        ModbusDevice(200, "holding 0: 1234", None, None, **where, vendor="ACME", model="Level 9"),
    ]
    assert events.items == found
    assert (events.total, events.steps) == (247, 247)
    assert seconds < 5, f"a local sweep of 247 ids took {seconds:.1f} s"
    assert found[0].as_json() == {
        "unit": 3,
        "baudrate": None,
        "parity": None,
        "answer": "exception 2",
        "vendor": KELLER[0],
        "model": KELLER[1],
        "profile": "keller-series30",
        "host": "127.0.0.1",
        "tcp_port": port,
    }


def test_simulators_answer_read_device_identification_per_device() -> None:
    # The hil server fills in each device's own objects (pymodbus knows one per server).
    async def scenario() -> dict[tuple[int, int], Any]:
        devices = [
            device("keller-series30", 1),
            level_sensor(2, 5, vendor="ACME", model="Level 9"),
            level_sensor(3, 5),
        ]
        async with await serve_tcp(devices) as server:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
            assert await client.connect()
            answers: dict[tuple[int, int], Any] = {}
            try:
                for unit, code in [(1, 1), (1, 2), (2, 2), (3, 2), (9, 1)]:
                    r = await client.read_device_information(read_code=code, device_id=unit)
                    answers[unit, code] = (
                        ("exception", r.exception_code) if r.isError() else r.information
                    )
            finally:
                client.close()
            return answers

    keller = {0: KELLER[0].encode(), 1: b"keller-series30", 2: b"1.0"}
    assert run(scenario()) == {
        (1, 1): keller,  # basic: vendor, product code, revision
        (1, 2): {**keller, 5: KELLER[1].encode()},  # regular: and the model name
        (2, 2): {0: b"ACME", 1: b"device-2", 2: b"1.0", 5: b"Level 9"},
        (3, 2): ("exception", 1),  # no vendor: the function is not implemented
        (9, 1): ("exception", 11),  # nobody at 9 behind the "gateway"
    }


def test_exception_1_to_both_reads_is_reported_as_exception_1() -> None:
    async def scenario() -> list[ModbusDevice]:
        async with await serve_tcp([device("keller-series30", 9)]) as server:
            server.set_fault(9, "exception:1")
            return await scan_modbus_tcp(
                "127.0.0.1", server.port, [8, 9, 10], events=Events(), profiles=()
            )

    # The fault answers every request with exception 1, the input read too.
    assert [(d.unit, d.answer, d.vendor) for d in run(scenario())] == [(9, "exception 1", None)]


class Answers:
    """A ModbusTransport answering each table with a fixed outcome: the simulators answer a
    missing table with exception 2, never with exception 1 for one table only."""

    def __init__(self, holding: Any, input_: Any = None) -> None:
        self.outcomes = {Table.HOLDING: holding, Table.INPUT: input_}
        self.asked: list[str] = []

    async def read_registers(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        self.asked.append(f"{table} {address}+{count}")
        outcome = self.outcomes[table]
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, list)
        return outcome

    async def read_bits(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[bool]:
        raise AssertionError("the probe reads registers only")


@pytest.mark.parametrize(
    ("holding", "input_", "answer", "asked"),
    [
        ([7], None, "holding 0: 7", ["holding 0+1"]),
        (DeviceException(1), [42], "input 0: 42", ["holding 0+1", "input 0+1"]),
        (DeviceException(1), DeviceException(2), "exception 2", ["holding 0+1", "input 0+1"]),
        (DeviceException(1), DeviceException(1), "exception 1", ["holding 0+1", "input 0+1"]),
        (DeviceException(3), None, "exception 3", ["holding 0+1"]),
        (DeviceException(11), None, None, ["holding 0+1"]),  # a gateway: nobody there
        (DeviceException(1), DeviceException(10), None, ["holding 0+1", "input 0+1"]),
        (DeviceTimeout("silence"), None, None, ["holding 0+1"]),
        (
            DecodeError("asked for 1 registers, got 2"),
            None,
            "holding 0: asked for 1 registers, got 2",
            ["holding 0+1"],
        ),
    ],
)
def test_probe_answer_of_each_kind(
    holding: Any, input_: Any, answer: str | None, asked: list[str]
) -> None:
    transport = Answers(holding, input_)
    assert run(scan.probe_unit(transport, 7, 0.1)) == answer
    assert transport.asked == asked


def test_tcp_scan_goes_on_after_the_device_drops_the_connection() -> None:
    # pymodbus closes a TCP connection after several unanswered requests in a row; the bus
    # reopens it and the sweep goes on.
    async def scenario() -> list[int]:
        devices = [device("keller-series30", unit) for unit in range(1, 8)]
        async with await serve_tcp(devices) as server:
            for unit in range(1, 7):
                server.set_fault(unit, "silent")
            found = await scan_modbus_tcp(
                "127.0.0.1", server.port, list(range(1, 8)), events=Events(), timeout=0.1
            )
            return [d.unit for d in found]

    assert run(scenario()) == [7]


def test_lost_tcp_connection_stops_the_scan_with_what_was_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scan, "REOPEN_WAIT", 0.5)

    async def scenario() -> tuple[Events, str]:
        server = await serve_tcp([device("keller-series30", 1), device("keller-series30", 2)])
        events = Events()
        stopping: list[asyncio.Task[None]] = []
        record = events.found

        def found(item: Any) -> None:
            record(item)
            if item.unit == 2:
                stopping.append(asyncio.get_running_loop().create_task(server.stop()))

        events.found = found  # type: ignore[method-assign]
        with pytest.raises(ScanError) as info:
            await scan_modbus_tcp("127.0.0.1", server.port, [1, 2, 3, 4], events=events)
        await server.stop()
        return events, str(info.value)

    events, message = run(scenario())
    assert [d.unit for d in events.items] == [1, 2]
    assert message.startswith("lost the line (")
    assert message.endswith(
        "and could not reopen it within 0.5 s; check the cable/adapter or network"
    )


def test_refused_connection_is_one_clear_line() -> None:
    from swm_edge.broker import free_port

    port = free_port()
    with pytest.raises(ScanError) as info:
        run(scan_modbus_tcp("127.0.0.1", port, [1], events=Events()))
    assert str(info.value) == (
        f"connection to 127.0.0.1:{port} refused: nothing accepts Modbus TCP on port {port} "
        "there; check the host and --port"
    )


# --- Modbus RTU ------------------------------------------------------------------------------


def test_auto_baud_on_a_virtual_line_finds_the_devices_at_the_line_speed() -> None:
    # The simulated devices answer only while the agent's end of the line is set to 19200
    # baud (serve_rtu's agent_port reads the speed the scan really set on its pty). A pty
    # carries no parity, and recent kernels refuse parity on a pty outright: there the
    # scan cannot open the E settings and skips them, and finds the devices at 19200 8N1.
    parity = "E" if pty_accepts_parity() else "N"

    async def scenario(line: NullModem) -> tuple[list[ModbusDevice], Events, Any]:
        devices = [device("keller-series30", 3), level_sensor(5, 321)]
        async with await serve_rtu(
            devices, line.device_port, baudrate=19200, parity=parity, agent_port=line.agent_port
        ) as server:
            events = Events()
            found = await scan_modbus_serial(
                line.agent_port,
                settings_to_try(None, auto_baud=True),
                list(range(1, 7)),
                events=events,
                profiles=modbus_profiles(),
            )
            return found, events, server.stats

    with NullModem(baudrate=19200, char_bits=11) as line:
        started = time.monotonic()
        found, events, stats = run(scenario(line))
        seconds = time.monotonic() - started
        port = line.agent_port
    at = SerialSettings(19200, parity)
    assert found == [
        ModbusDevice(
            3, "exception 2", at, port, vendor=KELLER[0], model=KELLER[1], profile="keller-series30"
        ),
        ModbusDevice(5, "holding 0: 321", at, port),
    ]
    if parity == "E":
        assert events.phases == ["9600 8E1", "9600 8N1", "19200 8E1"]
        assert events.notes == []
    else:
        assert events.phases == ["9600 8E1", "9600 8N1", "19200 8E1", "19200 8N1"]
        assert [n.split(":")[0] for n in events.notes] == ["skipped 9600 8E1", "skipped 19200 8E1"]
    # Every id went out at 9600 (once per parity the pty took) and was not answered;
    # 38400 and 2400 were never tried.
    assert stats["wrong_speed"] == (12 if parity == "E" else 6)
    assert (events.total, events.steps) == (48, 48)
    assert found[0].as_json() == {
        "unit": 3,
        "baudrate": 19200,
        "parity": parity,
        "answer": "exception 2",
        "vendor": KELLER[0],
        "model": KELLER[1],
        "profile": "keller-series30",
        "port": port,
        "bytesize": 8,
        "stopbits": 1,
    }
    assert seconds < 15


class RecordingLine(ScanLine):
    """A line that answers like units 3 and 5 only at ``ANSWERS_AT``, and records the
    settings it was opened at. Stands in for a real adapter's parity, which a pty lacks."""

    ANSWERS_AT = SerialSettings(19200, "E")
    opened: ClassVar[list[str]] = []

    async def open(self) -> None:
        self.opened.append(str(scan._settings_of(self.spec)))
        self._open = True

    async def close(self) -> None:
        self._open = False

    @property
    def is_open(self) -> bool:
        return getattr(self, "_open", False)

    def _answers(self, unit: int) -> bool:
        return scan._settings_of(self.spec) == self.ANSWERS_AT and unit in (3, 5)

    async def read_registers(
        self, unit: int, table: Any, address: int, count: int, *, timeout: float
    ) -> list[int]:
        if not self._answers(unit):
            raise DeviceTimeout("silence")
        return [unit * 100]

    async def read_device_identification(
        self, unit: int, read_code: int, object_id: int, *, timeout: float
    ) -> Any:
        if not self._answers(unit):
            raise DeviceTimeout("silence")

        class Response:
            information: ClassVar[dict[int, bytes]] = {
                0: b"KELLER",
                1: b"PR-33X",
                5: b"Series 30",
            }
            more_follows = 0
            next_object_id = 0

        return Response()


@pytest.mark.parametrize(
    ("answers_at", "tried"),
    [
        (SerialSettings(19200, "E"), ["9600 8E1", "9600 8N1", "19200 8E1"]),
        (SerialSettings(2400, "N"), [str(s) for s in AUTO_BAUD_SETTINGS]),
        (SerialSettings(4800, "O"), [str(s) for s in AUTO_BAUD_SETTINGS]),
    ],
)
def test_auto_baud_tries_settings_in_order_and_stops_at_the_first_that_answers(
    pty_path: str, answers_at: SerialSettings, tried: list[str]
) -> None:
    # Auto-baud at the level of the settings tried (parity included), with a fake line.
    class Line(RecordingLine):
        ANSWERS_AT = answers_at
        opened: ClassVar[list[str]] = []

    events = Events()
    found = run(
        scan_modbus_serial(
            pty_path,
            settings_to_try(None, auto_baud=True),
            [1, 3, 5, 7],
            events=events,
            profiles=modbus_profiles(),
            make_line=Line,
        )
    )
    assert Line.opened == tried
    assert events.phases == tried
    if answers_at in AUTO_BAUD_SETTINGS:
        assert [(d.unit, d.settings, d.answer, d.profile) for d in found] == [
            (3, answers_at, "holding 0: 300", "keller-series30"),
            (5, answers_at, "holding 0: 500", "keller-series30"),
        ]
    else:
        assert found == []
    assert events.steps == 8 * 4  # the progress ends full, also when stopping early


def test_settings_the_port_refuses_are_skipped_with_a_note(pty_path: str) -> None:
    class Line(RecordingLine):
        ANSWERS_AT = SerialSettings(9600, "N")
        opened: ClassVar[list[str]] = []

        async def open(self) -> None:
            if self.spec.parity != "N":
                raise ConnectionLost(f"cannot open {self.spec.port}: (22, 'Invalid argument')")
            await super().open()

    events = Events()
    found = run(
        scan_modbus_serial(
            pty_path,
            settings_to_try(None, auto_baud=True),
            [3],
            events=events,
            make_line=Line,
        )
    )
    assert [d.unit for d in found] == [3]
    assert events.notes == [
        f"skipped 9600 8E1: cannot open serial port {pty_path} at 9600 8E1: "
        "(22, 'Invalid argument')"
    ]
    # With one setting only, the refusal is the error.
    with pytest.raises(ScanError, match=r"at 9600 8E1: \(22, 'Invalid argument'\)$"):
        run(
            scan_modbus_serial(
                pty_path, [SerialSettings(9600, "E")], [3], events=Events(), make_line=Line
            )
        )


# --- M-Bus -----------------------------------------------------------------------------------


def mbus_meters() -> list[SimMeter]:
    return [
        SimMeter("11490378", primary=1),
        SimMeter("12345678", primary=5, manufacturer="EFE", medium=0x16),
        SimMeter("12345699", primary=None),
        SimMeter("87654321", primary=None, version=0x02, medium=0x06),
    ]


def on_mbus(sim: MbusSimulator, job: Any) -> Any:
    async def main() -> Any:
        async with serial_transport(
            sim.port, "mbus", SerialSettings(2400, "E"), timeout=0.1
        ) as transport:
            return await job(transport)

    return run(main())


def test_mbus_primary_scan_reads_each_meter_header() -> None:
    events = Events()
    with MbusSimulator(mbus_meters()) as sim:
        found = on_mbus(
            sim,
            lambda t: mbus_scan.scan_primary(
                t, range(0, 8), timeout=0.1, on_step=events.advance, on_found=events.found
            ),
        )
    assert found == [
        mbus_scan.FoundMeter(1, "11490378", "ACW", 0x14, 0x07),
        mbus_scan.FoundMeter(5, "12345678", "EFE", 0x14, 0x16),
    ]
    assert events.items == found and events.steps == 8
    assert found[1].as_json() == {
        "primary": 5,
        "secondary": "1234567814C51416",
        "ident": "12345678",
        "manufacturer": "EFE",
        "version": 0x14,
        "medium": 0x16,
        "medium_name": "cold water",
        "answer": "RSP_UD",
    }


def test_mbus_secondary_search_narrows_collisions_digit_by_digit() -> None:
    events = Events()
    with MbusSimulator(mbus_meters()) as sim:
        found = on_mbus(
            sim,
            lambda t: mbus_scan.search_secondary(
                t, timeout=0.05, on_step=events.advance, on_found=events.found
            ),
        )
        selections = [r for r in sim.requests if r[0] == 0x68]
    assert found == [
        mbus_scan.FoundMeter(None, "11490378", "ACW", 0x14, 0x07),
        mbus_scan.FoundMeter(None, "12345678", "EFE", 0x14, 0x16),
        mbus_scan.FoundMeter(None, "12345699", "ACW", 0x14, 0x07),
        mbus_scan.FoundMeter(None, "87654321", "ACW", 0x02, 0x06),
    ]
    # 10 selections at the first digit, and 10 more below each prefix that collided:
    # 1, 12, 123, 1234, 12345, 123456.
    assert events.steps == len(selections) == 70
    first = SecondaryAddress("0FFFFFFF").encode()
    last = SecondaryAddress("1234569F").encode()
    assert selections[0][7:15] == first
    assert any(r[7:15] == last for r in selections)


def test_mbus_meters_sharing_an_identification_number_are_one_collision() -> None:
    meters = [SimMeter("55555555"), SimMeter("55555555", manufacturer="EFE")]
    with MbusSimulator(meters) as sim:
        found = on_mbus(sim, lambda t: mbus_scan.search_secondary(t, timeout=0.05))
    assert found == [
        mbus_scan.FoundMeter(
            None, "55555555", answer="collision: several meters share this identification number"
        )
    ]


# --- SDI-12 ----------------------------------------------------------------------------------


def test_sdi12_scan_acknowledges_then_identifies_each_sensor() -> None:
    sensors = [
        SimulatedSdi12Sensor("0"),
        SimulatedSdi12Sensor("3", vendor="In-Situ", model="AT400", serial="123456"),
        SimulatedSdi12Sensor("Z", vendor="METER", model="TEROS1", version="123", serial=""),
        SimulatedSdi12Sensor("c"),
    ]
    events = Events()
    with Sdi12Line(sensors) as line:
        line.set_fault("c", "wrong_address")

        async def main() -> list[sdi12_scan.FoundSensor]:
            settings = SerialSettings(1200, "E", bytesize=7)
            async with serial_transport(line.port, "sdi12", settings, timeout=0.1) as t:
                return await sdi12_scan.scan(
                    t, "013bcZ", timeout=0.05, on_step=events.advance, on_found=events.found
                )

        found = run(main())
        asked = dict(sensors[1].commands)
    ident = sdi12_scan.Identification
    assert [(s.address, s.answer, s.identification) for s in found] == [
        ("0", "ack", ident("14", "SWMEDGE", "SONDE6", "100", "SIM0001")),
        ("3", "ack", ident("14", "In-Situ", "AT400", "100", "123456")),
        ("c", "garbled: answer 'z'", None),
        ("Z", "ack", ident("14", "METER", "TEROS1", "123", "")),
    ]
    assert (
        found[2].error
        == "aI!: response from address 'z', expected 'c': 'z14SWMEDGE SONDE6100SIM0001'"
    )
    assert asked == {"": 1, "I": 1}  # a! once, aI! once: nothing else disturbs a sensor
    assert events.items == found and events.steps == 6
    assert found[1].as_json() == {
        "address": "3",
        "answer": "ack",
        "sdi12_version": "14",
        "vendor": "In-Situ",
        "model": "AT400",
        "version": "100",
        "extra": "123456",
        "error": None,
    }


def test_raw_serial_scan_keeps_the_port_locked() -> None:
    with Sdi12Line([SimulatedSdi12Sensor("0")]) as line:

        async def main() -> str:
            settings = SerialSettings(1200, "E", bytesize=7)
            async with serial_transport(line.port, "sdi12", settings, timeout=0.1):
                with pytest.raises(ScanError) as info:
                    check_serial_port(line.port)
                return str(info.value)

        # The lock belongs to this process, so the holder cannot be named from inside it.
        assert run(main()).startswith(f"serial port {line.port} is busy: another program")


def test_bus_spec_of_a_scan_is_the_agent_s() -> None:
    # The scan's lines are the agent's: a ScanLine is a PymodbusLine on the same spec (on
    # RTU the agent's `backend: pymodbus` line; see ScanLine for why not the native one).
    spec = BusSpec(id="scan", type="modbus-tcp", host="127.0.0.1", timeout=1.0)
    line = ScanLine(spec)
    assert isinstance(line, scan.PymodbusLine) and line.spec is spec and not line.is_open
