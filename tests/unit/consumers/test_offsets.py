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
        p.track(offset)
    for offset in (10, 11, 13, 14):
        p.complete(offset)
    assert p.committable() == 12
    p.complete(12)
    assert p.committable() == 15


def test_sparse_offsets_commit_one_past_the_highest_seen() -> None:
    p = PartitionOffsets()
    for offset in (3, 7, 20):  # gaps from compaction or transaction markers
        p.track(offset)
    p.complete(20)
    p.complete(3)
    assert p.committable() == 7
    p.complete(7)
    assert p.committable() == 21


def test_pending_commit_reports_only_movement() -> None:
    p = PartitionOffsets()
    p.track(0)
    assert p.pending_commit() == 0
    p.mark_committed(0)
    assert p.pending_commit() is None
    p.complete(0)
    assert p.pending_commit() == 1


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200, unique=True), st.randoms())
def test_committable_is_always_the_first_incomplete_offset(offsets: list[int], rnd: random.Random) -> None:
    offsets.sort()
    p = PartitionOffsets()
    for offset in offsets:
        p.track(offset)
    done: set[int] = set()
    order = offsets[:]
    rnd.shuffle(order)
    for offset in order:
        p.complete(offset)
        done.add(offset)
        incomplete = [o for o in offsets if o not in done]
        expected = incomplete[0] if incomplete else offsets[-1] + 1
        assert p.committable() == expected
        # never past an offset whose outputs are not acknowledged
        assert all(o >= p.committable() for o in incomplete)


def test_tracker_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    tracker.track(a, 5)
    tracker.track(b, 9)
    tracker.complete(a, 5)
    assert tracker.to_commit() == {a: 6, b: 9}
    tracker.mark_committed({a: 6, b: 9})
    assert tracker.to_commit() == {}
    tracker.forget({b})
    assert not tracker.is_tracked(b)
    assert tracker.complete(b, 9) is False
    assert tracker.in_flight() == 0
