"""A virtual RS-485 line in pure Python: two pty pairs and a relay thread between them.

::

    agent (client) <-> agent_port | pty A | relay thread | pty B | device_port <-> simulators

The agent opens :attr:`NullModem.agent_port`, the simulated devices (e.g.
:func:`swm_edge_hil.servers.serve_rtu`) open :attr:`NullModem.device_port`. The relay
copies bytes both ways and, because it sits on the line, can break it the way real lines
break: it frames the master's RTU requests to learn the addressed unit, and applies that
unit's fault from :attr:`NullModem.faults` to the reply: every kind of
:mod:`swm_edge_hil.faults` (drop, replace by an exception or by garbage, corrupt the CRC,
delay, drop at random, rewrite the frame: wrong unit, truncated, over-long; or hold it back
as a ``late_echo`` and release it right after the next request it frames, see
:meth:`NullModem.echo_late`). It can also pull the plug on the
agent side (:meth:`NullModem.unplug`) and plug a fresh port in (:meth:`NullModem.replug`)
under the same stable symlink, as a USB adapter under ``/dev/serial/by-id/`` would.

Needs no root and no socat: only ``os.openpty`` (Linux and other POSIX systems).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import queue
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from swm_edge_hil.faults import FRAME_KINDS, Fault, FaultKind, FaultTable, garbage_bytes
from swm_edge_hil.pty import Pty, close_fds, make_link, remove_link
from swm_edge_hil.rtu import UNKNOWN_LENGTH, exception_frame, request_length, response_length

__all__ = ["NullModem"]

_AGENT = "agent"
_DEVICE = "device"


@dataclass
class _Pending:
    """The request whose reply the relay is waiting for, and the fault to apply to it."""

    unit: int
    function: int
    fault: Fault


class NullModem:
    """A virtual RS-485 line between an agent and simulated devices, with fault injection.

    Args:
        agent_link: if given, a symlink to the agent side is kept at this path (parents
            are created) and :attr:`agent_port` is that path, stable across
            :meth:`replug`.
        device_link: the same for the device side.
        faults: faults per unit id; a new empty table by default.
        baudrate: if given, every chunk is delivered only after the time it would take on
            a line of this speed (``char_bits`` bits per byte); default: no delay.
        char_bits: bits per character on the emulated line (8N1 = 10).
        frame_gap: silence (seconds) that ends a frame whose length the relay cannot tell
            from its header.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        *,
        agent_link: str | Path | None = None,
        device_link: str | Path | None = None,
        faults: FaultTable | None = None,
        baudrate: float | None = None,
        char_bits: int = 10,
        frame_gap: float = 0.005,
    ) -> None:
        self.faults = faults if faults is not None else FaultTable()
        self._agent_link = Path(agent_link) if agent_link is not None else None
        self._device_link = Path(device_link) if device_link is not None else None
        self._char_time = char_bits / baudrate if baudrate else 0.0
        self._frame_gap = frame_gap
        self._agent: Pty | None = None
        self._device: Pty | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._running = False
        # Relay state, touched only by the relay thread once it runs.
        self._req_buf = bytearray()
        self._req_time = 0.0
        self._rsp_buf = bytearray()
        self._rsp_time = 0.0
        self._pending: _Pending | None = None
        self._outq: list[tuple[float, int, str, bytes]] = []
        self._seq = 0
        self._busy_until = {_AGENT: 0.0, _DEVICE: 0.0}
        # late_echo release: to requests of these units (empty: any), alone or merged into
        # the next bytes sent to the agent (set by echo_late; replaced whole, never mutated,
        # so the relay thread always sees a consistent pair).
        self._echo: tuple[frozenset[int], bool] = (frozenset(), False)
        self._echo_queued = bytearray()
        #: Counters: requests (framed from the agent), bytes_to_device, bytes_to_agent, and
        #: per fault action dropped, replaced, corrupted (bad_crc and the frame-rewriting
        #: kinds), delayed (late, and late_echo held), echoed (late_echo released);
        #: lost_bytes (no reader).
        self.stats: collections.Counter[str] = collections.Counter()
        #: The last chunks written to each side: ``("to_device" | "to_agent", bytes)``.
        self.trace: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=256)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> NullModem:
        """Open both pty pairs, make the links and start the relay thread."""
        if self._running:
            return self
        self._agent = Pty.open()
        self._device = Pty.open()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        make_link(self._agent_link, self._agent.path)
        make_link(self._device_link, self._device.path)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="nullmodem-relay", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the relay, close every pty and remove the links."""
        if not self._running:
            return
        self._command("stop")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._running = False
        for pty in (self._agent, self._device):
            if pty is not None:
                pty.close()
        self._agent = self._device = None
        close_fds(self._wake_r, self._wake_w)
        for link in (self._agent_link, self._device_link):
            remove_link(link)

    def __enter__(self) -> NullModem:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public state --------------------------------------------------------------------

    @property
    def agent_port(self) -> str:
        """The path the agent opens: the stable link if one was asked for, else the pty."""
        if self._agent_link is not None:
            return str(self._agent_link)
        if self._agent is None:
            raise RuntimeError("the null modem is not started or is unplugged")
        return self._agent.path

    @property
    def device_port(self) -> str:
        """The path the simulated devices open."""
        if self._device_link is not None:
            return str(self._device_link)
        if self._device is None:
            raise RuntimeError("the null modem is not started")
        return self._device.path

    @property
    def agent_pty(self) -> str | None:
        """The pty behind the agent side now (changes on :meth:`replug`), or ``None``."""
        return self._agent.path if self._agent is not None else None

    @property
    def plugged(self) -> bool:
        """False between :meth:`unplug` and :meth:`replug`."""
        return self._agent is not None

    def set_fault(self, unit: int, fault: Fault | str | None) -> None:
        """Put a fault on the replies of ``unit`` (``None``: heal it)."""
        self.faults.set(unit, fault)

    def echo_late(self, units: Iterable[int] | None = None, *, with_answer: bool = False) -> None:
        """Where a reply held by a ``late_echo`` fault goes.

        By default it is sent to the agent right after the next request the relay frames,
        to any unit, before that request's own answer. ``units``: only right after a request
        to one of these units (the echo stays held until then). ``with_answer``: written
        together with the next bytes the relay sends the agent (that request's answer), as
        when a late answer ends right where the next one begins on the wire, so the agent
        reads both in one go.
        """
        self._echo = (frozenset(units or ()), with_answer)

    def unplug(self) -> None:
        """Pull the agent-side plug: remove the link and close the pty, so the agent's
        open port fails (EIO) and the path no longer exists."""
        self._command("unplug")

    def replug(self) -> None:
        """Plug a new agent-side pty in and point the link at it, as a re-enumerated USB
        adapter would come back. Open it again to use it."""
        self._command("replug")

    # -- commands --------------------------------------------------------------------------

    def _command(self, name: str) -> None:
        done = threading.Event()
        if self._thread is None or not self._thread.is_alive():
            self._execute(name)
            return
        self._commands.put((name, done))
        os.write(self._wake_w, b"\0")
        if not done.wait(timeout=5):
            raise TimeoutError(f"null modem relay did not run {name!r}")

    def _execute(self, name: str) -> None:
        if name == "stop":
            self._running = False
        elif name == "unplug" and self._agent is not None:
            remove_link(self._agent_link)
            self._agent.close()
            self._agent = None
            self._req_buf.clear()
            self._pending = None
            self._echo_queued.clear()
        elif name == "replug" and self._agent is None:
            self._agent = Pty.open()
            make_link(self._agent_link, self._agent.path)

    # -- relay thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            while not self._commands.empty():
                name, done = self._commands.get_nowait()
                self._execute(name)
                done.set()
            if not self._running:
                return
            assert self._device is not None
            fds = [self._wake_r, self._device.master]
            if self._agent is not None:
                fds.append(self._agent.master)
            readable, _, _ = select.select(fds, [], [], self._timeout(time.monotonic()))
            now = time.monotonic()
            for fd in readable:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 512)
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if not data:
                    continue
                if self._agent is not None and fd == self._agent.master:
                    self._from_agent(data, now)
                else:
                    self._from_device(data, now)
            self._flush_idle(now)
            self._deliver_due(now)

    def _timeout(self, now: float) -> float | None:
        deadlines = []
        if self._outq:
            deadlines.append(self._outq[0][0])
        if self._req_buf:
            deadlines.append(self._req_time + self._frame_gap)
        if self._rsp_buf:
            deadlines.append(self._rsp_time + self._frame_gap)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _from_agent(self, data: bytes, now: float) -> None:
        self._req_buf += data
        self._req_time = now
        while self._req_buf:
            n = request_length(bytes(self._req_buf))
            if n is None or n == UNKNOWN_LENGTH or len(self._req_buf) < n:
                return  # more bytes, or the end-of-frame silence, will tell
            frame = bytes(self._req_buf[:n])
            del self._req_buf[:n]
            self._request(frame, now)

    def _from_device(self, data: bytes, now: float) -> None:
        if self._pending is None:
            self._send(_AGENT, data, now)
            return
        self._rsp_buf += data
        self._rsp_time = now
        n = response_length(bytes(self._rsp_buf))
        if n is None or n == UNKNOWN_LENGTH or len(self._rsp_buf) < n:
            return
        frame = bytes(self._rsp_buf[:n])
        rest = bytes(self._rsp_buf[n:])
        self._rsp_buf.clear()
        self._reply(frame, now)
        if rest:
            self._send(_AGENT, rest, now)

    def _flush_idle(self, now: float) -> None:
        if self._req_buf and now - self._req_time >= self._frame_gap:
            frame = bytes(self._req_buf)
            self._req_buf.clear()
            self._request(frame, now)
        if self._rsp_buf and now - self._rsp_time >= self._frame_gap:
            frame = bytes(self._rsp_buf)
            self._rsp_buf.clear()
            self._reply(frame, now)

    def _request(self, frame: bytes, now: float) -> None:
        self.stats["requests"] += 1
        unit = frame[0]
        fault = self.faults.get(unit)
        # One transaction at a time on RS-485: a new request supersedes an unanswered one.
        self._pending = _Pending(unit, frame[1] if len(frame) > 1 else 0, fault) if fault else None
        self._rsp_buf.clear()
        self._send(_DEVICE, frame, now)
        units, with_answer = self._echo
        if units and unit not in units:
            return
        held = self.faults.take_held()
        if held is not None:
            self.stats["echoed"] += 1
            if with_answer:
                self._echo_queued += held
            else:
                self._send(_AGENT, held, now)

    def _reply(self, frame: bytes, now: float) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            self._send(_AGENT, frame, now)
            return
        fault, kind = pending.fault, pending.fault.kind
        if kind is FaultKind.SILENT or (
            kind is FaultKind.INTERMITTENT and not self.faults.answers(fault)
        ):
            self.stats["dropped"] += 1
        elif kind is FaultKind.EXCEPTION:
            self.stats["replaced"] += 1
            self._send(_AGENT, exception_frame(pending.unit, pending.function, fault.code), now)
        elif kind is FaultKind.GARBAGE:
            self.stats["replaced"] += 1
            self._send(_AGENT, garbage_bytes(self.faults.rng, len(frame)), now)
        elif kind is FaultKind.BAD_CRC:
            self.stats["corrupted"] += 1
            self._send(_AGENT, frame[:-1] + bytes((frame[-1] ^ 0xFF,)), now)
        elif kind is FaultKind.LATE:
            self.stats["delayed"] += 1
            self._send(_AGENT, frame, now, delay=fault.delay)
        elif kind in FRAME_KINDS:
            self.stats["corrupted"] += 1
            self._send(_AGENT, self.faults.reply(fault, frame), now)
        elif kind is FaultKind.LATE_ECHO:
            self.stats["delayed"] += 1
            self.faults.hold(frame)
        else:
            self._send(_AGENT, frame, now)

    def _send(self, side: str, data: bytes, now: float, *, delay: float = 0.0) -> None:
        if side == _AGENT and self._echo_queued:
            data = bytes(self._echo_queued) + data
            self._echo_queued.clear()
        start = max(now + delay, self._busy_until[side])
        due = start + len(data) * self._char_time
        if self._char_time:
            # The line is busy while the bytes are on it; the next chunk queues behind.
            self._busy_until[side] = due
        if due <= now:
            self._write(side, data)
            return
        self._seq += 1
        heapq.heappush(self._outq, (due, self._seq, side, data))

    def _deliver_due(self, now: float) -> None:
        while self._outq and self._outq[0][0] <= now:
            _, _, side, data = heapq.heappop(self._outq)
            self._write(side, data)

    def _write(self, side: str, data: bytes) -> None:
        pty = self._agent if side == _AGENT else self._device
        if pty is None:
            self.stats["lost_bytes"] += len(data)
            return
        self.trace.append((f"to_{side}", data))
        self.stats[f"bytes_to_{side}"] += len(data)
        view = memoryview(data)
        while view:
            try:
                written = os.write(pty.master, view)
            except (BlockingIOError, OSError):
                # Nobody reads that side and its buffer is full: the bytes are lost, as
                # on a real line with nobody listening.
                self.stats["lost_bytes"] += len(view)
                return
            view = view[written:]
