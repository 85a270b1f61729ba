"""The status snapshot, the status socket server and its client (swm_edge/status.py), and
the ``status_socket`` config key."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from swm_edge import __version__, status
from swm_edge.buffer import BufferStats
from swm_edge.clock import ClockMonitor, ClockSnapshot
from swm_edge.config import ConfigError, load_config
from swm_edge.model import DeviceSpec
from swm_edge.publish.mqtt import DestinationStats
from swm_edge.scheduler import DeviceStats
from swm_edge.status import (
    MAX_REQUEST,
    AgentRunningError,
    BusState,
    NoAgentError,
    StatusError,
    StatusServer,
    StatusSnapshot,
    build_snapshot,
    query,
    request_status,
)

T = TypeVar("T")
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def _device(device_id: str, bus: str = "lan", interval: float = 10.0) -> DeviceSpec:
    return DeviceSpec(id=device_id, bus=bus, interval=interval, points=())


def snapshot(**overrides: Any) -> StatusSnapshot:
    args: dict[str, Any] = {
        "gateway_id": "gw-1",
        "pid": 4242,
        "started": T0,
        "now": T0 + 125.5,
        "uptime_s": 125.4999,
        "broker_host": "mqtt.example.net",
        "broker_port": 8883,
        "mqtt": DestinationStats(
            connected=True, connects=2, published=40, acked=38, resent=3, connected_since=T0 + 5
        ),
        "buffer": BufferStats(depth=7, oldest_ts=T0 + 100.25, dropped=2, size_bytes=65536),
        "queued": 1,
        "devices": [
            (
                _device("flow-1"),
                DeviceStats(
                    polls=12,
                    good_polls=11,
                    errors=1,
                    overruns=1,
                    last_read=T0 + 120.0,
                    last_quality="good",
                    last_error="timeout",
                ),
            ),
            (_device("level-1", bus="rs485-1", interval=30), DeviceStats()),
        ],
        "buses": {
            "lan": BusState("modbus-tcp", True, 1, None),
            "rs485-1": BusState("modbus-rtu", False, 0, "serial port /dev/x is not present"),
        },
    }
    args.update(overrides)
    return build_snapshot(**args)


# ---- the snapshot -------------------------------------------------------------------


def test_snapshot_carries_every_figure() -> None:
    snap = snapshot()
    assert snap["gateway"] == "gw-1" and snap["version"] == __version__ and snap["pid"] == 4242
    assert snap["started"] == "2026-11-18T11:06:40.000Z"
    assert snap["now"] == "2026-11-18T11:08:45.500Z"
    assert snap["uptime_s"] == 125.5
    assert snap["mqtt"] == {
        "connected": True,
        "host": "mqtt.example.net",
        "port": 8883,
        "last_error": None,
        "published": 40,
        "acked": 38,
        "resent": 3,
        "connects": 2,
        "connected_since": "2026-11-18T11:06:45.000Z",
    }
    assert snap["buffer"] == {
        "depth": 7,
        "oldest_age_s": 25.25,
        "dropped": 2,
        "size_bytes": 65536,
        "queued": 1,
        "error": None,
        "condition": None,
        "held": 0,
        "lost": 0,
    }
    assert snap["devices"]["flow-1"] == {
        "bus": "lan",
        "interval": 10.0,
        "last_read": "2026-11-18T11:08:40.000Z",
        "last_read_age_s": 5.5,
        "quality": "good",
        "polls": 12,
        "good_polls": 11,
        "errors": 1,
        "overruns": 1,
        "offline": False,
        "consecutive_failures": 0,
        "last_error": "timeout",
    }
    never = snap["devices"]["level-1"]
    assert never["last_read"] is None and never["last_read_age_s"] is None
    assert never["quality"] is None and never["polls"] == 0 and never["interval"] == 30
    assert snap["buses"]["rs485-1"] == {
        "type": "modbus-rtu",
        "open": False,
        "opens": 0,
        "last_error": "serial port /dev/x is not present",
    }
    # JSON-ready as is: strict JSON (no NaN) round-trips to the same mapping.
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap


def test_snapshot_edge_values() -> None:
    snap = snapshot(
        mqtt=DestinationStats(connected=False, last_error="cannot connect", connected_since=T0),
        buffer=BufferStats(depth=0, oldest_ts=None, dropped=0, size_bytes=0),
    )
    assert snap["mqtt"]["connected"] is False and snap["mqtt"]["connected_since"] is None
    assert snap["mqtt"]["last_error"] == "cannot connect"
    assert snap["buffer"]["oldest_age_s"] is None
    # A row stored under a broken clock (NULL ts reads back as NaN): age unknown, not NaN.
    nan = snapshot(buffer=BufferStats(depth=1, oldest_ts=float("nan"), dropped=0, size_bytes=1))
    assert nan["buffer"]["oldest_age_s"] is None
    # The clock stepped back after the row was stored: no negative age.
    future = snapshot(buffer=BufferStats(depth=1, oldest_ts=T0 + 999, dropped=0, size_bytes=1))
    assert future["buffer"]["oldest_age_s"] == 0.0
    # The buffer's figures could not be read: the rest of the status still comes.
    missing = snapshot(buffer=None, buffer_error="the buffer did not answer within 2 s")
    assert missing["buffer"] == {
        "depth": None,
        "oldest_age_s": None,
        "dropped": None,
        "size_bytes": None,
        "queued": 1,
        "error": "the buffer did not answer within 2 s",
        "condition": None,
        "held": 0,
        "lost": 0,
    }
    assert missing["devices"]["flow-1"]["polls"] == 12


def test_snapshot_holds_no_secret(tmp_path: Path) -> None:
    from swm_edge.agent import Agent

    (tmp_path / "pw").write_text("s3cret-Pa55\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "gateway: {id: gw-1}\n"
        "mqtt: {host: 127.0.0.1, port: 1, username: gw-user-1, password_file: pw}\n"
        f"buffer: {{path: {tmp_path / 'b.sqlite'}}}\n"
    )
    agent = Agent(load_config(config))

    async def take() -> StatusSnapshot:
        await agent.spool.open()
        try:
            return await status.agent_snapshot(agent)
        finally:
            await agent.spool.close()

    snap = asyncio.run(take())
    text = json.dumps(snap)
    assert "s3cret" not in text and "gw-user-1" not in text and "pw" not in text
    assert snap["mqtt"]["host"] == "127.0.0.1" and snap["buffer"]["depth"] == 0


CLOCK: ClockSnapshot = {
    "synchronized": False,
    "trusted": False,
    "steps": 2,
    "last_step": {"size_s": 1234.5, "at": "2026-11-18T11:07:00.000Z"},
    "flagged_readings": 17,
}


def test_snapshot_clock_section() -> None:
    assert "clock" not in snapshot()  # an agent without a clock monitor
    snap = snapshot(clock=CLOCK)
    assert snap["clock"] == CLOCK
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap
    never: ClockSnapshot = {**CLOCK, "steps": 0, "last_step": None}
    assert snapshot(clock=never)["clock"]["last_step"] is None


def test_agent_snapshot_takes_the_agents_clock_monitor(tmp_path: Path) -> None:
    from swm_edge.agent import Agent

    config = tmp_path / "c.yaml"
    config.write_text(
        "gateway: {id: gw-1}\nmqtt: {host: 127.0.0.1, port: 1}\n"
        f"buffer: {{path: {tmp_path / 'b.sqlite'}}}\n"
    )
    agent = Agent(load_config(config))
    wall = [12.5]  # booted in 1970, the kernel says unsynchronised

    def synced() -> bool | None:
        return wall[0] > 1e9

    # The monotonic clock stands still: only the step moves the wall clock.
    agent.clock = ClockMonitor(  # type: ignore[attr-defined]
        wall=lambda: wall[0], mono=lambda: 50.0, synchronized=synced
    )

    async def take() -> tuple[StatusSnapshot, StatusSnapshot, StatusSnapshot]:
        await agent.spool.open()
        try:
            agent.clock.stamp()  # type: ignore[attr-defined]
            before = await status.agent_snapshot(agent)
            wall[0] = T0  # NTP steps the clock
            agent.clock.stamp()  # type: ignore[attr-defined]
            after = await status.agent_snapshot(agent)
            agent.clock = None  # type: ignore[attr-defined]
            without = await status.agent_snapshot(agent)
            return before, after, without
        finally:
            await agent.spool.close()

    before, after, without = asyncio.run(take())
    assert before["clock"] == {
        "synchronized": False,
        "trusted": False,
        "steps": 0,
        "last_step": None,
        "flagged_readings": 1,
    }
    assert after["clock"] == {
        "synchronized": True,
        "trusted": True,
        "steps": 1,
        "last_step": {"size_s": round(T0 - 12.5, 3), "at": "2026-11-18T11:06:40.000Z"},
        "flagged_readings": 1,
    }
    assert "clock" not in without


def test_clock_section_over_the_socket_is_checked(tmp_path: Path) -> None:
    async def make() -> StatusSnapshot:
        return snapshot(clock=CLOCK)

    runner = ServerThread(tmp_path / "swm-edge.sock", make)
    runner.call(runner.server.start())
    try:
        checked, raw = request_status(runner.server.path)
        assert checked["clock"] == raw["clock"] == CLOCK
    finally:
        runner.close()

    async def bad() -> StatusSnapshot:
        snap = snapshot(clock=CLOCK)
        snap["clock"]["steps"] = "two"  # type: ignore[typeddict-item]
        return snap

    runner = ServerThread(tmp_path / "swm-edge.sock", bad)
    runner.call(runner.server.start())
    try:
        with pytest.raises(StatusError, match=r"unexpected status from the agent at clock\.steps"):
            request_status(runner.server.path)
    finally:
        runner.close()


# ---- the server and the client ------------------------------------------------------


class ServerThread:
    """A :class:`StatusServer` on an event loop in a thread, so the blocking client can
    be tested against it as the CLI uses it."""

    def __init__(self, path: Path, snapshot: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = StatusServer(path, snapshot)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerThread]:
    async def make() -> StatusSnapshot:
        return snapshot()

    runner = ServerThread(tmp_path / "s" / "swm-edge.sock", make)
    runner.call(runner.server.start())
    try:
        yield runner
    finally:
        runner.close()


def raw_request(path: Path, payload: bytes, *, shut: bool = False) -> dict[str, Any]:
    """Send bytes as they are and return the one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer


