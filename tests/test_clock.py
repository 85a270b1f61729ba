"""Clock sanity (swm_edge/clock.py): the kernel's synchronisation status, the sanity floor,
steps of the wall clock, and what a step and a later sync do to buffered readings."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import math
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swm_edge import clock
from swm_edge.buffer import Buffer
from swm_edge.clock import (
    NOT_BEFORE,
    STA_UNSYNC,
    TIME_ERROR,
    UNSYNCHRONIZED,
    ClockMonitor,
    ClockStep,
    Timex,
    kernel_clock_synchronized,
    read_adjtimex,
)
from swm_edge.model import PointValue, Reading
from swm_edge.publish.encoders.json_v1 import encode
from swm_edge.testing import unavailable

T2026 = 1_795_406_410.0  # 2026-11-23T04:00:10Z
BOOT_1970 = 12.5  # a Pi without RTC, 12.5 s after boot


class FakeClocks:
    """Wall and monotonic clocks and the kernel's answer, all set by the test."""

    def __init__(self, wall: float, mono: float = 100.0, synced: bool | None = True) -> None:
        self.wall = wall
        self.mono = mono
        self.synced = synced
        self.asked = 0

    def synchronized(self) -> bool | None:
        self.asked += 1
        return self.synced

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move on together."""
        self.wall += seconds
        self.mono += seconds

    def monitor(self, **kwargs: float) -> ClockMonitor:
        return ClockMonitor(
            wall=lambda: self.wall,
            mono=lambda: self.mono,
            synchronized=self.synchronized,
            **kwargs,
        )


def clock_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "swm_edge.clock"]


# -- the floor and the kernel's word ---------------------------------------------------------


def test_not_before_is_2026_01_01_utc() -> None:
    from datetime import UTC, datetime

    assert datetime.fromtimestamp(NOT_BEFORE, UTC) == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("wall", "synced", "flag"),
    [
        (T2026, True, None),
        (T2026, None, None),  # status unknown, plausible time: trusted
        (T2026, False, UNSYNCHRONIZED),  # the kernel says no, whatever the time
        (BOOT_1970, None, UNSYNCHRONIZED),  # before the floor: certainly wrong
        (BOOT_1970, True, UNSYNCHRONIZED),  # ... even if the kernel believes it
        (NOT_BEFORE - 0.001, None, UNSYNCHRONIZED),
        (NOT_BEFORE, None, None),
        (math.nan, None, UNSYNCHRONIZED),
    ],
)
def test_stamp_flags_an_untrusted_clock(wall: float, synced: bool | None, flag: str | None) -> None:
    clocks = FakeClocks(wall, synced=synced)
    monitor = clocks.monitor()
    ts, got = monitor.stamp()
    assert got == flag
    assert ts == wall or (math.isnan(ts) and math.isnan(wall))
    assert monitor.flagged_readings == (0 if flag is None else 1)


def test_custom_floor() -> None:
    clocks = FakeClocks(1_000_000.0, synced=None)
    assert clocks.monitor(not_before=0.0).stamp() == (1_000_000.0, None)
    assert clocks.monitor(not_before=2_000_000.0).stamp() == (1_000_000.0, UNSYNCHRONIZED)


def test_sync_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "swm_edge.clock")
    clocks = FakeClocks(T2026, synced=False)
    monitor = clocks.monitor()
    for _ in range(50):
        assert monitor.stamp()[1] == UNSYNCHRONIZED
        clocks.advance(0.5)
    assert clock_records(caplog) == [
        (
            logging.WARNING,
            "clock not synchronised (per the kernel: no NTP sync): readings are flagged "
            '"unsynchronized" until it is',
        )
    ]
    caplog.clear()
    clocks.synced = True  # NTP slewed it in: no step
    for _ in range(50):
        clocks.advance(0.5)
        monitor.stamp()
    # The change is seen within the recheck period (1 s): at most two more flagged readings.
    assert 50 <= monitor.flagged_readings <= 52
    assert clock_records(caplog) == [
        (
            logging.INFO,
            f"clock synchronised; {monitor.flagged_readings} readings were flagged "
            "'unsynchronized' before",
        )
    ]
    assert monitor.stamp() == (clocks.wall, None)
    caplog.clear()
    clocks.synced = False  # lost sync (the kernel sets STA_UNSYNC after a long silence)
    clocks.advance(1.0)
    assert monitor.stamp()[1] == UNSYNCHRONIZED
    clocks.advance(1.0)
    assert monitor.stamp()[1] == UNSYNCHRONIZED
    assert [level for level, _ in clock_records(caplog)] == [logging.WARNING]


def test_first_state_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "swm_edge.clock")
    synced = FakeClocks(T2026, synced=True).monitor()
    for _ in range(3):
        synced.stamp()
    assert clock_records(caplog) == [(logging.INFO, "clock synchronised")]
    caplog.clear()
    unknown = FakeClocks(T2026, synced=None).monitor()
    for _ in range(3):
        unknown.stamp()
    ((level, message),) = clock_records(caplog)
    assert level == logging.INFO and "status is unknown" in message
    assert "after 2026-01-01T00:00:00.000Z" in message
    caplog.clear()
    early = FakeClocks(BOOT_1970, synced=None).monitor()
    for _ in range(3):
        early.stamp()
    ((level, message),) = clock_records(caplog)
    assert level == logging.WARNING
    assert "it shows 1970-01-01T00:00:12.500Z, which is before 2026-01-01" in message


# -- steps -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "word"), [(1234.5, "forward"), (-3600.0, "back")])
def test_steps_are_detected_with_size_and_direction(
    caplog: pytest.LogCaptureFixture, size: float, word: str
) -> None:
    caplog.set_level(logging.DEBUG, "swm_edge.clock")
    clocks = FakeClocks(T2026)
    monitor = clocks.monitor()
    monitor.stamp()
    clocks.advance(1.0)
    monitor.stamp()
    caplog.clear()
    clocks.advance(1.0)
    clocks.wall += size
    ts, flag = monitor.stamp()
    assert (ts, flag) == (clocks.wall, None)
    assert monitor.steps == 1
    assert monitor.last_step == ClockStep(at=clocks.wall, size=pytest.approx(size))
    ((level, message),) = clock_records(caplog)
    assert level == logging.WARNING
    assert message.startswith(f"wall clock stepped {word} by {abs(size):.1f} s (now 2026-")
    assert "buffered readings keep their order (seq)" in message
    # One warning per step: the next stamps see the new offset as the normal one.
    for _ in range(5):
        clocks.advance(1.0)
        monitor.stamp()
    assert monitor.steps == 1 and len(clock_records(caplog)) == 1
    snap = monitor.snapshot()
    assert snap["steps"] == 1
    assert snap["last_step"] is not None and snap["last_step"]["size_s"] == round(size, 3)


def test_drift_and_slew_are_not_steps() -> None:
    clocks = FakeClocks(T2026)
    monitor = clocks.monitor()
    monitor.stamp()
    # NTP slewing (500 ppm at most) and sub-threshold corrections, many times over: the
    # offset wanders by 10 s in all, but never by more than 2 s between two stamps.
    for _ in range(100):
        clocks.advance(1.0)
        clocks.wall += 0.1
        monitor.stamp()
    clocks.advance(1.0)
    clocks.wall += 1.99
    monitor.stamp()
    clocks.advance(1.0)
    clocks.wall -= 1.99
    monitor.stamp()
    assert monitor.steps == 0 and monitor.last_step is None
    clocks.wall += 2.01
    monitor.stamp()
    assert monitor.steps == 1


def test_step_threshold_is_configurable() -> None:
    clocks = FakeClocks(T2026)
    monitor = clocks.monitor(step_threshold=0.5)
    monitor.stamp()
    clocks.wall += 0.6
    monitor.stamp()
    assert monitor.steps == 1 and monitor.last_step is not None
    assert monitor.last_step.size == pytest.approx(0.6)
    with pytest.raises(ValueError, match="step_threshold"):
        clocks.monitor(step_threshold=0)


def test_kernel_is_asked_at_most_once_per_recheck_period() -> None:
    clocks = FakeClocks(T2026)
    monitor = clocks.monitor()
    for _ in range(1000):  # a burst of polls within the same millisecond
        monitor.stamp()
    assert clocks.asked == 1
    clocks.advance(0.75)
    monitor.stamp()
    assert clocks.asked == 1
    clocks.advance(0.25)
    monitor.stamp()
    assert clocks.asked == 2
    for _ in range(10):
        clocks.advance(0.25)
        monitor.stamp()
    assert clocks.asked == 4  # at 1.0 and 2.0 s after the previous question
    monitor.snapshot()  # the status command shares the cache
    assert clocks.asked == 4
    # A step: asked again at once (it is usually NTP's first sync).
    clocks.wall += 100.0
    monitor.stamp()
    assert clocks.asked == 5
    # recheck=0: every stamp asks.
    every = FakeClocks(T2026)
    m0 = every.monitor(recheck=0)
    for _ in range(5):
        m0.stamp()
    assert every.asked == 5


def test_snapshot_is_json_ready() -> None:
    clocks = FakeClocks(BOOT_1970, synced=False)
    monitor = clocks.monitor()
    assert monitor.snapshot() == {
        "synchronized": False,
        "trusted": False,
        "steps": 0,
        "last_step": None,
        "flagged_readings": 0,
    }
    for _ in range(3):
        clocks.advance(1.0)
        monitor.stamp()
    clocks.wall = T2026  # NTP steps it
    clocks.synced = True
    monitor.stamp()
    snap = monitor.snapshot()
    assert snap == {
        "synchronized": True,
        "trusted": True,
        "steps": 1,
        "last_step": {
            "size_s": round(T2026 - (BOOT_1970 + 3.0), 3),
            "at": "2026-11-23T04:00:10.000Z",
        },
        "flagged_readings": 3,
    }
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap


# -- a boot in 1970, then NTP: what the buffer and the wire see ---------------------------------


def test_boot_in_1970_then_sync_keeps_order_and_flags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Readings stamped by a monitor go through the real buffer (closed and reopened, as
    after a restart) to the wire contract: the 1970 ones flagged, seq order = taking order."""
    caplog.set_level(logging.DEBUG, "swm_edge.clock")
    clocks = FakeClocks(BOOT_1970, mono=BOOT_1970, synced=False)
    monitor = clocks.monitor()
    taken: list[Reading] = []

    def poll(i: int) -> None:
        ts, flag = monitor.stamp()
        taken.append(Reading("flow-1", ts, {"flow": PointValue.good(float(i), "m3/h")}, flag))
        clocks.advance(1.0)

    for i in range(3):
        poll(i)
    clocks.wall = T2026  # NTP's first answer steps the clock by 56 years
    clocks.synced = True
    for i in range(3, 5):
        poll(i)
    clocks.wall -= 3600.0  # a technician sets it back an hour (wrong zone): trusted still
    poll(5)

    path = tmp_path / "buffer.sqlite"
    with Buffer(path, max_bytes=1 << 20) as buf:
        assert buf.append(taken[:4]) == [1, 2, 3, 4]
        assert buf.append(taken[4:]) == [5, 6]
    with Buffer(path, max_bytes=1 << 20) as buf:  # a restart in between
        rows = buf.fetch("default", 0, 100)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.reading for r in rows] == taken
    assert [r.reading.clock for r in rows] == [UNSYNCHRONIZED] * 3 + [None] * 3
    docs = [json.loads(encode("gw-1", r.seq, r.reading)) for r in rows]
    assert [d["ts"][:4] for d in docs] == ["1970"] * 3 + ["2026"] * 3
    assert [d.get("clock") for d in docs] == ["unsynchronized"] * 3 + [None] * 3
    assert [d["readings"]["flow"]["value"] for d in docs] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert docs[5]["ts"] < docs[4]["ts"]  # ts went back; seq did not
    assert monitor.steps == 2 and monitor.flagged_readings == 3
    messages = [m for _, m in clock_records(caplog)]
    forward = T2026 - (BOOT_1970 + 3.0)  # from 1970 + 3 polls to NTP's time
    assert sum(f"stepped forward by {forward:.1f} s" in m for m in messages) == 1
    assert sum("stepped back by 3600.0 s" in m for m in messages) == 1
    assert sum(m.startswith("clock synchronised") for m in messages) == 1


