"""The failure log: state changes, then reminders at a falling rate, with counts."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swm_edge.lograte import FailureLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "t"]


def make(clock: FakeClock) -> FailureLog:
    return FailureLog(logging.getLogger("t"), "device wm-1", clock=clock)


def test_a_month_of_a_dead_meter_is_a_handful_of_lines(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="t")
    flog = make(clock)
    polls = 30 * 86400 // 10  # every 10 s for 30 days
    for _ in range(polls):
        flog.failure("timeout", "backing off")
        clock.now += 10
    out = lines(caplog)
    # 60 s, 2, 4 ... min up to a day, then daily: 11 doubling steps + ~30 days
    assert 30 <= len(out) <= 45
    assert out[0] == "device wm-1: timeout; backing off"
    assert all(line.startswith("device wm-1: still failing (timeout ") for line in out[1:])
    # The counts add up: every failure is accounted for in some line.
    counted = 1 + sum(int(line.split("(timeout ")[1].split(")")[0]) for line in out[1:])
    assert counted <= polls and polls - counted < 86400 // 10 + 1
    assert out[-1].endswith("days")
    assert flog.lines == len(out)


def test_recovery_is_logged_with_the_episode_counts(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="t")
    flog = make(clock)
    for reason in ["timeout", "crc-error", "timeout"]:
        flog.failure(reason)
        clock.now += 30
    clock.now += 10  # 100 s after the first failure
    flog.failure("timeout")
    flog.success()
    flog.success()  # only the first success after failures is news
    out = lines(caplog)
    assert out == [
        "device wm-1: timeout",
        "device wm-1: still failing (crc-error 1, timeout 1); 3 failures in 60 s",
        "device wm-1: recovered after 4 failures in 100 s",
    ]
    levels = [r.levelno for r in caplog.records if r.name == "t"]
    assert levels == [logging.WARNING, logging.WARNING, logging.INFO]


def test_a_flapping_device_is_rate_limited_and_counted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="t")
    flog = make(clock)
    for _ in range(3600):  # fails, then answers, every 10 s for 10 hours
        flog.failure("timeout")
        clock.now += 5
        flog.success()
        clock.now += 5
    out = lines(caplog)
    assert len(out) < 30
    assert out[0] == "device wm-1: timeout"
    assert out[1] == "device wm-1: recovered after 1 failures in 5 s"
    assert out[2] == "device wm-1: timeout (also failed 5 times briefly since the last line)"
    briefs = [int(line.split("(also failed ")[1].split(" ")[0]) for line in out if "(also" in line]
    # every episode is either logged or counted in the next logged one
    assert sum(briefs) + len(briefs) + 1 <= 3600
    assert sum(briefs) + len(briefs) + 1 > 3600 - 86400 // 10


def test_news_again_after_a_long_healthy_spell(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="t")
    flog = make(clock)
    for _ in range(100):
        flog.failure("timeout")
        clock.now += 10
    flog.success()
    clock.now += 7 * 86400
    flog.failure("crc-error")
    out = lines(caplog)
    assert out[-1] == "device wm-1: crc-error"


class Recorder(logging.Handler):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.seen: list[tuple[float, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((self.clock.now, record.levelno))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.01, 5000)), max_size=300))
def test_warnings_at_least_a_minute_apart_and_one_recovery_each(
    events: list[tuple[bool, float]],
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("t.prop")
    logger.propagate = False
    recorder = Recorder(clock)
    logger.handlers[:] = [recorder]
    flog = FailureLog(logger, "bus b", clock=clock)
    for failed, dt in events:
        if failed:
            flog.failure("timeout")
        else:
            flog.success()
        clock.now += dt
    warnings = [t for t, level in recorder.seen if level == logging.WARNING]
    recoveries = [t for t, level in recorder.seen if level == logging.INFO]
    assert all(b - a >= 60 for a, b in itertools.pairwise(warnings))
    assert len(recoveries) <= len(warnings)
    if any(failed for failed, _ in events):
        assert warnings, "the first failure is always logged"