def test_status_over_the_socket(served: ServerThread) -> None:
    path = served.server.path
    checked, raw = request_status(path)
    assert checked == raw == snapshot()
    assert query(path, "ping") == {"ok": True, "pid": os.getpid(), "version": __version__}


def test_socket_is_0660_from_the_start_whatever_the_umask(tmp_path: Path) -> None:
    async def make() -> StatusSnapshot:
        return snapshot()

    old = os.umask(0)  # the most open umask a service could inherit
    try:
        runner = ServerThread(tmp_path / "swm-edge.sock", make)
        runner.call(runner.server.start())
    finally:
        os.umask(old)
    try:
        st = os.stat(runner.server.path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getegid()
        # The process's umask is back to what it was.
        current = os.umask(old)
        os.umask(current)
        assert current == old
    finally:
        runner.close()
    assert not runner.server.path.exists()  # removed on stop


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"x" * (MAX_REQUEST + 10) + b"\n", "request too long"),
        (b"x" * 100_000, "request too long"),  # no newline at all
        (b'{"command": "status", "pad": "' + b"x" * 1200 + b'"}\n', "request too long"),
        (b"garbage\n", "not JSON"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"[" * 1000 + b"\n", "not JSON"),
        (b'["status"]\n', "must be a JSON object"),
        (b'{"command": 7}\n', "'command' must be a string"),
        (b'{"cmd": "status"}\n', "unknown key(s) cmd"),
        (b'{"command": "reboot"}\n', "unknown command 'reboot'; known: ping, status"),
        (b"\n", "not JSON"),
    ],
)
def test_bad_requests_get_an_error_and_the_server_keeps_working(
    served: ServerThread, payload: bytes, error: str
) -> None:
    path = served.server.path
    answer = raw_request(path, payload)
    assert answer["ok"] is False and error in answer["error"], answer
    assert len(json.dumps(answer)) < 300  # an echo of the garbage is bounded
    assert request_status(path)[0]["gateway"] == "gw-1"