# -- the kernel --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        (0, 0x2001, True),  # TIME_OK, PLL, nanosecond resolution: timesyncd/chrony at work
        (1, 0x0011, True),  # TIME_INS: a leap second is coming, still synchronised
        (TIME_ERROR, 0x0001, False),
        (0, STA_UNSYNC, False),
        (TIME_ERROR, STA_UNSYNC | 0x2000, False),
    ],
)
def test_kernel_state_and_status_bits(state: int, status: int, expected: bool) -> None:
    got = kernel_clock_synchronized(read=lambda: (state, status), flag_file=Path("/nonexistent"))
    assert got is expected


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS])
def test_without_adjtimex_the_timesyncd_flag_decides(tmp_path: Path, err: int) -> None:
    def refused() -> tuple[int, int]:
        raise OSError(err, "adjtimex")

    flag = tmp_path / "timesync" / "synchronized"
    assert kernel_clock_synchronized(read=refused, flag_file=flag) is None
    flag.parent.mkdir()
    flag.touch()
    assert kernel_clock_synchronized(read=refused, flag_file=flag) is True
    # The flag file is only a fallback: the kernel's word wins where there is one.
    unsynced = kernel_clock_synchronized(read=lambda: (TIME_ERROR, STA_UNSYNC), flag_file=flag)
    assert unsynced is False


