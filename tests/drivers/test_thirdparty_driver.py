"""A driver from another package, found by its entry point: installed with ``pip install
--target`` into a folder of its own (never into the venv), put on the agent's PYTHONPATH,
listed by ``swm-edge drivers``, checked by ``swm-edge validate`` and run by the real agent.

Also checks that drivers/_template is what docs/drivers.md says: a package that installs
as it is and whose own tests (written with swm_edge.testing) pass.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.version import Version

from swm_edge.testing import (
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

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tests" / "thirdparty" / "swm-edge-example-level"
TEMPLATE = REPO / "drivers" / "_template"


def _check_offline_build_tools() -> None:
    # Without build isolation pip builds with the venv's own setuptools, which makes wheels
    # by itself only from 70.1 on (before that it needs the wheel package).
    try:
        setuptools = version("setuptools")
    except PackageNotFoundError:
        setuptools = "0"
    has_wheel = importlib.util.find_spec("wheel") is not None
    assert has_wheel or Version(setuptools) >= Version("70.1"), (
        f"building a driver package offline needs setuptools>=70.1 (or wheel) in the venv; "
        f"it has setuptools {setuptools}: pip install 'setuptools>=70.1'"
    )


def pip_install_target(source: Path, work: Path) -> Path:
    """Install the package at ``source`` into ``work/site`` the way the docs show, offline.

    pip builds a local folder in place (``build/``, ``*.egg-info``); a copy keeps the
    repository clean.
    """
    _check_offline_build_tools()
    copy = work / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the example-level driver package is installed into."""
    return pip_install_target(PACKAGE, tmp_path_factory.mktemp("example-level"))


def level_sensor(frame: bytes) -> bytes | None:
    """The sensor the driver is written for: ``R\\r`` asks, ``L=<metres>\\r\\n`` answers."""
    return b"L=1.234\r\n" if frame == b"R\r" else None


def test_drivers_lists_it_with_version_and_origin(site_dir: Path) -> None:
    result = run_cli("drivers", "--json", pythonpath=[site_dir])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example-level"] == {
        "name": "example-level",
        "package": "swm-edge-example-level",
        "version": "0.3.1",
        "entry_point": "swm_edge_example_level.driver:LevelDriver",
        "bus_types": [],
        "profile_dirs": [],
        "location": str(site_dir / "swm_edge_example_level" / "driver.py"),
        "error": None,
    }
    assert rows["modbus"]["package"] == "swm-edge"  # the built-ins are still there

    # The venv itself was not touched: without the folder the driver is unknown.
    plain = json.loads(run_cli("drivers", "--json").stdout)
    assert "example-level" not in {row["name"] for row in plain}
    table = run_cli("drivers", pythonpath=[site_dir])
    assert "example-level" in table.stdout and "0.3.1" in table.stdout


def test_validate_accepts_it_and_places_its_option_errors(
    site_dir: Path, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    bus = {"type": "serial", "port": "/dev/ttyUSB-level", "baudrate": 9600}
    good = write_config(
        tmp_path / "good.yaml",
        broker=mosquitto,
        bus=bus,
        device={"id": "tank-1", "datum": 102.5},
        driver="example-level",
    )
    result = run_cli("validate", "--config", good, pythonpath=[site_dir])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{good}: OK (1 buses, 1 devices, 1 points)"

    # Without the package on its path the agent cannot find the driver, and says so.
    missing = run_cli("validate", "--config", good)
    assert missing.returncode == 2
    line, col = config_line(good, "driver")
    assert f"{good}:{line}:{col}: devices.0.driver: " in missing.stderr
    assert "example-level" in missing.stderr

    bad = write_config(
        tmp_path / "bad.yaml",
        broker=mosquitto,
        bus=bus,
        device={"id": "tank-1", "datum": "high", "range": 5},
        driver="example-level",
    )
    result = run_cli("validate", "--config", bad, pythonpath=[site_dir])
    assert result.returncode == 2, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{bad}:")]
    line, col = config_line(bad, "datum")
    key_line, key_col = config_line(bad, "range", at="key")
    assert len(errors) == 2, result.stderr
    assert errors[0].startswith(f"{bad}:{line}:{col}: devices.0.datum: ")
    assert "number" in errors[0]
    assert errors[1].startswith(f"{bad}:{key_line}:{key_col}: devices.0.range: ")
    assert "datum" in errors[1] and "points" in errors[1]  # the allowed keys are listed


def test_the_agent_runs_it_by_name(site_dir: Path, tmp_path: Path, mosquitto: Mosquitto) -> None:
    with SerialDevice(level_sensor, link=tmp_path / "by-id" / "usb-ACME_level-if00") as sensor:
        run = run_pipeline(
            driver="example-level",
            bus={"type": "serial", "port": sensor.port, "baudrate": 9600},
            device={"id": "tank-1", "datum": 0.5},
            pythonpath=[site_dir],
            broker=mosquitto,
            workdir=tmp_path / "run",
            count=3,
        )
        assert set(sensor.requests) == {b"R\r"}
    assert run.returncode == 0
    assert [doc["device"] for doc in run.docs] == ["tank-1"] * 3
    for doc in run.docs:
        assert doc["readings"] == {
            "level": {"value": pytest.approx(1.734), "unit": "m", "quality": "good"}
        }
    assert "Traceback" not in run.log


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "timeout"),  # silent
        (b"L=1.2", "timeout"),  # cut off: the terminator never came
        (b"\xff\x00L=1.2\r\n", "crc"),  # line noise in the answer
        (b"L=ERR\r\n", "decode"),  # a whole answer, but no number in it
    ],
)
def test_bad_answers_become_bad_readings_and_it_recovers(
    site_dir: Path,
    pipeline: PipelineFactory,
    serial_device: SerialDeviceFactory,
    answer: bytes | None,
    reason: str,
) -> None:
    sensor = serial_device(level_sensor)
    run = pipeline(
        driver="example-level",
        bus={"type": "serial", "port": sensor.port, "timeout": 0.2},
        device={"retries": 0, "offline_after": 1000},
        pythonpath=[site_dir],
    )
    run.wait_docs(1)
    sensor.handler = lambda frame: answer
    bad = {"value": None, "unit": "m", "quality": "bad", "error": reason}
    run.wait_docs(2, where=lambda doc: doc["readings"]["level"] == bad)

    sensor.handler = level_sensor
    last_bad = run.docs()[-1]["seq"]
    run.wait_docs(
        1,
        where=lambda doc: doc["seq"] > last_bad and doc["readings"]["level"]["quality"] == "good",
    )
    result = run.stop()
    assert result.returncode == 0
    assert "Traceback" not in result.log  # every failure was a ReadError, not a crash


def test_the_template_installs_and_its_own_tests_pass(tmp_path: Path) -> None:
    site = pip_install_target(TEMPLATE, tmp_path)
    assert (site / "swm_edge_mydevice" / "profiles" / "acme-ls100.yaml").is_file()
    listed = json.loads(run_cli("drivers", "--json", pythonpath=[site]).stdout)
    row = next(row for row in listed if row["name"] == "mydevice")
    assert (row["package"], row["version"], row["error"]) == ("swm-edge-mydevice", "0.1.0", None)
    # Its tests as its author runs them, from a checkout of the template, against the
    # installed copy (the checkout's folder is not on the path: the tests are outside it).
    tests = tmp_path / "src" / "tests"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path / "src",
        env=agent_env(pythonpath=[site]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