def test_request_without_newline_then_eof_is_accepted(served: ServerThread) -> None:
    # `printf '{"command":"status"}' | socat - UNIX-CONNECT:...` sends no newline.
    answer = raw_request(served.server.path, b'{"command":"status"}', shut=True)
    assert answer["ok"] is True and answer["status"]["pid"] == 4242
    empty = raw_request(served.server.path, b"", shut=True)
    assert empty == {"ok": False, "error": "empty request"}


def test_silent_client_is_dropped_and_others_are_served(
    served: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "REQUEST_TIMEOUT", 0.5)
    path = served.server.path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(path))
        assert request_status(path)[0]["pid"] == 4242  # served meanwhile
        idle.settimeout(5)
        answer = json.loads(idle.recv(1024))
    assert answer == {"ok": False, "error": "no request line within 0.5 s"}


def test_snapshot_failure_is_an_error_answer(tmp_path: Path) -> None:
    async def broken() -> StatusSnapshot:
        raise RuntimeError("disk on fire")

    runner = ServerThread(tmp_path / "swm-edge.sock", broken)
    runner.call(runner.server.start())
    try:
        with pytest.raises(StatusError, match="the agent answered: internal error: disk on fire"):
            request_status(runner.server.path)
        assert query(runner.server.path, "ping")["ok"] is True
    finally:
        runner.close()


