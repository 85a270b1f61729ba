"""``swm-edge scan`` run as a user runs it: the real CLI in a subprocess, against simulated
Modbus devices on TCP and on a virtual RS-485 line (pty pairs and a relay), M-Bus meters and
SDI-12 sensors behind ptys. Exit codes and output are checked exactly.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import serial
from swm_edge_hil.devices import SimulatedDevice
from swm_edge_hil.mbus import MbusSimulator, SimMeter
from swm_edge_hil.nullmodem import NullModem
from swm_edge_hil.sdi12 import Sdi12Line, SimulatedSdi12Sensor
from swm_edge_hil.servers import SimServer, serve_rtu, serve_tcp

from swm_edge.broker import free_port
from swm_edge.model import DataType, PointSpec, Table

T = TypeVar("T")
T0 = 1_700_000_000.0
KELLER = ("KELLER AG", "Series 30 / Series 40 pressure transmitter (Class.Group 5.20/5.21)")


def swm_edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swm_edge", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


class Loop:
    """An event loop in a thread, serving the asyncio simulators while the CLI runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    background = Loop()
    yield background
    background.close()


def device(profile: str, unit: int) -> SimulatedDevice:
    return SimulatedDevice(profile, unit=unit, seed=3, start=T0, frozen=True)


def level_sensor(unit: int, level: int, **kw: Any) -> SimulatedDevice:
    points = [PointSpec("level", Table.HOLDING, 0, DataType.UINT16, unit="cm")]
    sensor = SimulatedDevice(points, unit=unit, frozen=True, **kw)
    sensor.set("level", level)
    return sensor


@pytest.fixture
def tcp_site(loop: Loop) -> Iterator[SimServer]:
    devices = [
        device("keller-series30", 3),
        level_sensor(17, 1234, vendor="ACME", model="Level 9"),
        level_sensor(40, 77),  # no vendor: no Read Device Identification
    ]
    server = loop.call(serve_tcp(devices))
    yield server
    loop.call(server.stop())


@pytest.fixture
def rs485(loop: Loop, tmp_path: Path) -> Iterator[NullModem]:
    """Units 1 (KELLER) and 2 (level sensor) on a virtual line at 9600 baud."""
    link = tmp_path / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    with NullModem(agent_link=link) as line:
        server = loop.call(
            serve_rtu([device("keller-series30", 1), level_sensor(2, 55)], line.device_port)
        )
        yield line
        loop.call(server.stop())


class Lines:
    """Lines of a subprocess's stream, read by a thread so a test can wait for one."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s; got {self.seen}") from None

    def rest(self) -> str:
        while True:
            try:
                self.seen.append(self._queue.get(timeout=5))
            except queue.Empty:
                return "".join(self.seen)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table as lists of cell texts."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


# --- Modbus TCP -------------------------------------------------------------------------------


def test_tcp_sweep_of_every_id_in_seconds_as_json(tcp_site: SimServer) -> None:
    started = time.monotonic()
    result = swm_edge("scan", "tcp", "--host", "127.0.0.1", "--port", str(tcp_site.port), "--json")
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # quiet: no progress, no live lines
    where = {"host": "127.0.0.1", "tcp_port": tcp_site.port}
    common = {"baudrate": None, "parity": None}
    assert json.loads(result.stdout) == [
        {
            "unit": 3,
            **common,
            "answer": "exception 2",
            "vendor": KELLER[0],
            "model": KELLER[1],
            "profile": "keller-series30",
            **where,
        },
        {
            "unit": 17,
            **common,
            "answer": "holding 0: 1234",
            "vendor": "ACME",
            "model": "Level 9",
            "profile": None,
            **where,
        },
        {
            "unit": 40,
            **common,
            "answer": "holding 0: 77",
            "vendor": None,
            "model": None,
            "profile": None,
            **where,
        },
    ]
    assert seconds < 15, f"247 ids took {seconds:.1f} s"


def test_tcp_table_and_live_lines(tcp_site: SimServer) -> None:
    port = str(tcp_site.port)
    result = swm_edge("scan", "tcp", "--host", "127.0.0.1", "--port", port, "--ids", "1-20")
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout) == [
        ["3", "exception 2", KELLER[0], KELLER[1], "keller-series30"],
        ["17", "holding 0: 1234", "ACME", "Level 9", "-"],
    ]
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        f"scanning 127.0.0.1:{port}",
        f"found unit 3: exception 2 - {KELLER[0]} {KELLER[1]} (profile keller-series30)",
        "found unit 17: holding 0: 1234 - ACME Level 9",
    ]
    assert re.fullmatch(r"2 device\(s\) found in \d+\.\d s", lines[3])
    assert len(lines) == 4


def on_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with standard error on a pty, as in a terminal; its exit status and
    what it showed there."""
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "swm_edge", *args],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the CLI closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(30), shown.decode(errors="replace")


