"""The sd_notify(3) protocol: readiness, status, watchdog pings and stop/reload notices.

The protocol is one datagram of ``KEY=VALUE`` lines to the Unix socket named in
``$NOTIFY_SOCKET``; speaking it directly costs a dozen lines and keeps libsystemd (and
its Python binding, which needs a compiler and headers) off the gateway. Outside systemd,
with no ``$NOTIFY_SOCKET``, every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# STATUS= is shown by `systemctl status`; a long line helps nobody there.
MAX_STATUS = 200


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace socket
    if raw.startswith("/"):
        return raw
    return None  # vsock and other address families are not used on a gateway


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = self._watchdog(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @staticmethod
    def _watchdog(env: Mapping[str, str]) -> float | None:
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process the watchdog is meant for: a child that inherited
        # the environment must not ping on its parent's behalf.
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 1_000_000

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` fields (keyword ``READY="1"`` becomes ``READY=1``) in one
        datagram. Returns False when no manager listens or the send failed."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._warned:  # systemd gone (shutdown) or a wrong path: say it once
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """The service is up: config loaded, buffer open, buses set up."""
        return self.send(READY="1", STATUS=status[:MAX_STATUS], MAINPID=str(os.getpid()))

    def status(self, status: str) -> bool:
        """A one-line summary for ``systemctl status``."""
        return self.send(STATUS=status[:MAX_STATUS])

    def watchdog(self) -> bool:
        """A sign of life; send it only when the agent really makes progress."""
        return self.send(WATCHDOG="1")

    def reloading(self) -> bool:
        """A reload began; :meth:`ready` ends it."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec))

    def stopping(self) -> bool:
        """The service is shutting down."""
        return self.send(STOPPING="1", STATUS="stopping")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
