"""Local MQTT brokers for the demo, the tests and the benchmarks.

Two ways to get a broker on 127.0.0.1:

* :class:`Mosquitto` runs a real ``mosquitto`` binary with a generated configuration in a
  private work directory (plain listener, optional password file, optional TLS listener).
* :func:`start_demo_broker` picks what the machine has: mosquitto if installed, otherwise the
  pure-Python amqtt broker from the optional ``swm-edge[demo]`` extra, run in a subprocess.

This module is runtime code (``swm-edge demo`` uses it), so it depends on the standard library
only; amqtt is imported in the child process alone. Run ``python -m swm_edge.broker --port N``
to serve amqtt in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "BrokerError",
    "BrokerHandle",
    "BrokerNotFoundError",
    "BrokerStartError",
    "Mosquitto",
    "TlsFiles",
    "amqtt_available",
    "find_mosquitto",
    "free_port",
    "start_demo_broker",
]

BrokerKind = Literal["mosquitto", "amqtt"]

# Debian/Ubuntu put the broker in /usr/sbin, which is not on a normal user's PATH; Homebrew
# and source installs use the other two.
_MOSQUITTO_FALLBACK_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
_INSTALL_HINT = (
    "install mosquitto (e.g. `apt-get install mosquitto`) or the pure-Python broker with "
    "`pip install 'swm-edge[demo]'`"
)
_LOG_TAIL_LINES = 30


class BrokerError(RuntimeError):
    """Base class of the errors raised while providing a local broker."""


class BrokerNotFoundError(BrokerError):
    """No usable broker implementation is installed."""


class BrokerStartError(BrokerError):
    """A broker process was started but did not come up; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is only reserved until this call returns, so another process may take it before
    the caller binds it; callers that start servers on it should expect a rare bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Return the path of the ``mosquitto`` executable (PATH first, then sbin folders) or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA that clients trust, and the server's cert and key."""

    ca_cert: Path
    cert: Path
    key: Path


def _port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path.name} is empty)"


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_listening(
    proc: subprocess.Popen[bytes],
    host: str,
    ports: Iterable[int],
    timeout: float,
    describe: Callable[[], str],
) -> None:
    """Wait until every port accepts connections, or raise BrokerStartError with ``describe()``."""
    pending = list(ports)
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise BrokerStartError(f"broker exited with code {code} while starting\n{describe()}")
        pending = [p for p in pending if not _port_accepts(host, p)]
        # Checking liveness after the ports answer guards against a port that some other
        # process was holding while ours failed to bind and is about to exit.
        if not pending and proc.poll() is None:
            return
        if time.monotonic() > deadline:
            _terminate(proc, 2.0)
            raise BrokerStartError(
                f"broker did not listen on {host} port(s) {pending} within {timeout:g} s\n"
                f"{describe()}"
            )
        time.sleep(0.02)


def _mosquitto_password_line(username: str, password: str) -> str:
    """One password-file line in mosquitto 2.x's PBKDF2-SHA512 (``$7$``) format.

    Same layout as ``mosquitto_passwd`` writes: 12-byte salt, 101 iterations, standard base64.
    Generating it here avoids depending on ``mosquitto_passwd``, which not every package ships.
    """
    if not username or ":" in username or "\n" in username:
        raise ValueError(f"invalid MQTT username for a mosquitto password file: {username!r}")
    salt = secrets.token_bytes(12)
    iterations = 101
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    salt64 = base64.b64encode(salt).decode()
    hash64 = base64.b64encode(digest).decode()
    return f"{username}:$7${iterations}${salt64}${hash64}"


