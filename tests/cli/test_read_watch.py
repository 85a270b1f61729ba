"""``swm-edge read --watch``: live polling against the simulated site, run as a user would
(a subprocess; JSON lines on a pipe, the live table on a real pseudo-terminal)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from swm_edge_hil.harness import site_config
from swm_edge_hil.site import DemoSite

from swm_edge.broker import free_port


class _NoBroker:
    # read never connects to a broker; nothing listens here.
    host = "127.0.0.1"
    port = free_port()


class Lines:
    """Lines of a pipe, read by a thread so a test can wait for them with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float) -> str | None:
        """The next line, or None at end of stream; fails the test after ``timeout``."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; so far: {self.seen}")
        if line is not None:
            self.seen.append(line)
        return line


def start_watch(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swm_edge", "read", "--config", str(config), "--watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def docs_until(lines: Lines, done: Any, timeout: float = 20) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(docs):
        line = lines.next(max(0.1, deadline - time.monotonic()))
        assert line is not None, f"output ended early: {lines.seen}"
        docs.append(json.loads(line))
    return docs


def ts(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()


def test_watch_json_prints_a_line_per_poll_until_ctrl_c(tmp_path: Path, site: DemoSite) -> None:
    site.pressure.set("pressure", 4.25)
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    proc = start_watch(config, "--json")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        sims = {"flow-1": site.flow_meter, "pressure-1": site.pressure, "quality-1": site.sonde}

        # Every device's first poll at once, then one per interval on the wall-clock grid.
        docs = docs_until(lines, lambda d: sum(x["device"] == "quality-1" for x in d) >= 3)
        for device, sim in sims.items():
            mine = [d for d in docs if d["device"] == device]
            assert len(mine) >= 2, (device, docs)
            for doc in mine:
                assert {k: v["value"] for k, v in doc["readings"].items()} == sim.values()
                assert all(v["quality"] == "good" for v in doc["readings"].values())
            # After the immediate first poll, polls sit on whole seconds, 1 s apart.
            stamps = [ts(d) for d in mine[1:]]
            assert all(s % 1 < 0.15 for s in stamps), stamps
            assert all(0.8 < b - a < 1.2 for a, b in itertools.pairwise(stamps))
        first = next(d for d in docs if d["device"] == "pressure-1")
        assert first["readings"]["pressure"] == {"value": 4.25, "unit": "bar", "quality": "good"}

        # A value changed on the device shows in a later poll: it is really polling.
        site.pressure.set("pressure", 6.5)
        docs_until(
            lines,
            lambda d: any(
                x["device"] == "pressure-1" and x["readings"]["pressure"]["value"] == 6.5 for x in d
            ),
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # read never touches the buffer (nor MQTT: nothing listens at the broker's address).
    assert not (tmp_path / "buffer.sqlite").exists()


def test_watch_one_device_and_a_dead_one(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    proc = start_watch(config, "--json", "--device", "pressure-1")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        docs = docs_until(lines, lambda d: len(d) >= 2)
        assert {d["device"] for d in docs} == {"pressure-1"}
        # The transmitter stops answering: bad values with the reason, then good again.
        site.null_modem.set_fault(1, "silent")
        docs_until(
            lines,
            lambda d: any(
                x["readings"]["pressure"] == {"value": None, "unit": "bar", "quality": "bad",
                                              "error": "timeout"}
                for x in d
            ),
        )  # fmt: skip
        site.null_modem.set_fault(1, None)
        docs_until(lines, lambda d: d and d[-1]["readings"]["pressure"]["quality"] == "good")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_json_stops_quietly_when_the_reader_goes_away(tmp_path: Path, site: DemoSite) -> None:
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    result = subprocess.run(
        f"{sys.executable} -m swm_edge read --config {config} --watch --json | head -n 4",
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 4
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def _read_pty(master: int, until: float, buf: bytearray, want: bytes | None = None) -> None:
    while time.monotonic() < until:
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        buf += chunk
        if want is not None and want in buf:
            return


def test_watch_table_on_a_terminal(tmp_path: Path, site: DemoSite) -> None:
    site.pressure.set("pressure", 4.25)
    config = site_config(tmp_path, _NoBroker(), site, interval=1)
    master, slave = os.openpty()
    # A real terminal size, so the table is laid out as a technician's terminal would.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swm_edge", "read", "--config", str(config), "--watch"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    out = bytearray()
    try:
        _read_pty(master, time.monotonic() + 20, out, b"4.25")
        assert b"4.25" in out, out.decode(errors="replace")
        screen = out.decode(errors="replace")
        assert "Ctrl-C to stop" in screen and "pressure-1" in screen and "bar" in screen
        # The table is redrawn in place as polls come in (cursor moves up over it).
        site.pressure.set("pressure", 7.75)
        _read_pty(master, time.monotonic() + 10, out, b"7.75")
        assert b"7.75" in out
        proc.send_signal(signal.SIGINT)
        _read_pty(master, time.monotonic() + 10, out)
        assert proc.wait(15) == 0
        assert b"Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.close(master)
