"""A simulated serial device behind a pseudo-terminal pair: the base of the simulators.

::

    agent (pyserial) <-> port (pty slave) | pty master <-> reader thread <-> on_bytes()

:class:`PtyDevice` opens a pty pair with :func:`os.openpty` in raw mode; the agent opens
:attr:`PtyDevice.port` as it would a USB serial adapter (optionally through a stable
symlink, like ``/dev/serial/by-id/...``), and a thread reads the master side and hands
every chunk to :meth:`PtyDevice.on_bytes`. A subclass implements the protocol there, and
in :meth:`PtyDevice.on_idle` whatever depends on time alone (a frame ended by silence, a
message due later), and answers with :meth:`PtyDevice.write`.

:class:`Pty`, :func:`make_link`, :func:`remove_link` and :func:`close_fds` are the pieces,
for a relay that holds several ptys (:class:`swm_edge_hil.nullmodem.NullModem`).

A pty ignores baud rate and parity and cannot carry a break. Needs no root and no socat.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Pty", "PtyDevice", "close_fds", "make_link", "remove_link"]

# How long a writer waits for room in a full pty before it looks again whether the device
# was closed meanwhile.
_WRITE_WAIT = 0.1
# Pause after a read error, so a pty that keeps failing cannot make the reader spin.
_ERROR_PAUSE = 0.05


def close_fds(*fds: int) -> None:
    """Close these file descriptors, ignoring those already closed or never opened (-1)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class Pty:
    """One pty pair in raw mode: the simulator uses ``master``, the agent opens ``path``.

    The simulator keeps ``slave`` open as well: while one slave descriptor is open, reading
    the master waits for bytes instead of failing with EIO when the agent closes its port.
    """

    master: int
    slave: int
    path: str

    @classmethod
    def open(cls) -> Pty:
        """Open a new pair; the master is non-blocking."""
        master, slave = os.openpty()
        # Raw before the agent opens it: no echo, no line editing, no CR/LF translation -
        # bytes pass exactly as the driver sent them.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return cls(master, slave, os.ttyname(slave))

    def close(self) -> None:
        """Close both ends; the agent's open port then fails (EIO)."""
        close_fds(self.master, self.slave)


def make_link(link: Path | None, target: str) -> None:
    """Make ``link`` a symlink to ``target``, creating its parent folders (``None``:
    nothing to do).

    An existing symlink is replaced atomically, so the path never dangles (a re-plugged
    adapter keeps its name).

    Raises:
        FileExistsError: ``link`` exists and is not a symlink (it is never overwritten).
    """
    if link is None:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink")
    # Make the new link beside the old one and rename it over it.
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def remove_link(link: Path | None) -> None:
    """Remove the symlink ``link`` if there is one (``None``: nothing to do)."""
    if link is not None:
        link.unlink(missing_ok=True)


class PtyDevice:
    """A simulated device on one pty pair, answering from a reader thread.

    Subclasses override :meth:`on_bytes` (and :meth:`on_idle` if something happens without
    bytes arriving) and answer with :meth:`write`. Both hooks run in the reader thread, one
    at a time, so state they alone touch needs no lock.

    Args:
        link: if given, a symlink to the pty is kept at this path from :meth:`start` to
            :meth:`close` (parents are created), and :attr:`port` is that path.
        name: names the reader thread (with the port), for tracebacks and debuggers.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    #: Most bytes handed to :meth:`on_bytes` at once.
    read_size = 4096

    def __init__(self, *, link: str | Path | None = None, name: str = "pty-device") -> None:
        self._link = Path(link) if link is not None else None
        self._name = name
        self._pty: Pty | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._running = False
        # Answers from the reader and unasked writes from a test must not interleave.
        self._write_lock = threading.Lock()

    # -- the hooks -----------------------------------------------------------------------

    def on_bytes(self, data: bytes, now: float) -> None:
        """Handle ``data`` the agent sent, read at ``now`` (:func:`time.monotonic`).

        The default drops it.
        """

    def on_idle(self, now: float) -> float | None:
        """Do what is due at ``now`` without new bytes; return how many seconds the reader
        may wait for bytes before calling this again (``None``: until bytes arrive).

        Called once before the first wait and after every wake-up of the reader (bytes
        handled or time out). The default has nothing to do.
        """
        return None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Open the pty pair, make the link and start the reader (no-op while running)."""
        if self._running:
            return self
        self._pty = pty = Pty.open()
        self._wake_r, self._wake_w = os.pipe()
        make_link(self._link, pty.path)
        self._running = True
        self._thread = threading.Thread(
            target=self._run, args=(pty.master,), name=f"{self._name}({self.port})", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reader, close the pty (the agent's port then fails) and remove the link.
        Idempotent."""
        if not self._running:
            return
        self._running = False
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pty is not None:
            # Under the lock: a writer in another thread must not write to a closed (and
            # perhaps reused) descriptor.
            with self._write_lock:
                self._pty.close()
        close_fds(self._wake_r, self._wake_w)
        remove_link(self._link)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pty_path(self) -> str:
        """The pty's own path (``/dev/pts/N``); stays readable after :meth:`close`.

        Raises:
            RuntimeError: the device was never started.
        """
        if self._pty is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._pty.path

    @property
    def port(self) -> str:
        """The path the agent opens: the ``link`` if one was given, else :attr:`pty_path`."""
        return str(self._link) if self._link is not None else self.pty_path

    def write(self, data: bytes) -> bool:
        """Send ``data`` to the agent; safe from any thread.

        Waits while the pty's buffer is full (the agent is not reading yet). Returns
        ``False`` when bytes were lost: the device is closed, or the pty failed.
        """
        with self._write_lock:
            view = memoryview(data)
            while view:
                if not self._running or self._pty is None:
                    return False
                try:
                    view = view[os.write(self._pty.master, view) :]
                except BlockingIOError:
                    select.select([], [self._pty.master], [], _WRITE_WAIT)
                except OSError:
                    return False
        return True

    # -- the reader thread -----------------------------------------------------------------

    def _run(self, master: int) -> None:
        timeout = self.on_idle(time.monotonic())
        while self._running:
            try:
                readable, _, _ = select.select([master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return  # closed under us
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                continue  # only close() wakes the reader; the loop condition ends it
            now = time.monotonic()
            if master in readable:
                try:
                    data = os.read(master, self.read_size)
                except BlockingIOError:
                    data = b""
                except OSError:
                    # EIO cannot happen while the slave is open here, but a busy loop would
                    # be the worst answer if it did.
                    time.sleep(_ERROR_PAUSE)
                    data = b""
                if data:
                    self.on_bytes(data, now)
            timeout = self.on_idle(now)