def test_client_errors_are_one_line_messages(tmp_path: Path) -> None:
    path = tmp_path / "swm-edge.sock"
    with pytest.raises(NoAgentError, match="no status socket"):
        query(path)
    # A socket nothing listens on: what a killed agent leaves.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(NoAgentError, match="is stale"):
        query(path)
    os.unlink(path)
    # Something that accepts but never answers.
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(path))
    mute.listen(1)
    try:
        with pytest.raises(StatusError, match=r"did not answer within 0\.3 s"):
            query(path, timeout=0.3)
    finally:
        mute.close()
        os.unlink(path)
    # Something that answers what is not a status.
    replies = [
        (b"hello\n", "not JSON"),
        (b'{"ok": true, "status": {"pid": "x"}}\n', "unexpected status"),
        (b'{"ok": false, "error": "busy"}\n', "the agent answered: busy"),
    ]
    for reply, match in replies:
        fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fake.bind(str(path))
        fake.listen(1)

        def answer(server: socket.socket = fake, data: bytes = reply) -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(data)

        t = threading.Thread(target=answer)
        t.start()
        try:
            with pytest.raises(StatusError, match=match):
                request_status(path)
        finally:
            t.join(5)
            fake.close()
            os.unlink(path)


def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "swm-edge.sock"

    async def make() -> StatusSnapshot:
        return snapshot()

    old = os.umask(0o022)
    try:
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    first = ServerThread(path, make)
    first.call(first.server.start())
    try:
        assert query(path, "ping")["ok"] is True
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # a new socket, not the old
        second = ServerThread(path, make)
        try:
            with pytest.raises(AgentRunningError, match=rf"pid {os.getpid()}\) is running"):
                second.call(second.server.start())
        finally:
            second.close()  # must not remove the first server's socket
        assert query(path, "ping")["ok"] is True
    finally:
        first.close()
    assert not path.exists()


def test_a_file_in_the_way_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "swm-edge.sock"
    path.write_text("precious")

    async def make() -> StatusSnapshot:
        return snapshot()

    runner = ServerThread(path, make)
    try:
        with pytest.raises(AgentRunningError, match="exists and is not a socket"):
            runner.call(runner.server.start())
    finally:
        runner.close()
    assert path.read_text() == "precious"


# ---- the config key -----------------------------------------------------------------


def _config(tmp_path: Path, extra: str, buffer: str = "buffer.sqlite") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"gateway: {{id: gw-1}}\nmqtt: {{host: 127.0.0.1}}\nbuffer: {{path: {buffer}}}\n{extra}"
    )
    return path


def test_status_socket_defaults_next_to_the_buffer(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, "", buffer="state/buffer.sqlite"))
    assert loaded.config.status_socket is None
    assert loaded.config.status_socket_path() == tmp_path / "state" / "swm-edge.sock"


def test_status_socket_is_relative_to_the_config(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, "status_socket: run/status.sock\n"))
    assert loaded.config.status_socket_path() == tmp_path / "run" / "status.sock"


def test_too_long_socket_paths_are_config_errors(tmp_path: Path) -> None:
    long_dir = "/tmp/" + "d" * 100
    with pytest.raises(ConfigError) as explicit:
        load_config(_config(tmp_path, f"status_socket: {long_dir}/s.sock\n"))
    (issue,) = explicit.value.issues
    assert (issue.line, issue.path) == (4, "status_socket")
    assert "112 bytes long" in issue.message and "at most 107 bytes" in issue.message
    with pytest.raises(ConfigError) as derived:
        load_config(_config(tmp_path, "", buffer=f"{long_dir}/buffer.sqlite"))
    (issue,) = derived.value.issues
    assert (issue.line, issue.path) == (3, "buffer")
    assert f"defaults to {long_dir}/swm-edge.sock (next to buffer.path)" in issue.message
    assert "set status_socket to a shorter path" in issue.message
    # 107 bytes exactly is fine.
    fits = "/tmp/" + "e" * (107 - len("/tmp/") - len("/s"))
    fitting = load_config(_config(tmp_path, f"status_socket: {fits}/s\n"))
    assert len(str(fitting.config.status_socket_path())) == 107
    # validate says so at FILE:LINE:COL, without a traceback.
    result = subprocess.run(
        [sys.executable, "-m", "swm_edge", "validate", "--config", str(tmp_path / "c.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0  # the last config written is the one that fits
    bad = _config(tmp_path, "status_socket: buffer.sqlite\n")
    result = subprocess.run(
        [sys.executable, "-m", "swm_edge", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:4:16: status_socket: the status socket" in result.stderr
    assert "is the buffer file" in result.stderr
