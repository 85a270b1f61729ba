"""Tests of the driver author's kit in swm_edge.testing: simulated devices on pty pairs and
TCP ports, configs for one device, and the real agent run end to end against mosquitto."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import serial
from swm_edge_hil.rtu import check_crc, with_crc

from swm_edge.testing import (
    TEST_GATEWAY,
    FrameHandler,
    ModbusTcpDevice,
    ModbusTcpDeviceFactory,
    Mosquitto,
    PipelineFactory,
    SerialDevice,
    SerialDeviceFactory,
    agent_env,
    config_line,
    run_cli,
    run_pipeline,
    write_config,
)


def _open(port: str) -> serial.Serial:
    # What a driver gets on a raw serial bus: pyserial on the port the kit hands out.
    return serial.Serial(port, baudrate=1200, bytesize=7, parity="E", timeout=0.5)


def test_serial_device_answers_terminated_requests(serial_device: SerialDeviceFactory) -> None:
    answers = {b"R\r": b"L=1.234\r\n", b"T\r": b"T=12.5\r\n"}
    sensor = serial_device(answers.get)
    with _open(sensor.port) as port:
        port.write(b"R\rT\rX\r")  # three requests in one write: framed one by one
        assert port.read_until(b"\n") == b"L=1.234\r\n"
        assert port.read_until(b"\n") == b"T=12.5\r\n"
        assert sensor.wait_requests(3) == [b"R\r", b"T\r", b"X\r"]
        # X got no answer: the device stayed silent, as None asks.
        assert port.read(1) == b""

        # Another behaviour while running: the sensor reports an error value.
        sensor.handler = lambda frame: b"L=ERR\r\n"
        port.write(b"R\r")
        assert port.read_until(b"\n") == b"L=ERR\r\n"

        sensor.write(b"\x00noise")  # unsolicited bytes reach the agent's side as they are
        assert port.read(6) == b"\x00noise"
    assert sensor.requests == [b"R\r", b"T\r", b"X\r", b"R\r"]


def test_serial_device_frames_by_silence(serial_device: SerialDeviceFactory) -> None:
    frames: list[bytes] = []

    def echo_length(frame: bytes) -> bytes:
        frames.append(frame)
        return bytes([len(frame)])

    device = serial_device(echo_length, terminator=None, idle_gap=0.05)
    with _open(device.port) as port:
        # Two writes closer together than the idle gap make one frame...
        port.write(b"\x01\x03")
        port.write(b"\x00\x00\x00\x02")
        assert port.read(1) == b"\x06"
        # ...and a pause longer than the gap ends a frame.
        port.write(b"\xaa")
        assert port.read(1) == b"\x01"
    assert frames == [b"\x01\x03\x00\x00\x00\x02", b"\xaa"]


def test_serial_device_link_and_close(tmp_path: Path) -> None:
    link = tmp_path / "serial" / "by-id" / "usb-ACME_level-if00"
    device = SerialDevice(lambda frame: b"ok\n", link=link)
    assert device.port == str(link)
    assert os.path.realpath(link) == device.pty_path
    assert device.pty_path.startswith("/dev/pts/")
    with _open(device.port) as port:
        port.write(b"?\r")
        assert port.read_until(b"\n") == b"ok\n"
    device.close()
    assert not link.exists() and not link.is_symlink()
    device.close()  # idempotent


def test_serial_device_handler_errors_fail_on_close() -> None:
    def broken(frame: bytes) -> bytes:
        raise ZeroDivisionError("simulator bug")

    device = SerialDevice(broken)
    with _open(device.port) as port:
        port.write(b"R\r")
        device.wait_requests(1)
        assert port.read(1) == b""  # unanswered, like a silent device...
    with pytest.raises(ZeroDivisionError, match="simulator bug"):
        device.close()  # ...but the test learns of it


def test_serial_device_wait_requests_times_out_with_what_it_got(
    serial_device: SerialDeviceFactory,
) -> None:
    device = serial_device(lambda frame: None)
    with _open(device.port) as port:
        port.write(b"A\r")
        with pytest.raises(TimeoutError, match=r"1 request\(s\).*b'A\\r'"):
            device.wait_requests(2, timeout=0.3)


def test_agent_env_puts_pythonpath_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/existing")
    env = agent_env({"SWM_TEST": "1"}, pythonpath=[Path("/opt/drivers"), "/more"])
    assert env["PYTHONPATH"] == os.pathsep.join(["/opt/drivers", "/more", "/existing"])
    assert env["SWM_TEST"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.delenv("PYTHONPATH")
    assert agent_env(pythonpath=["/a"])["PYTHONPATH"] == "/a"
    assert "PYTHONPATH" not in agent_env()


def test_write_config_positions_match_validate(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(
        tmp_path / "site" / "config.yaml",
        broker=mosquitto,
        bus={"type": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
        device={"id": "level-1", "unit": 1, "profile": "my-level", "max_gap": "wide"},
        profiles=[_level_profile(tmp_path)],
    )
    text = config.read_text()
    assert f'gateway: {{"id": "{TEST_GATEWAY}"}}' in text
    assert (config.parent / "profiles" / "my-level.yaml").is_file()
    result = run_cli("validate", "--config", config)
    assert result.returncode == 2, result.stdout + result.stderr
    line, col = config_line(config, "max_gap")
    assert f"{config}:{line}:{col}: devices.0.max_gap: " in result.stderr
    assert result.stderr.count(f"{config}:") == 1, result.stderr  # the profile resolved

    with pytest.raises(KeyError):
        config_line(config, "no_such_key")


def _level_profile(folder: Path) -> Path:
    """A site's own profile, as an integrator writes one before any driver code."""
    path = folder / "my-level.yaml"
    path.write_text(
        "manufacturer: ACME\n"
        "model: LT-1 level transmitter\n"
        "kind: level transmitter\n"
        'source: "ACME LT-1 manual, rev. 2, section 7 (Modbus registers)"\n'
        "points:\n"
        "  - {name: level, table: holding, address: 0, type: float32, unit: m}\n"
        "  - {name: alarm, table: holding, address: 2, type: uint16}\n"
    )
    return path


