"""Offset bookkeeping: which offset of each partition is safe to commit.

Offsets can be sparse (compaction, transaction markers) and items complete out of order
(micro-batches, retries). A partition's committable offset is the lowest offset still in
flight, or one past the highest offset seen when nothing is in flight: every record
below it has had all its outputs acknowledged.

Records are tracked a poll batch at a time: a partition's batch arrives in offset order
above everything seen before, so taking it is a few set and deque operations, not work per
record in Python. Only a batch that overlaps what is held (a re-delivery after a rebalance)
takes the slow path.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Iterable, Sequence

from kafka.structs import TopicPartition


class PartitionOffsets:
    """Tracks the records of one partition from receipt until their outputs are acknowledged."""

    __slots__ = ("_arrivals", "_handed_over", "_highest_seen", "_last_committed", "_open", "_order", "tp")

    def __init__(self, tp: TopicPartition | None = None) -> None:
        self.tp = tp
        self._open: set[int] = set()
        """Received, not complete."""
        self._handed_over: set[int] = set()
        """Open, and every output handed to the sinks (none may be added any more)."""
        self._order: deque[int] = deque()
        """Open offsets in ascending order; completed ones are dropped lazily from the left."""
        self._arrivals: deque[tuple[int, float]] = deque()
        """(first offset, ``time.monotonic()``) of each batch received, in offset order."""
        self._highest_seen = -1
        self._last_committed: int | None = None

    def track_batch(self, offsets: Sequence[int], received: float | None = None) -> Sequence[int]:
        """Note a poll batch of ``offsets`` (ascending) received now; returns those not in flight
        already (a record re-delivered while in flight will finish and must not be processed twice)."""
        if not offsets:
            return offsets
        received = time.monotonic() if received is None else received
        if not self._open:  # all done: what was kept for earlier batches is of no use any more
            self._order.clear()
            self._arrivals.clear()
        if offsets[0] > self._highest_seen:  # the usual case: the fetch goes on where it was
            fresh = offsets
            self._order.extend(offsets)
            self._arrivals.append((offsets[0], received))
        else:
            fresh = [offset for offset in offsets if offset not in self._open]
            if not fresh:
                return fresh
            self._order = deque(sorted({*self._order, *fresh}))
            self._arrivals = deque(sorted((*self._arrivals, (fresh[0], received))))
        self._open.update(fresh)
        self._highest_seen = max(self._highest_seen, fresh[-1])
        return fresh

    def is_open(self, offset: int) -> bool:
        """Whether ``offset`` was received and is not complete."""
        return offset in self._open

    def is_handed_over(self, offset: int) -> bool:
        """Whether every output of ``offset`` was handed to the sinks already."""
        return offset in self._handed_over

    def awaits_outputs(self, offset: int) -> bool:
        """Whether ``offset`` is open and its outputs are still to be handed to the sinks."""
        return offset in self._open and offset not in self._handed_over

    def hand_over(self, offsets: Iterable[int]) -> None:
        """Note that no more outputs will be added for ``offsets``."""
        self._handed_over.update(offsets)

    def complete(self, offsets: Iterable[int]) -> None:
        """Note that every output of ``offsets`` is acknowledged."""
        self._open.difference_update(offsets)
        self._handed_over.difference_update(offsets)

    def in_flight(self) -> int:
        """How many records are received but not yet complete."""
        return len(self._open)

    def unacknowledged(self) -> int:
        """Records whose outputs were all handed over but not all acknowledged yet."""
        return len(self._handed_over)

    def waiting(self) -> list[int]:
        """Open records whose outputs were not handed over yet, ascending."""
        return sorted(self._open - self._handed_over)

    def oldest_received(self) -> float | None:
        """``time.monotonic()`` at which the batch of the lowest open offset arrived."""
        lowest = self._lowest_open()
        if lowest is None:
            self._arrivals.clear()
            return None
        arrivals = self._arrivals
        while len(arrivals) > 1 and arrivals[1][0] <= lowest:
            arrivals.popleft()
        return arrivals[0][1] if arrivals else None

    def _lowest_open(self) -> int | None:
        order, open_ = self._order, self._open
        while order and order[0] not in open_:
            order.popleft()
        return order[0] if order else None

    def committable(self) -> int | None:
        """The offset to commit (next to read), or None when nothing was seen."""
        lowest = self._lowest_open()
        if lowest is not None:
            return lowest
        return self._highest_seen + 1 if self._highest_seen >= 0 else None

    def pending_commit(self) -> int | None:
        """The committable offset if it moved since the last ``mark_committed``."""
        offset = self.committable()
        return None if offset is None or offset == self._last_committed else offset

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed to the group."""
        self._last_committed = offset

    @property
    def last_committed(self) -> int | None:
        """The offset this tracker last committed (None before its first commit)."""
        return self._last_committed


class OffsetTracker:
    """``PartitionOffsets`` for every assigned partition.

    Partitions are looked up by ``TopicPartition`` or by a plain ``(topic, partition)`` tuple
    (a ``TopicPartition`` is a named tuple: both hash and compare alike).
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition | tuple[str, int], PartitionOffsets] = {}

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        """The tracker of ``tp``, started when it is first seen."""
        offsets = self._partitions.get(tp)
        if offsets is None:
            offsets = self._partitions[tp] = PartitionOffsets(tp)
        return offsets

    def get(self, topic: str, partition: int) -> PartitionOffsets | None:
        """The tracker of a partition still ours, else None."""
        return self._partitions.get((topic, partition))

    def owns(self, offsets: PartitionOffsets) -> bool:
        """Whether ``offsets`` is the live tracker of its partition (not one forgotten since)."""
        return offsets.tp is not None and self._partitions.get(offsets.tp) is offsets

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Drop revoked or lost partitions."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def partitions(self) -> list[PartitionOffsets]:
        """Every partition tracked."""
        return list(self._partitions.values())

    def to_commit(self) -> dict[TopicPartition, int]:
        """Offsets that moved since the last commit, per partition."""
        moved = {}
        for partition in self._partitions.values():
            offset = partition.pending_commit()
            if offset is not None and partition.tp is not None:
                moved[partition.tp] = offset
        return moved

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Record a successful commit."""
        for tp, offset in offsets.items():
            partition = self._partitions.get(tp)
            if partition is not None:
                partition.mark_committed(offset)

    def committed(self, tp: TopicPartition) -> int | None:
        """The offset last committed for ``tp`` by this tracker, if any."""
        partition = self._partitions.get(tp)
        return None if partition is None else partition.last_committed

    def in_flight(self) -> int:
        """Records received but not complete, over all partitions."""
        return sum(p.in_flight() for p in self._partitions.values())

    def unacknowledged(self) -> int:
        """Records handed over but not acknowledged, over all partitions."""
        return sum(p.unacknowledged() for p in self._partitions.values())

    def oldest_received(self) -> float | None:
        """``time.monotonic()`` of the oldest record still in flight, over all partitions."""
        times = [t for p in self._partitions.values() if (t := p.oldest_received()) is not None]
        return min(times) if times else None