def test_progress_bar_with_time_left_on_a_terminal(rs485: NullModem) -> None:
    args = ("scan", "serial", "--port", rs485.agent_port, "--baudrate", "9600", "--ids", "1-12")
    status, shown = on_terminal(*args)
    assert status == 0
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours and cursor moves
    assert "scanning 9600 8N1" in shown
    assert re.search(r"\b\d+/12\b", shown), shown  # probes done of all
    assert re.search(r"\b\d:\d\d:\d\d\b", shown), shown  # time left
    status, shown = on_terminal(*args, "--json")
    assert (status, shown) == (0, "")  # quiet with --json, also on a terminal


def test_tcp_connection_refused_is_one_line() -> None:
    port = free_port()
    result = swm_edge("scan", "tcp", "--host", "127.0.0.1", "--port", str(port), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"swm-edge scan: connection to 127.0.0.1:{port} refused: nothing accepts Modbus TCP "
        f"on port {port} there; check the host and --port\n"
    )


def test_unknown_host_is_one_line() -> None:
    result = swm_edge("scan", "tcp", "--host", "no-such-host.invalid")
    assert result.returncode == 1
    assert result.stderr == (
        "swm-edge scan: unknown host 'no-such-host.invalid': check the name or use an IP address\n"
    )


# --- Modbus RTU -------------------------------------------------------------------------------


def test_auto_baud_finds_the_line_speed_on_a_virtual_line(loop: Loop, tmp_path: Path) -> None:
    # The devices answer only while the scan's port is at 19200 baud (read from its pty).
    # A pty cannot carry parity: recent kernels refuse it, so the scan skips the E settings
    # (saying so) and finds the devices at 19200 8N1; parity itself is covered by
    # tests/test_scan.py at the level of the settings tried.
    link = tmp_path / "serial" / "by-id" / "usb-rs485"
    with NullModem(agent_link=link, baudrate=19200, char_bits=11) as line:
        server = loop.call(
            serve_rtu(
                [device("keller-series30", 3), level_sensor(5, 321)],
                line.device_port,
                baudrate=19200,
                agent_port=line.agent_port,
            )
        )
        try:
            refuses_parity = _pty_refuses_parity()
            parity = "N" if refuses_parity else "E"
            result = swm_edge(
                "scan", "serial", "--port", str(link), "--auto-baud", "--ids", "1-6", "--json"
            )
            text = swm_edge("scan", "serial", "--port", str(link), "--auto-baud", "--ids", "3")
        finally:
            loop.call(server.stop())
    assert result.returncode == 0, result.stderr
    serial_at = {
        "baudrate": 19200,
        "parity": parity,
        "port": str(link),
        "bytesize": 8,
        "stopbits": 1,
    }
    assert json.loads(result.stdout) == [
        {
            "unit": 3,
            "answer": "exception 2",
            "vendor": KELLER[0],
            "model": KELLER[1],
            "profile": "keller-series30",
            **serial_at,
        },
        {
            "unit": 5,
            "answer": "holding 0: 321",
            "vendor": None,
            "model": None,
            "profile": None,
            **serial_at,
        },
    ]
    assert text.returncode == 0, text.stderr
    assert table_rows(text.stdout) == [
        ["3", f"19200 8{parity}1", "exception 2", KELLER[0], KELLER[1], "keller-series30"]
    ]
    phases = [ln for ln in text.stderr.splitlines() if ln.startswith(("scanning", "skipped"))]
    if refuses_parity:
        assert [p.split(":")[0] for p in phases] == [
            "scanning 9600 8E1",
            "skipped 9600 8E1",
            "scanning 9600 8N1",
            "scanning 19200 8E1",
            "skipped 19200 8E1",
            "scanning 19200 8N1",
        ]
    else:
        assert phases == ["scanning 9600 8E1", "scanning 9600 8N1", "scanning 19200 8E1"]


