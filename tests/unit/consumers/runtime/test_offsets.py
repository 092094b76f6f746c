from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from kafka.structs import TopicPartition

from consumers.runtime.offsets import OffsetTracker, PartitionOffsets


def test_nothing_seen_means_nothing_to_commit() -> None:
    assert PartitionOffsets().committable() is None


def test_commit_stops_below_the_lowest_incomplete_offset() -> None:
    p = PartitionOffsets()
    for offset in range(10, 15):
        p.track_batch([offset])
    for offset in (10, 11, 13, 14):
        p.complete([offset])
    assert p.committable() == 12
    p.complete([12])
    assert p.committable() == 15


def test_sparse_offsets_commit_one_past_the_highest_seen() -> None:
    p = PartitionOffsets()
    for offset in (3, 7, 20):  # gaps from compaction or transaction markers
        p.track_batch([offset])
    p.complete([20])
    p.complete([3])
    assert p.committable() == 7
    p.complete([7])
    assert p.committable() == 21


def test_pending_commit_reports_only_movement() -> None:
    p = PartitionOffsets()
    p.track_batch([0])
    assert p.pending_commit() == 0
    p.mark_committed(0)
    assert p.pending_commit() is None
    p.complete([0])
    assert p.pending_commit() == 1


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200, unique=True), st.randoms())
def test_committable_is_always_the_first_incomplete_offset(offsets: list[int], rnd: random.Random) -> None:
    offsets.sort()
    p = PartitionOffsets()
    for offset in offsets:
        p.track_batch([offset])
    done: set[int] = set()
    order = offsets[:]
    rnd.shuffle(order)
    for offset in order:
        p.complete([offset])
        done.add(offset)
        incomplete = [o for o in offsets if o not in done]
        expected = incomplete[0] if incomplete else offsets[-1] + 1
        assert p.committable() == expected
        # never past an offset whose outputs are not acknowledged
        assert all(o >= p.committable() for o in incomplete)


def test_tracker_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    tracker.partition(a).track_batch([5])
    tracker.partition(b).track_batch([9])
    tracker.partition(a).complete([5])
    assert tracker.to_commit() == {a: 6, b: 9}
    tracker.mark_committed({a: 6, b: 9})
    assert tracker.to_commit() == {}
    tracker.forget({b})
    assert tracker.get("t", 1) is None  # completing it is no longer possible, nor needed
    assert tracker.in_flight() == 0


def test_a_poll_batch_is_taken_whole_and_a_re_delivery_only_for_what_is_new() -> None:
    p = PartitionOffsets()
    assert list(p.track_batch([10, 11, 12], received=1.0)) == [10, 11, 12]
    p.complete([10])
    # re-delivered after a rebalance: 11 and 12 are still in flight, 13 is new
    assert list(p.track_batch([11, 12, 13], received=2.0)) == [13]
    assert p.in_flight() == 3 and p.committable() == 11
    p.complete([11, 12, 13])
    assert p.committable() == 14


def test_a_re_delivery_below_what_is_held_keeps_the_commit_point_lowest() -> None:
    p = PartitionOffsets()
    p.track_batch([20, 21], received=1.0)
    assert list(p.track_batch([18, 19, 20], received=2.0)) == [18, 19]
    assert p.committable() == 18
    p.complete([18, 19, 20])
    assert p.committable() == 21


def test_the_oldest_received_is_the_arrival_of_the_lowest_open_offset() -> None:
    p = PartitionOffsets()
    assert p.oldest_received() is None
    p.track_batch([0, 1], received=1.0)
    p.track_batch([2, 3], received=5.0)
    assert p.oldest_received() == 1.0
    p.complete([0])
    assert p.oldest_received() == 1.0  # 1 came with the first batch
    p.complete([1])
    assert p.oldest_received() == 5.0
    p.complete([2, 3])
    assert p.oldest_received() is None


def test_handed_over_and_waiting_split_the_open_offsets() -> None:
    p = PartitionOffsets()
    p.track_batch([4, 5, 6])
    p.hand_over([5])
    assert p.waiting() == [4, 6] and p.unacknowledged() == 1 and p.is_handed_over(5)
    assert p.awaits_outputs(4) and not p.awaits_outputs(5) and not p.awaits_outputs(7)
    p.complete([5])
    assert p.unacknowledged() == 0 and not p.is_open(5) and not p.awaits_outputs(5)


def test_what_is_kept_per_batch_does_not_grow_while_batches_complete() -> None:
    p = PartitionOffsets()
    for batch in range(10_000):  # a quiet partition: each batch done before the next, no health check
        offsets = [2 * batch, 2 * batch + 1]
        p.track_batch(offsets, received=float(batch))
        p.complete(offsets)
    # a regression test for a leak: one arrival and two offsets were kept per batch forever
    assert len(p._arrivals) <= 1 and len(p._order) <= 2
    assert p.committable() == 20_000 and p.oldest_received() is None
