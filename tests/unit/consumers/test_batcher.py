from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import pytest

from consumers.pipelines.batcher import MicroBatcher
from tests.kafka_helpers import wait_for


class Collector:
    def __init__(self) -> None:
        self.results: dict[int, object] = {}
        self.lock = threading.Lock()

    def deliver(self, item: int, result: object) -> None:
        with self.lock:
            self.results[item] = result


def doubling(batch: Sequence[int], prepared: object) -> list[object]:
    return [ValueError(f"bad {i}") if i < 0 else i * 2 for i in batch]


def test_a_batch_closes_at_its_size() -> None:
    out = Collector()
    batcher = MicroBatcher(
        "t", list, doubling, out.deliver, max_batch_size=4, max_wait_ms=60_000, max_queue=100
    )
    for i in range(8):
        batcher.put(i)
    wait_for(lambda: len(out.results) == 8, 10, what="two full batches")
    assert batcher.batch_sizes == {4: 2}
    assert out.results == {i: i * 2 for i in range(8)}
    batcher.close()


def test_a_batch_closes_after_the_wait_of_its_first_item() -> None:
    out = Collector()
    batcher = MicroBatcher(
        "t", list, doubling, out.deliver, max_batch_size=100, max_wait_ms=50, max_queue=100
    )
    batcher.put(1)
    batcher.put(2)
    wait_for(lambda: len(out.results) == 2, 10, what="a partial batch")
    assert batcher.batch_sizes == {2: 1}
    batcher.close()


def test_one_result_or_one_error_per_item() -> None:
    out = Collector()
    batcher = MicroBatcher("t", list, doubling, out.deliver, max_batch_size=10, max_wait_ms=20, max_queue=100)
    for i in (1, -1, 2):
        batcher.put(i)
    wait_for(lambda: len(out.results) == 3, 10, what="every item")
    assert out.results[1] == 2 and out.results[2] == 4
    assert isinstance(out.results[-1], ValueError)
    batcher.close()


def test_an_exception_in_execute_fails_only_the_item_at_fault() -> None:
    out = Collector()

    def explode_on_seven(batch: Sequence[int], prepared: object) -> list[object]:
        if 7 in batch:
            raise RuntimeError("device lost")
        return list(batch)

    batcher = MicroBatcher(
        "t", list, explode_on_seven, out.deliver, max_batch_size=2, max_wait_ms=10_000, max_queue=100
    )
    for i in (7, 8, 1, 2):
        batcher.put(i)
    wait_for(lambda: len(out.results) == 4, 10, what="both batches")
    assert isinstance(out.results[7], RuntimeError)
    assert out.results[8] == 8  # its neighbour in the failed batch, run again alone
    assert out.results[1] == 1 and out.results[2] == 2
    batcher.close()


def test_a_batch_that_cannot_be_prepared_fails_only_the_item_at_fault() -> None:
    """Like ``torch.stack`` over one image of another shape: the batch fails, the item alone fails."""
    out = Collector()

    def stack(batch: Sequence[int]) -> list[int]:
        if len(batch) > 1 and 13 in batch:
            raise RuntimeError("stack expects each tensor to be equal size")
        if batch == [13]:
            raise ValueError("13 has the wrong shape")
        return list(batch)

    batcher = MicroBatcher(
        "t", stack, doubling, out.deliver, max_batch_size=4, max_wait_ms=10_000, max_queue=100
    )
    for i in (1, 13, 2, 3):
        batcher.put(i)
    wait_for(lambda: len(out.results) == 4, 10, what="the batch")
    assert isinstance(out.results[13], ValueError)
    assert {i: out.results[i] for i in (1, 2, 3)} == {1: 2, 2: 4, 3: 6}
    batcher.close()


def test_a_full_queue_pushes_back_on_the_producer() -> None:
    gate = threading.Event()

    def blocked(batch: Sequence[int], prepared: object) -> list[object]:
        gate.wait(10)
        return list(batch)

    out = Collector()
    batcher = MicroBatcher("t", list, blocked, out.deliver, max_batch_size=1, max_wait_ms=0, max_queue=2)
    # one executing, one prepared, one held by the assembler, two queued: then the queue is full
    for i in range(5):
        batcher.put(i, timeout_s=5)
    wait_for(lambda: batcher.depth() == 2, 10, what="the pipeline to fill")
    with pytest.raises(queue.Full):
        batcher.put(99, timeout_s=0.2)
    gate.set()
    wait_for(lambda: len(out.results) == 5, 10, what="the backlog to drain")
    batcher.close()