def test_real_kernel_call_on_this_machine() -> None:
    got = kernel_clock_synchronized()
    assert got is None or isinstance(got, bool)
    if sys.platform != "linux":
        with pytest.raises(OSError):
            read_adjtimex()
        return
    try:
        state, status = read_adjtimex()
    except OSError as exc:  # a sandbox that forbids it: then the answer is the fallback's
        assert exc.errno in (errno.EPERM, errno.ENOSYS)
        assert got is (True if Path("/run/systemd/timesync/synchronized").exists() else None)
        return
    assert 0 <= state <= TIME_ERROR and isinstance(status, int)
    assert got is (not (state == TIME_ERROR or status & STA_UNSYNC))


def test_timex_matches_the_platform_abi() -> None:
    # Worked out from glibc's <bits/timex.h> (legacy layout, every slong a C long): 4-byte
    # modes, 19 longs/ints/padding and a 44-byte tail; 208 bytes on LP64, 128 on ILP32.
    long_size = ctypes.sizeof(ctypes.c_long)
    assert ctypes.sizeof(Timex) == {8: 208, 4: 128}[long_size]
    assert Timex.status.offset == 5 * long_size
    assert Timex.tai.offset == ctypes.sizeof(Timex) - 48


C_LAYOUT = r"""
#include <stddef.h>
#include <stdio.h>
#include <sys/timex.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct timex),
           offsetof(struct timex, status), offsetof(struct timex, constant),
           offsetof(struct timex, time), offsetof(struct timex, tick),
           offsetof(struct timex, shift), offsetof(struct timex, tai));
    return 0;
}
"""