def test_run_pipeline_with_a_profile_and_a_tcp_simulator(tmp_path: Path) -> None:
    """The whole path with no fixtures at all: the plain helpers start their own broker."""
    profile = _level_profile(tmp_path)
    with ModbusTcpDevice(profile, values={"level": 2.75, "alarm": 3}) as meter:
        started = time.monotonic()
        run = run_pipeline(
            bus={"type": "modbus-tcp", "host": meter.host, "port": meter.port},
            device={"unit": 1, "profile": "my-level", "interval": 0.5},
            profiles=[profile],
            count=3,
        )
    assert time.monotonic() - started < 20
    assert run.returncode == 0
    assert len(run.docs) == 3
    assert run.values("level") == [2.75, 2.75, 2.75]
    assert run.values("alarm") == [3, 3, 3]
    first = run.docs[0]
    assert first["gateway"] == TEST_GATEWAY and first["device"] == "dev-1"
    assert first["readings"] == {
        "level": {"value": 2.75, "unit": "m", "quality": "good"},
        "alarm": {"value": 3, "quality": "good"},
    }
    assert [d["seq"] for d in run.docs] == [1, 2, 3]
    assert [s["state"] for s in run.status] == ["online", "offline"]
    assert "Traceback" not in run.log
    assert not run.config.exists()  # a temporary workdir is removed


def test_pipeline_fixture_follows_faults_and_values(
    pipeline: PipelineFactory, modbus_tcp_device: ModbusTcpDeviceFactory
) -> None:
    meter = modbus_tcp_device("keller-series30", unit=5, values={"pressure": 4.25})
    run = pipeline(
        bus={"type": "modbus-tcp", "host": meter.host, "port": meter.port, "timeout": 0.3},
        device={"id": "pressure-1", "unit": 5, "profile": "keller-series30", "retries": 0},
    )
    assert run.telemetry_topic == f"swm/{TEST_GATEWAY}/pressure-1/telemetry"
    [doc] = run.wait_docs(1)
    served = meter.values()
    assert {name: r["value"] for name, r in doc["readings"].items()} == served

    meter.set_fault("silent")
    timed_out = {"value": None, "unit": "bar", "quality": "bad", "error": "timeout"}
    bad = run.wait_docs(1, where=lambda d: d["readings"]["pressure"] == timed_out)
    assert all(r["quality"] == "bad" for r in bad[0]["readings"].values())

    meter.set_fault(None)
    meter.set("pressure", 5.5)
    run.wait_docs(1, where=lambda d: d["readings"]["pressure"].get("value") == 5.5)
    result = run.stop()
    assert result.returncode == 0
    seqs = [d["seq"] for d in result.docs]
    assert seqs == list(range(1, len(seqs) + 1))


