"""sd_notify over real Unix datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swm_edge.notify import MAX_STATUS, Notifier


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_the_messages_systemd_expects(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_interval is None
    assert n.ready("3 devices (0 offline)")
    assert fields(sock) == {
        "READY": "1",
        "STATUS": "3 devices (0 offline)",
        "MAINPID": str(os.getpid()),
    }
    assert n.watchdog()
    assert fields(sock) == {"WATCHDOG": "1"}
    assert n.status("x" * 500)
    assert fields(sock) == {"STATUS": "x" * MAX_STATUS}
    assert n.reloading()
    reload = fields(sock)
    assert reload["RELOADING"] == "1"
    # MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds (systemd matches it to the signal)
    now_usec = int(time.monotonic() * 1_000_000)
    assert 0 <= now_usec - int(reload["MONOTONIC_USEC"]) < 2_000_000
    assert n.stopping()
    assert fields(sock) == {"STOPPING": "1", "STATUS": "stopping"}
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"swm-edge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert fields(sock) == {"WATCHDOG": "1"}
    finally:
        sock.close()


def test_without_a_service_manager_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        # meant for another process (we inherited it): not ours to feed
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **env}).watchdog_interval == interval


def test_a_vanished_manager_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="swm_edge.notify")
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.watchdog() is False
    assert n.watchdog() is False
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot notify the service manager" in warnings[0]


def test_unsupported_address_families_are_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
