"""Tests of the mydevice driver: the protocol functions alone, then the real agent end to
end with a simulated sensor on a pty (swm_edge.testing; needs mosquitto installed).

Run with ``pytest`` from the package folder once it is installed (``pip install -e .``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from swm_edge_mydevice.driver import parse_answer, request_for

from swm_edge.testing import (
    FrameHandler,
    Mosquitto,
    PipelineFactory,
    SerialDeviceFactory,
    config_line,
    run_cli,
    write_config,
)

# The sensor's line settings; the agent's raw serial bus takes them as they are.
BUS = {"type": "serial", "baudrate": 9600, "timeout": 0.3}


def ls100(address: int, level: str = "1.234", temperature: str = "12.5") -> FrameHandler:
    """A simulated LS-100: answers its own read request, ignores everything else."""

    def handle(frame: bytes) -> bytes | None:
        if frame != request_for(address):
            return None
        return f"*{address:02d},L={level},T={temperature}\r\n".encode()

    return handle


def test_request_and_answer_format() -> None:
    assert request_for(7) == b"#07R\r"
    assert parse_answer(b"*07,L=1.234,T=12.5\r\n", 7) == {"L": "1.234", "T": "12.5"}
    assert parse_answer(b"*07,L=ERR\r\n", 7) == {"L": "ERR"}
    with pytest.raises(ValueError, match="address 8"):
        parse_answer(b"*08,L=1.0\r\n", 7)
    with pytest.raises(ValueError, match="not an LS-100 answer"):
        parse_answer(b"\x00*07,L=1.0\r\n", 7)


def test_the_agent_publishes_the_sensor_values(
    pipeline: PipelineFactory, serial_device: SerialDeviceFactory
) -> None:
    sensor = serial_device(ls100(address=7))
    run = pipeline(
        driver="mydevice",
        bus={**BUS, "port": sensor.port},
        device={"id": "tank-1", "profile": "acme-ls100", "address": 7},
    )
    docs = run.wait_docs(2)
    assert docs[0]["device"] == "tank-1"
    assert docs[0]["readings"] == {
        "level": {"value": 1.234, "unit": "m", "quality": "good"},
        "temperature": {"value": 12.5, "unit": "Cel", "quality": "good"},
    }
    assert sensor.requests[:2] == [b"#07R\r", b"#07R\r"]
    assert run.stop().returncode == 0


def test_a_failed_channel_is_one_bad_point(
    pipeline: PipelineFactory, serial_device: SerialDeviceFactory
) -> None:
    sensor = serial_device(ls100(address=3, level="ERR"))
    run = pipeline(
        driver="mydevice",
        bus={**BUS, "port": sensor.port},
        # The device's own point replaces the profile's of the same name (here: in mm).
        device={
            "profile": "acme-ls100",
            "address": 3,
            "points": [{"name": "temperature", "field": "T", "unit": "Cel", "offset": -0.5}],
        },
    )
    [doc] = run.wait_docs(1)
    assert doc["readings"] == {
        "level": {"value": None, "unit": "m", "quality": "bad", "error": "decode"},
        "temperature": {"value": 12.0, "unit": "Cel", "quality": "good"},
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "timeout"),  # the sensor is silent
        (b"*03,L=1.2", "timeout"),  # the answer is cut off
        (b"*04,L=1.2\r\n", "crc"),  # another sensor answers
    ],
)
def test_line_problems_become_bad_readings(
    pipeline: PipelineFactory,
    serial_device: SerialDeviceFactory,
    answer: bytes | None,
    reason: str,
) -> None:
    sensor = serial_device(lambda frame: answer)
    run = pipeline(
        driver="mydevice",
        bus={**BUS, "port": sensor.port},
        device={"profile": "acme-ls100", "address": 3, "retries": 0},
    )
    [doc] = run.wait_docs(1)
    assert {r["error"] for r in doc["readings"].values()} == {reason}


def test_validate_points_at_a_wrong_option(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        broker=mosquitto,
        bus={**BUS, "port": "/dev/ttyUSB0"},
        device={"profile": "acme-ls100", "address": 250},
        driver="mydevice",
    )
    result = run_cli("validate", "--config", config)
    assert result.returncode == 2
    line, col = config_line(config, "address")
    assert f"{config}:{line}:{col}: devices.0.address: " in result.stderr
