from __future__ import annotations

import threading

from consumers.pipelines.vision.workers import WorkerPool
from tests.kafka_helpers import wait_for


def test_shutdown_leaves_a_stuck_worker_behind_at_its_deadline() -> None:
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []
    pool = WorkerPool(2, "t")

    def stuck() -> None:
        started.set()
        release.wait(30)  # a read that never returns, as on a hung mount

    pool.submit(stuck)
    assert started.wait(5)
    pool.submit(done.append, 1)
    wait_for(lambda: done == [1], 5, what="the other worker to run its call")
    assert pool.shutdown(deadline_s=0.2) == 1  # returns with one straggler instead of waiting
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-"))
    release.set()


def test_a_failing_call_does_not_kill_its_worker() -> None:
    pool = WorkerPool(1, "f")
    results: list[str] = []
    pool.submit(lambda: 1 / 0)
    pool.submit(results.append, "after")
    wait_for(lambda: results == ["after"], 5, what="the next call")
    assert pool.shutdown(deadline_s=5) == 0