def _pty_refuses_parity() -> bool:
    master, slave = os.openpty()
    try:
        with serial.Serial(os.ttyname(slave), 9600, parity="E") as port:
            port.timeout = 0  # pymodbus reconfigures the port right after opening it
        return False
    except Exception:
        return True
    finally:
        os.close(master)
        os.close(slave)


def test_ctrl_c_prints_what_was_found_and_exits_130(rs485: NullModem) -> None:
    proc = start("scan", "serial", "--port", rs485.agent_port, "--baudrate", "9600")
    assert proc.stderr is not None and proc.stdout is not None
    err = Lines(proc.stderr)
    err.wait_for("found unit 2")
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(20) == 130
    rest = err.rest()
    assert table_rows(out) == [
        ["1", "9600 8N1", "exception 2", KELLER[0], KELLER[1], "keller-series30"],
        ["2", "9600 8N1", "holding 0: 55", "-", "-", "-"],
    ]
    assert rest.splitlines()[-1] == "interrupted: 2 found so far"
    assert "Traceback" not in rest


def test_ctrl_c_with_json_prints_the_array_so_far(rs485: NullModem) -> None:
    proc = start("scan", "serial", "--port", rs485.agent_port, "--baudrate", "9600", "--json")
    # Mid-scan: the relay has carried a probe of unit 5, three ids past the last device.
    deadline = time.monotonic() + 30
    while not any(
        side == "to_device" and frame[:2] == b"\x05\x03" for side, frame in list(rs485.trace)
    ):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert [(d["unit"], d["answer"]) for d in json.loads(out)] == [
        (1, "exception 2"),
        (2, "holding 0: 55"),
    ]
    assert err == "interrupted: 2 found so far\n"


# --- M-Bus, SDI-12 --------------------------------------------------------------------------


def mbus_meters() -> list[SimMeter]:
    return [
        SimMeter("11490378", primary=1),
        SimMeter("12345678", primary=5, manufacturer="EFE", medium=0x16),
        SimMeter("87654321", primary=None, medium=0x06),
    ]


def meter_doc(primary: int | None, ident: str, man: str, medium: int, name: str) -> dict[str, Any]:
    code = {"ACW": "0477", "EFE": "14C5"}[man]
    return {
        "primary": primary,
        "secondary": f"{ident}{code}14{medium:02X}",
        "ident": ident,
        "manufacturer": man,
        "version": 0x14,
        "medium": medium,
        "medium_name": name,
        "answer": "RSP_UD",
    }


def test_mbus_primary_scan(tmp_path: Path) -> None:
    with MbusSimulator(mbus_meters(), link=tmp_path / "mbus0") as sim:
        result = swm_edge("scan", "mbus", "--port", sim.port, "--addresses", "0-6", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        meter_doc(1, "11490378", "ACW", 0x07, "water"),
        meter_doc(5, "12345678", "EFE", 0x16, "cold water"),
    ]


def test_mbus_secondary_search(tmp_path: Path) -> None:
    with MbusSimulator(mbus_meters(), link=tmp_path / "mbus0") as sim:
        result = swm_edge("scan", "mbus", "--port", sim.port, "--secondary", "--timeout", "0.05")
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout) == [
        ["-", "1149037804771407", "11490378", "ACW", "water (0x07)", "RSP_UD"],
        ["-", "1234567814C51416", "12345678", "EFE", "cold water (0x16)", "RSP_UD"],
        ["-", "8765432104771406", "87654321", "ACW", "warm water (30-90 Cel) (0x06)", "RSP_UD"],
    ]
    assert result.stderr.splitlines()[-1].startswith("3 meter(s) found in ")