class Mosquitto:
    """A real mosquitto broker process on ``host`` with a generated configuration.

    Args:
        port: plain MQTT port; a free one is chosen if None. It stays the same across
            :meth:`restart`.
        host: address to listen on (also what clients should connect to).
        allow_anonymous: let clients connect without credentials (mosquitto's global setting).
        users: username -> password pairs written to a hashed ``password_file``. Combine
            with ``allow_anonymous=False`` to make credentials mandatory.
        tls: server certificate, key and CA for an extra TLS listener on ``tls_port``.
        tls_port: port of the TLS listener; a free one is chosen if None and ``tls`` is given.
        executable: mosquitto binary; found with :func:`find_mosquitto` if None.
        workdir: folder for the config, password file and logs; a private temporary folder
            (deleted by :meth:`close`) if None. A given folder is created and kept.
        extra_config: additional raw configuration lines appended at the end.
        persistence: keep sessions and queued messages across :meth:`restart`.
        start_timeout: seconds :meth:`start` waits for the listeners.

    Raises:
        BrokerNotFoundError: no mosquitto executable was found.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        allow_anonymous: bool = True,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
        executable: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        extra_config: Sequence[str] = (),
        start_timeout: float = 10.0,
        persistence: bool = False,
    ) -> None:
        exe = os.fspath(executable) if executable is not None else find_mosquitto()
        if exe is None:
            raise BrokerNotFoundError(
                "mosquitto executable not found on PATH or in /usr/sbin; "
                "install it (e.g. `apt-get install mosquitto`)"
            )
        self._executable = exe
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._tls = tls
        self._tls_port = (tls_port if tls_port is not None else free_port(host)) if tls else None
        self._allow_anonymous = allow_anonymous
        self._users = dict(users or {})
        self._extra_config = list(extra_config)
        self._persistence = persistence
        self._start_timeout = start_timeout
        self._owns_workdir = workdir is None
        self._workdir = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix="swm-mosquitto-"))
        )
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], float], Mosquitto] | None = None

    @property
    def host(self) -> str:
        """Address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """Plain MQTT port."""
        return self._port

    @property
    def tls_port(self) -> int | None:
        """TLS listener port, or None without TLS."""
        return self._tls_port

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files the broker was configured with."""
        return self._tls

    @property
    def workdir(self) -> Path:
        """Folder holding the generated config, password file and logs."""
        return self._workdir

    @property
    def config_path(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self._workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """mosquitto's own log file."""
        return self._workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    def log_text(self) -> str:
        """Everything mosquitto logged so far (empty if nothing yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> None:
        lines = [
            "# generated by swm_edge.broker.Mosquitto",
            # With persistence, sessions and queued QoS 1 messages survive a restart (the
            # database is written on SIGTERM), like a production broker's.
            f"persistence {'true' if self._persistence else 'false'}",
            f"persistence_location {self._workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"allow_anonymous {'true' if self._allow_anonymous else 'false'}",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the 'mosquitto' user, which cannot write
            # our log or read our files in a private work directory.
            lines.append("user root")
        if self._users:
            password_file = self._workdir / "passwords"
            password_file.write_text(
                "".join(_mosquitto_password_line(u, p) + "\n" for u, p in self._users.items())
            )
            password_file.chmod(0o600)
            lines.append(f"password_file {password_file}")
        lines.append(f"listener {self._port} {self._host}")
        if self._tls is not None:
            lines += [
                f"listener {self._tls_port} {self._host}",
                f"cafile {self._tls.ca_cert}",
                f"certfile {self._tls.cert}",
                f"keyfile {self._tls.key}",
            ]
        lines += self._extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def _ports(self) -> list[int]:
        return [self._port] + ([self._tls_port] if self._tls_port is not None else [])

    def _describe(self) -> str:
        return (
            f"--- {self.log_path} (last lines) ---\n{_tail(self.log_path)}\n"
            f"--- mosquitto stdout/stderr ---\n{_tail(self._workdir / 'mosquitto.out')}"
        )

    def start(self) -> Self:
        """Start the broker and wait until all its ports accept connections.

        Does nothing if it is already running.

        Raises:
            BrokerStartError: a port is taken, the process exited, or it did not listen in
                time; the message includes the tail of mosquitto's log.
        """
        if self.running:
            return self
        for port in self._ports():
            if _port_accepts(self._host, port):
                raise BrokerStartError(f"port {self._host}:{port} is already in use")
        self._write_config()
        with open(self._workdir / "mosquitto.out", "ab") as out:
            proc = subprocess.Popen(
                [self._executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._proc = proc
        # Kills the broker if the owner forgets stop() or the interpreter exits first.
        self._finalizer = weakref.finalize(self, _terminate, proc, 2.0)
        _wait_listening(proc, self._host, self._ports(), self._start_timeout, self._describe)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, wait up to ``timeout`` s, then SIGKILL. Idempotent."""
        if self._proc is not None:
            _terminate(self._proc, timeout)
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def restart(self) -> Self:
        """Stop and start again on the same port(s); clients must reconnect."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker and delete the work directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Mosquitto({self._host}:{self._port}, tls_port={self._tls_port}, {state})"


class BrokerHandle:
    """A broker started by :func:`start_demo_broker`.

    Attributes:
        host: address clients connect to.
        port: plain MQTT port.
        kind: ``"mosquitto"`` or ``"amqtt"``.
    """

    def __init__(self, host: str, port: int, kind: BrokerKind, stop: Callable[[], None]) -> None:
        self.host = host
        self.port = port
        self.kind: BrokerKind = kind
        self._stop = stop
        self._stopped = False

    def stop(self) -> None:
        """Stop the broker and remove its temporary files. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"BrokerHandle(kind={self.kind!r}, host={self.host!r}, port={self.port})"


