"""Restoring sensor partition state off the runtime's thread: how far back it reads, retries
that never fail the pipeline, cancellation, and the stage holding a restoring partition's
readings until its state is in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.restore import (
    MIN_HISTORY_S,
    PartitionRestorer,
    Restore,
    RestoreCancelled,
    history_span_s,
)
from schemas.model_card import SeriesInputSpec
from schemas.settings import AlertRule, SensorRule


def spec(window: int = 32, stride: int = 8, period_s: float = 1.0) -> SeriesInputSpec:
    return SeriesInputSpec(
        channels=["a"], window=window, stride=stride, sample_period_s=period_s, mean=[0.0], std=[1.0]
    )


def test_history_reaches_back_as_far_as_windows_and_rules_look_not_an_hour() -> None:
    two_of_three = [AlertRule(name="r", hi=1.0, n=2, m=3, cooldown_s=5.0)]
    # A full window of 32 samples and two more strides of 8, at 0.5 Hz, plus the cooldown.
    assert history_span_s([(spec(period_s=2.0), two_of_three)], [], 0.0) == (32 + 2 * 8) * 2 + 5.0
    pm25 = SensorRule(name="pm25", kind="threshold", limit=35.0, for_s=600.0, cooldown_s=60.0)
    assert history_span_s([(spec(), two_of_three)], [pm25], lateness_s=2.0) == 662.0
    assert history_span_s([], [], 0.0) == MIN_HISTORY_S
    assert history_span_s([(spec(window=64, period_s=0.01), [])], [], 0.0) == MIN_HISTORY_S


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # polling interval, bounded by the deadline


def state() -> PartitionState:
    return PartitionState(model_policies={}, rule_policies={})


def test_a_failed_restore_is_tried_again_and_its_partition_comes_back() -> None:
    attempts: list[int] = []

    def flaky(job: Restore) -> PartitionState:
        attempts.append(job.attempts)
        if job.attempts < 3:
            raise TimeoutError("the broker is away")
        return state()

    restorer = PartitionRestorer(flaky, retry_first_s=0.01)
    try:
        job = restorer.start(("s", 0), 10)
        done: list[Restore] = []
        wait_until(lambda: done.extend(restorer.finished()) or done)
        assert done == [job] and attempts == [1, 2, 3] and job.state is not None
    finally:
        restorer.close()


def test_a_cancelled_restore_stops_at_its_next_progress_report_and_is_not_handed_back() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(job: Restore) -> PartitionState:
        if job.key == ("s", 1):
            started.set()
            release.wait(5)
            job.report(1, 10)  # raises: the partition went away meanwhile
        return state()

    restorer = PartitionRestorer(slow)
    try:
        job = restorer.start(("s", 1), 10)
        assert started.wait(5)
        job.cancelled = True
        release.set()
        queued = restorer.start(("s", 2), 5)
        queued.cancelled = True  # never started
        last = restorer.start(("s", 3), 5)  # the worker goes on to the next partition
        done: list[Restore] = []
        wait_until(lambda: done.extend(restorer.finished()) or done)
        assert done == [last] and job.state is None and queued.attempts == 0
    finally:
        restorer.close()
    try:
        Restore(("s", 3), 1, cancelled=True).report(0, 1)
    except RestoreCancelled:
        pass
    else:
        raise AssertionError("a cancelled restore reported progress")