def test_sdi12_scan_every_address() -> None:
    sensors = [
        SimulatedSdi12Sensor("0"),
        SimulatedSdi12Sensor("3", vendor="In-Situ", model="AT400", serial="123456"),
        SimulatedSdi12Sensor("Z", vendor="METER", model="TEROS1", version="123", serial=""),
    ]
    with Sdi12Line(sensors) as line:
        result = swm_edge("scan", "sdi12", "--port", line.port, "--timeout", "0.05", "--json")
        asked = [dict(s.commands) for s in sensors]
    assert result.returncode == 0, result.stderr

    def doc(address: str, vendor: str, model: str, version: str, extra: str) -> dict[str, Any]:
        return {
            "address": address,
            "answer": "ack",
            "sdi12_version": "14",
            "vendor": vendor,
            "model": model,
            "version": version,
            "extra": extra,
            "error": None,
            "profile": None,
        }

    assert json.loads(result.stdout) == [
        doc("0", "SWMEDGE", "SONDE6", "100", "SIM0001"),
        doc("3", "In-Situ", "AT400", "100", "123456"),
        doc("Z", "METER", "TEROS1", "123", ""),
    ]
    assert asked == [{"": 1, "I": 1}] * 3


# --- mistakes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["serial", "mbus", "sdi12"])
def test_missing_port(kind: str, tmp_path: Path) -> None:
    port = str(tmp_path / "serial" / "by-id" / "usb-gone")
    extra = ["--baudrate", "9600"] if kind == "serial" else []
    result = swm_edge("scan", kind, "--port", port, *extra)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"swm-edge scan: serial port {port} not found; check the cable/adapter and use "
        "/dev/serial/by-id/..."
    )
    assert len(result.stderr.splitlines()) == 1


@pytest.fixture
def pty_port() -> Iterator[str]:
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("kind", ["serial", "mbus"])
def test_busy_port_names_the_process(kind: str, pty_port: str) -> None:
    extra = ["--baudrate", "9600"] if kind == "serial" else []
    with serial.Serial(pty_port, exclusive=True):  # as a running agent holds its port
        result = swm_edge("scan", kind, "--port", pty_port, *extra)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"swm-edge scan: serial port {pty_port} is busy: process {os.getpid()} ("
    )
    assert result.stderr.endswith(
        "has it open; stop it first (e.g. sudo systemctl stop swm-edge) or scan another port\n"
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the CLI as a user without access",
)
def test_permission_denied_names_the_dialout_group(pty_port: str) -> None:
    # A USB adapter's node: root:dialout 0660; the CLI runs as nobody, not in dialout.
    os.chown(pty_port, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(pty_port, 0o660)
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "swm_edge",
            "scan",
            "serial",
            "--port",
            pty_port,
            "--baudrate",
            "9600",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"swm-edge scan: permission denied on serial port {pty_port} (owner root, group "
        "dialout, mode 0660): add user nobody to the dialout group (sudo usermod -aG dialout "
        "nobody) and log in again\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serial", "--port", "/dev/ttyUSB0", "--baudrate", "9600", "--ids", "0-300"],
            "Error: Invalid value for '--ids': 0-300 is outside 1-247",
        ),
        (
            ["tcp", "--host", "127.0.0.1", "--ids", "1-256"],
            "Error: Invalid value for '--ids': 1-256 is outside 0-255",
        ),
        (
            ["mbus", "--port", "/dev/ttyUSB0", "--addresses", "251"],
            "Error: Invalid value for '--addresses': 251 is outside 0-250",
        ),
        (
            ["serial", "--port", "/dev/ttyUSB0"],
            "Error: give --baudrate N (e.g. 9600), or --auto-baud to try the usual ones",
        ),
        (
            ["serial", "--port", "/dev/ttyUSB0", "--baudrate", "9600", "--parity", "X"],
            "Error: Invalid value for '--parity': 'X' is not one of 'n', 'e', 'o'.",
        ),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = swm_edge("scan", *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == message
    assert "Traceback" not in result.stderr
