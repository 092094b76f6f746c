"""Offset bookkeeping: which offset of each partition is safe to commit.

Offsets can be sparse (compaction, transaction markers) and items complete out of order
(micro-batches, retries). A partition's committable offset is the lowest offset still in
flight, or one past the highest offset seen when nothing is in flight: every record
below it has had all its outputs acknowledged.
"""

from __future__ import annotations

import heapq

from kafka.structs import TopicPartition


class PartitionOffsets:
    """Tracks the records of one partition from receipt until their outputs are acknowledged."""

    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._heap: list[int] = []
        self._highest_seen = -1
        self._last_committed: int | None = None

    def track(self, offset: int) -> None:
        """Note that ``offset`` was received and is now in flight."""
        if offset in self._in_flight:
            return
        self._in_flight.add(offset)
        heapq.heappush(self._heap, offset)
        self._highest_seen = max(self._highest_seen, offset)

    def complete(self, offset: int) -> None:
        """Note that every output of ``offset`` is acknowledged."""
        self._in_flight.discard(offset)

    def in_flight(self) -> int:
        """How many records are received but not yet complete."""
        return len(self._in_flight)

    def committable(self) -> int | None:
        """The offset to commit (next to read), or None when nothing was seen."""
        while self._heap and self._heap[0] not in self._in_flight:
            heapq.heappop(self._heap)  # lazily drop completed offsets
        if self._heap:
            return self._heap[0]
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
    """``PartitionOffsets`` for every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        """Note a received record."""
        self._partitions.setdefault(tp, PartitionOffsets()).track(offset)

    def complete(self, tp: TopicPartition, offset: int) -> bool:
        """Note a completed record; False if its partition is no longer tracked."""
        partition = self._partitions.get(tp)
        if partition is None:
            return False
        partition.complete(offset)
        return True

    def is_tracked(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is still ours (not revoked since the record was read)."""
        return tp in self._partitions

    def forget(self, partitions: list[TopicPartition] | set[TopicPartition]) -> None:
        """Drop revoked or lost partitions."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Offsets that moved since the last commit, per partition."""
        moved = {}
        for tp, partition in self._partitions.items():
            offset = partition.pending_commit()
            if offset is not None:
                moved[tp] = offset
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
