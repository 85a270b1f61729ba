"""Storage faults with the real agent: the disk fills up, the buffer file is damaged or
truncated, the data folder turns read-only. The agent keeps polling, says what is wrong on
the status topic and in `swm-edge status`, recovers, and deletes nothing it could deliver.

A small tmpfs and a read-only bind mount need root (CI runs as root); locally without root
these tests skip, in CI they fail (swm_edge.testing.unavailable)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swm_edge_hil.harness import GATEWAY, AgentProcess, site_config, telemetry
from swm_edge_hil.site import DemoSite

from swm_edge.buffer import Buffer
from swm_edge.model import PointValue, Reading
from swm_edge.testing import Mosquitto, MqttCollector, unavailable, wait_until


def mount(*args: str) -> None:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs or a read-only bind mount needs root")
    subprocess.run(["mount", *args], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def config_in(tmp_path: Path, data: Path, broker: Mosquitto, site: DemoSite) -> Path:
    config = site_config(tmp_path, broker, site)
    text = config.read_text().replace(
        f"path: {tmp_path / 'buffer.sqlite'}", f"path: {data / 'buffer.sqlite'}"
    )
    # the status socket stays outside the faulty folder
    config.write_text(text + f"status_socket: {tmp_path / 'status.sock'}\n")
    return config


def status_of(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "swm_edge", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def seqs(collector: MqttCollector) -> list[int]:
    return sorted({d["seq"] for d in telemetry(collector.messages())})


def test_disk_full_then_room_again(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Callable[..., AgentProcess],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data))
    try:
        sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/#")
        config = config_in(tmp_path, data, mosquitto, site)
        agent = run_agent(config)
        wait_until(lambda: len(seqs(sub)) >= 3, 20, "first readings")
        # fill the disk to the last byte
        filler = data / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        wait_until(
            lambda: (status_of(config)["buffer"].get("condition") or "") != "", 30, "condition"
        )
        snap = status_of(config)
        assert "full" in snap["buffer"]["condition"], snap["buffer"]
        # still polling: the devices' poll counters keep rising
        polls = {d: v["polls"] for d, v in snap["devices"].items()}
        time.sleep(3)
        later = status_of(config)
        assert all(later["devices"][d]["polls"] > polls[d] for d in polls)
        assert later["buffer"]["held"] > 0
        # ... and the status topic says so
        wait_until(
            lambda: any(
                "buffer" in (m.json().get("problems") or {})
                for m in sub.messages(f"swm/{GATEWAY}/status")
            ),
            15,
            "problems on the status topic",
        )
        filler.unlink()  # room again
        wait_until(lambda: status_of(config)["buffer"].get("condition") is None, 40, "recovery")
        last_status = sub.messages(f"swm/{GATEWAY}/status")[-1].json()
        wait_until(
            lambda: "problems" not in sub.messages(f"swm/{GATEWAY}/status")[-1].json(),
            15,
            "status topic back to normal",
        )
        assert agent.stop() == 0
        got = seqs(sub)
        assert got == list(range(1, got[-1] + 1))  # nothing lost, nothing skipped
        assert last_status["state"] == "online"
        assert "buffer: recovered after" in agent.log()
    finally:
        umount(data)


def test_a_damaged_buffer_is_moved_aside_and_numbering_goes_on(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Callable[..., AgentProcess],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "buffer.sqlite"
    with Buffer(path, max_bytes=8 << 20) as buf:
        seq = buf.append(
            [Reading("old", 1_795_000_000.0 + i, {"x": PointValue.good(i)}) for i in range(500)]
        )[-1]
    size = path.stat().st_size
    with path.open("r+b") as f:  # a power cut mid-write: the second half is garbage
        f.seek(size // 2)
        f.write(os.urandom(size - size // 2))
    sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
    config = config_in(tmp_path, data, mosquitto, site)
    agent = run_agent(config)
    wait_until(lambda: len(seqs(sub)) >= 6, 30, "readings from a new buffer")
    assert agent.stop() == 0
    aside = [p.name for p in data.iterdir() if ".damaged-" in p.name]
    assert any(name.startswith("buffer.sqlite.damaged-") for name in aside), aside
    got = seqs(sub)
    # the new buffer numbers after the old one: no seq is reused for another reading
    assert got[0] > seq
    assert got == list(range(got[0], got[-1] + 1))
    assert "is damaged: moved to" in agent.log()


def test_a_read_only_data_folder_holds_readings_until_it_is_writable(
    tmp_path: Path,
    site: DemoSite,
    mosquitto: Mosquitto,
    mqtt_collector: Any,
    run_agent: Callable[..., AgentProcess],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    mount("--bind", str(data), str(data))
    try:
        mount("-o", "remount,bind,ro", str(data))
        sub = mqtt_collector(mosquitto, f"swm/{GATEWAY}/+/telemetry")
        config = config_in(tmp_path, data, mosquitto, site)
        agent = run_agent(config)
        wait_until(
            lambda: (
                (tmp_path / "status.sock").exists()
                and (status_of(config)["buffer"].get("condition") or "") != ""
            ),
            30,
            "condition",
        )
        assert status_of(config)["buffer"]["held"] > 0
        assert not sub.messages()  # nothing is sent that is not stored first
        mount("-o", "remount,bind,rw", str(data))
        wait_until(lambda: len(seqs(sub)) >= 6, 40, "held readings delivered")
        assert agent.stop() == 0
        got = seqs(sub)
        assert got == list(range(1, got[-1] + 1))
        assert (data / "buffer.sqlite").exists()
    finally:
        umount(data)


def test_someone_elses_database_at_buffer_path_is_refused_and_left_alone(
    tmp_path: Path, site: DemoSite, mosquitto: Mosquitto
) -> None:
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    path = data / "buffer.sqlite"
    with sqlite3.connect(path) as conn:  # e.g. buffer.path pointed at another program's file
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    before = path.read_bytes()
    config = config_in(tmp_path, data, mosquitto, site)
    run = subprocess.run(
        [sys.executable, "-m", "swm_edge", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert "not a swm-edge buffer" in run.stderr and "Traceback" not in run.stderr
    assert path.read_bytes() == before
    assert not [p for p in data.iterdir() if ".damaged-" in p.name]