@pytest.mark.skipif(sys.platform != "linux", reason="struct timex is Linux's")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc and the libc headers")
def test_timex_matches_the_c_compilers_struct(tmp_path: Path) -> None:
    src = tmp_path / "timex.c"
    src.write_text(C_LAYOUT)
    exe = tmp_path / "timex"
    built = subprocess.run(
        ["gcc", str(src), "-o", str(exe)], capture_output=True, text=True, timeout=60
    )
    if built.returncode != 0:
        unavailable(f"cannot compile against <sys/timex.h>: {built.stderr[:200]}")
    figures = [
        int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True).stdout.split()
    ]
    ours = [
        ctypes.sizeof(Timex),
        Timex.status.offset,
        Timex.constant.offset,
        Timex.time.offset,
        Timex.tick.offset,
        Timex.shift.offset,
        Timex.tai.offset,
    ]
    assert ours == figures


# A seccomp filter that makes adjtimex and clock_adjtime (glibc implements adjtimex with
# either) fail with the errno in argv[1], as container runtimes do; then the module is asked.
SECCOMP_CHILD = textwrap.dedent(
    """
    import ctypes, json, platform, sys
    from pathlib import Path

    ARCH = {"x86_64": (0xC000003E, 159, 305), "aarch64": (0xC00000B7, 171, 266)}
    audit_arch, nr_adjtimex, nr_clock_adjtime = ARCH[platform.machine()]


    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


    LD_ABS, JEQ, RET = 0x20, 0x15, 0x06
    prog = (SockFilter * 7)(
        SockFilter(LD_ABS, 0, 0, 4),                 # seccomp_data.arch
        SockFilter(JEQ, 0, 4, audit_arch),           # another ABI: allow
        SockFilter(LD_ABS, 0, 0, 0),                 # seccomp_data.nr
        SockFilter(JEQ, 1, 0, nr_adjtimex),
        SockFilter(JEQ, 0, 1, nr_clock_adjtime),
        SockFilter(RET, 0, 0, 0x00050000 | int(sys.argv[1])),  # SECCOMP_RET_ERRNO
        SockFilter(RET, 0, 0, 0x7FFF0000),           # SECCOMP_RET_ALLOW
    )
    fprog = SockFprog(len(prog), prog)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        print(json.dumps({"skip": ctypes.get_errno()}))  # PR_SET_NO_NEW_PRIVS/SECCOMP refused
        sys.exit(0)

    from swm_edge import clock

    try:
        clock.read_adjtimex()
        raised = None
    except OSError as exc:
        raised = exc.errno
    print(json.dumps({
        "errno": raised,
        "missing_flag": clock.kernel_clock_synchronized(flag_file=Path(sys.argv[2])),
        "flag": clock.kernel_clock_synchronized(flag_file=Path(sys.argv[3])),
        "stamp": clock.ClockMonitor().stamp(),
    }))
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="the filter knows the syscall numbers of x86_64 and aarch64",
)
@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS])
def test_adjtimex_blocked_by_seccomp(tmp_path: Path, err: int) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    result = subprocess.run(
        [sys.executable, "-c", SECCOMP_CHILD, str(err), str(tmp_path / "missing"), str(flag)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    if "skip" in doc:
        unavailable(f"cannot install a seccomp filter here (errno {doc['skip']})")
    assert doc["errno"] == err
    assert doc["missing_flag"] is None
    assert doc["flag"] is True
    # Unknown status: the flag depends on the date alone (this machine's is plausible).
    ts, flag = doc["stamp"]
    assert flag == (None if ts >= NOT_BEFORE else UNSYNCHRONIZED)


def test_non_linux_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    clock._adjtimex_function.cache_clear()
    monkeypatch.setattr(clock.sys, "platform", "darwin")
    try:
        with pytest.raises(OSError) as info:
            read_adjtimex()
        assert info.value.errno == errno.ENOSYS
        assert kernel_clock_synchronized(flag_file=Path("/nonexistent")) is None
    finally:
        clock._adjtimex_function.cache_clear()
