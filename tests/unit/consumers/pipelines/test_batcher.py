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


class HeldModel:
    """An ``execute`` that holds its first batch until ``release``, recording every batch."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.prepared: list[list[int]] = []
        self.lock = threading.Lock()

    def prepare(self, batch: Sequence[int]) -> list[int]:
        with self.lock:
            self.prepared.append(list(batch))
        return list(batch)

    def execute(self, batch: Sequence[int], prepared: object) -> list[object]:
        self.release.wait(60)
        return doubling(batch, prepared)


def test_an_idle_model_takes_an_item_at_once_without_waiting_for_a_batch() -> None:
    out = Collector()
    batcher = MicroBatcher(
        "t", list, doubling, out.deliver, max_batch_size=32, max_wait_ms=60_000, max_queue=100
    )
    batcher.put(7)
    wait_for(lambda: len(out.results) == 1, 10, what="the lone item, long before max_wait_ms")
    assert batcher.batch_sizes == {1: 1} and out.results == {7: 14}
    batcher.close()


def busy_with_first_item(
    model: HeldModel, out: Collector, max_batch_size: int, max_wait_ms: float
) -> MicroBatcher[int, object]:
    """A batcher whose model is held running item 0 (the first item runs at once)."""
    batcher: MicroBatcher[int, object] = MicroBatcher(
        "t", model.prepare, model.execute, out.deliver, max_batch_size, max_wait_ms, max_queue=100
    )
    batcher.put(0)
    wait_for(lambda: model.prepared == [[0]], 10, what="the first item running at once")
    return batcher


def test_items_that_keep_arriving_fill_batches_up_to_their_size() -> None:
    out, model = Collector(), HeldModel()
    batcher = busy_with_first_item(model, out, max_batch_size=4, max_wait_ms=60_000)
    for i in range(1, 9):
        batcher.put(i)
    wait_for(lambda: len(model.prepared) == 3, 10, what="two full batches behind the running one")
    model.release.set()
    wait_for(lambda: len(out.results) == 9, 10, what="every item")
    assert model.prepared == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert out.results == {i: i * 2 for i in range(9)}
    batcher.close()


def test_max_wait_bounds_a_batch_while_items_keep_arriving() -> None:
    out, model = Collector(), HeldModel()
    batcher = busy_with_first_item(model, out, max_batch_size=100, max_wait_ms=50)
    batcher.put(1)
    batcher.put(2)
    wait_for(lambda: len(model.prepared) == 2, 10, what="the next batch closed by max_wait_ms")
    assert model.prepared[1] == [1, 2] and not model.release.is_set()
    model.release.set()
    wait_for(lambda: len(out.results) == 3, 10, what="every item")
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


def test_each_batch_reports_how_long_its_oldest_item_queued() -> None:
    model, collector = HeldModel(), Collector()
    reports: list[tuple[int, float, float]] = []
    batcher = MicroBatcher(
        "queued",
        model.prepare,
        model.execute,
        collector.deliver,
        4,
        5.0,
        64,
        on_batch=lambda size, seconds, waited: reports.append((size, seconds, waited)),
    )
    try:
        batcher.put(1)  # runs at once, and holds the model
        wait_for(lambda: len(model.prepared) == 1, 10, what="the first batch")
        for item in (2, 3):
            batcher.put(item)
        held = threading.Event()
        held.wait(0.3)  # the second batch's items queue while the model is held
        model.release.set()
        wait_for(lambda: len(collector.results) == 3, 10, what="every result")
    finally:
        batcher.close()
    assert [size for size, _, _ in reports] == [1, 2]
    first, second = reports
    assert first[2] < 0.25 and second[2] >= 0.25  # the held model shows as queue time