def _rtu_holding_registers(unit: int, registers: dict[int, int]) -> FrameHandler:
    """A Modbus RTU device answering function 3 from ``registers``: enough of the
    protocol to show a binary device framed by silence on a pty."""

    def handle(frame: bytes) -> bytes | None:
        if len(frame) != 8 or not check_crc(frame) or frame[0] != unit or frame[1] != 3:
            return None  # not for us, or broken: a real RTU device stays silent
        address, count = struct.unpack(">HH", frame[2:6])
        words = [registers.get(a, 0) for a in range(address, address + count)]
        return with_crc(bytes([unit, 3, 2 * count]) + struct.pack(f">{count}H", *words))

    return handle


def test_pipeline_over_a_pty_device(
    pipeline: PipelineFactory, serial_device: SerialDeviceFactory, tmp_path: Path
) -> None:
    high, low = struct.unpack(">HH", struct.pack(">f", 1.5))
    device = serial_device(
        _rtu_holding_registers(7, {0: high, 1: low, 2: 42}),
        terminator=None,
        link=tmp_path / "by-id" / "usb-FTDI_rs485-if00",
    )
    run = pipeline(
        bus={"type": "modbus-rtu", "port": device.port, "baudrate": 19200, "timeout": 0.3},
        device={
            "unit": 7,
            "points": [
                {"name": "level", "address": 0, "type": "float32", "unit": "m"},
                {"name": "state", "address": 2, "type": "uint16"},
            ],
        },
    )
    docs = run.wait_docs(2)
    assert docs[0]["readings"] == {
        "level": {"value": 1.5, "unit": "m", "quality": "good"},
        "state": {"value": 42, "quality": "good"},
    }
    # The two points are one block read: one request per poll, exactly as the agent sent it.
    first = device.requests[0]
    assert first == with_crc(bytes([7, 3, 0, 0, 0, 3]))

    device.handler = lambda frame: None  # the device dies
    run.wait_docs(1, where=lambda d: d["readings"]["level"].get("error") == "timeout")
    assert run.stop().returncode == 0


def test_pipeline_reports_an_agent_that_refuses_its_config(pipeline: PipelineFactory) -> None:
    run = pipeline(
        bus={"type": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
        device={"unit": 1, "points": [{"name": "x", "address": 0}], "interval": "often"},
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError) as excinfo:
        run.wait_docs(1, timeout=30)
    assert time.monotonic() - started < 15  # noticed when the agent exits, not at the timeout
    line, col = config_line(run.config, "interval")
    message = str(excinfo.value)
    assert "exited with status 2" in message
    assert f"{run.config}:{line}:{col}: devices.0.interval:" in message


def test_run_pipeline_times_out_with_the_agent_log(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with (
        SerialDevice(lambda frame: None, terminator=None) as mute,
        pytest.raises(TimeoutError) as excinfo,
    ):
        run_pipeline(
            bus={"type": "modbus-rtu", "port": mute.port, "timeout": 0.1},
            device={"unit": 1, "points": [{"name": "x", "address": 0}], "retries": 0},
            broker=mosquitto,
            workdir=tmp_path,
            timeout=4,  # long enough for a first (bad) reading on a busy machine
            count=100,
        )
    message = str(excinfo.value)
    assert "of 100 telemetry message(s)" in message
    assert "'error': 'timeout'" in message  # what did arrive: bad readings
    assert "agent log (end):" in message
    assert (tmp_path / "agent.log").is_file()  # a given workdir is kept


def test_runs_on_a_shared_broker_see_only_their_own_status(
    tmp_path: Path, mosquitto: Mosquitto, modbus_tcp_device: ModbusTcpDeviceFactory
) -> None:
    meter = modbus_tcp_device("keller-series30", values={"pressure": 1.0})
    options: dict[str, Any] = {
        "bus": {"type": "modbus-tcp", "host": meter.host, "port": meter.port},
        "device": {"unit": 1, "profile": "keller-series30"},
        "broker": mosquitto,
        "count": 1,
    }
    first = run_pipeline(workdir=tmp_path / "first", **options)
    meter.set("pressure", 2.0)
    # The broker still holds the first run's retained "offline" for the same gateway.
    second = run_pipeline(workdir=tmp_path / "second", **options)
    for run, pressure in ((first, 1.0), (second, 2.0)):
        assert [s["state"] for s in run.status] == ["online", "offline"]
        assert run.values("pressure") == [pressure]