def amqtt_available() -> bool:
    """True if the optional amqtt broker (``swm-edge[demo]``) is importable."""
    return importlib.util.find_spec("amqtt") is not None


def _amqtt_stopper(
    proc: subprocess.Popen[bytes],
    finalizer: weakref.finalize[[subprocess.Popen[bytes], float], subprocess.Popen[bytes]],
    workdir: Path,
) -> Callable[[], None]:
    def stop() -> None:
        _terminate(proc, 5.0)
        finalizer.detach()
        shutil.rmtree(workdir, ignore_errors=True)

    return stop


def _start_amqtt(host: str, port: int | None, timeout: float) -> BrokerHandle:
    workdir = Path(tempfile.mkdtemp(prefix="swm-amqtt-"))
    log = workdir / "amqtt.log"
    env = dict(os.environ)
    # The child imports swm_edge; make it find the same copy as this process even when
    # swm_edge is used from a source tree that is not installed.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    # A port we picked can be taken between free_port() and the child's bind; retry then.
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port(host)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "swm_edge.broker", "--host", host, "--port", str(chosen)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finalizer = weakref.finalize(proc, _terminate, proc, 2.0)
        try:
            _wait_listening(
                proc, host, [chosen], timeout, lambda: f"--- amqtt output ---\n{_tail(log)}"
            )
        except BrokerStartError:
            finalizer()
            if attempt + 1 < attempts:
                continue
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return BrokerHandle(host, chosen, "amqtt", _amqtt_stopper(proc, finalizer, workdir))
    raise AssertionError("unreachable")  # pragma: no cover


def start_demo_broker(
    *,
    kind: Literal["auto", "mosquitto", "amqtt"] = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 15.0,
) -> BrokerHandle:
    """Start a local broker for ``swm-edge demo`` and return once it accepts connections.

    With ``kind="auto"`` this uses mosquitto when it is installed (PATH or /usr/sbin), else
    the pure-Python amqtt broker (``pip install 'swm-edge[demo]'``) in a subprocess. The
    other kinds force one implementation. The broker allows anonymous clients and keeps
    nothing on disk beyond a temporary folder removed by :meth:`BrokerHandle.stop`.

    Args:
        kind: ``"auto"``, ``"mosquitto"`` or ``"amqtt"``.
        host: address to listen on.
        port: port to listen on; a free one if None.
        timeout: seconds to wait for the broker to listen.

    Raises:
        BrokerNotFoundError: the requested (or, for auto, any) broker is not installed.
        BrokerStartError: the broker process did not come up.
    """
    use_mosquitto = kind == "mosquitto" or (kind == "auto" and find_mosquitto() is not None)
    if use_mosquitto:
        broker = Mosquitto(port, host=host, start_timeout=timeout)
        try:
            broker.start()
        except BaseException:
            broker.close()
            raise
        return BrokerHandle(host, broker.port, "mosquitto", broker.close)
    if not amqtt_available():
        if kind == "amqtt":
            raise BrokerNotFoundError("amqtt is not installed: `pip install 'swm-edge[demo]'`")
        raise BrokerNotFoundError(f"no MQTT broker available: {_INSTALL_HINT}")
    return _start_amqtt(host, port, timeout)


def _serve_amqtt(host: str, port: int) -> None:
    """Run an anonymous amqtt broker on host:port until SIGTERM or SIGINT."""
    # Imported by name so this module needs neither amqtt nor its (absent) type information.
    broker_module = importlib.import_module("amqtt.broker")
    bind_host = f"[{host}]" if ":" in host else host
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{bind_host}:{port}"}},
        # Only anonymous auth: amqtt's default plugin set adds $SYS publishing and packet
        # logging, which the demo does not want.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        broker = broker_module.Broker(config)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        with contextlib.suppress(Exception):
            await broker.shutdown()

    asyncio.run(serve())


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m swm_edge.broker", description="Serve an anonymous amqtt MQTT broker."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    _serve_amqtt(args.host, args.port)


if __name__ == "__main__":
    _main()
