"""The delivery ledger: which inputs have every output acknowledged by the broker.

The producer's I/O thread reports each acknowledgement (or failure) through a callback
that only appends to a queue; the runtime's thread settles the queue, so the ledger itself
is touched by one thread alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition

from consumers.runtime.records import InboundRecord

RecordKey = tuple[str, int, int]
"""(topic, partition, offset) of an input record."""


class DeliveryFailedError(RuntimeError):
    """An output could not be delivered; offsets it covers must not be committed."""


@dataclass(slots=True, eq=False)
class _Entry:
    record: InboundRecord
    received: float = field(default_factory=time.monotonic)
    awaiting: int = 0
    processed: bool = False
    topics: list[str] = field(default_factory=list)


class DeliveryLedger:
    """Inputs between receipt and the acknowledgement of all their outputs."""

    def __init__(self) -> None:
        self._entries: dict[RecordKey, _Entry] = {}
        self._reports: deque[tuple[RecordKey, _Entry, str, BaseException | None]] = deque()
        self._ready: list[RecordKey] = []

    def __len__(self) -> int:
        return len(self._entries)

    def receive(self, record: InboundRecord) -> RecordKey:
        """Open an entry for a record just read."""
        key = (record.topic, record.partition, record.offset)
        self._entries[key] = _Entry(record)
        return key

    def holds(self, key: RecordKey) -> bool:
        """Whether ``key`` is still open (its partition was not revoked)."""
        return key in self._entries

    def is_processed(self, key: RecordKey) -> bool:
        """Whether ``key``'s outputs were all handed over already (a second outcome is a stale duplicate)."""
        entry = self._entries.get(key)
        return entry is not None and entry.processed

    def oldest_received(self) -> float | None:
        """``time.monotonic()`` at which the oldest open input was received (None when none is open)."""
        for entry in self._entries.values():  # insertion order is receipt order
            return entry.received
        return None

    def waiting(self) -> list[RecordKey]:
        """Open inputs whose outputs were not handed over yet, in order of receipt."""
        return [key for key, entry in self._entries.items() if not entry.processed]

    def unacknowledged(self) -> int:
        """Inputs whose outputs were all handed over but not all acknowledged yet."""
        return sum(1 for entry in self._entries.values() if entry.processed)

    def expect(self, key: RecordKey, topic: str, future: Any) -> None:
        """Count an output in flight; ``future`` is kafka-python's send future.

        The acknowledgement is tied to this entry: one that arrives after the entry was
        forgotten (and the input received again) is not counted for the new entry.
        """
        entry = self._entries[key]
        entry.awaiting += 1
        future.add_callback(self._report, key, entry, topic, None)
        future.add_errback(self._report_failure, key, entry, topic)

    def _report(
        self, key: RecordKey, entry: _Entry, topic: str, error: BaseException | None, _metadata: Any
    ) -> None:
        self._reports.append((key, entry, topic, error))  # deque.append is atomic across threads

    def _report_failure(self, key: RecordKey, entry: _Entry, topic: str, error: BaseException) -> None:
        self._reports.append((key, entry, topic, error))

    def processed(self, key: RecordKey) -> None:
        """No more outputs will be added for ``key``."""
        entry = self._entries[key]
        entry.processed = True
        if entry.awaiting == 0:
            self._ready.append(key)

    def settle(self) -> list[tuple[RecordKey, list[str]]]:
        """Apply the acknowledgements received so far; return the inputs now fully delivered.

        Raises ``DeliveryFailedError`` on the first failed delivery of a tracked input.
        """
        while self._reports:
            key, reported, topic, error = self._reports.popleft()
            entry = self._entries.get(key)
            if entry is not reported:
                continue  # its partition was revoked (the new owner re-processes it), or rewound
            if error is not None:
                raise DeliveryFailedError(
                    f"output of {key[0]}[{key[1]}]@{key[2]} to {topic} was not delivered: {error!r}"
                ) from error
            entry.awaiting -= 1
            entry.topics.append(topic)
            if entry.awaiting == 0 and entry.processed:
                self._ready.append(key)
        done = []
        for key in self._ready:
            entry = self._entries.pop(key, None)
            if entry is not None:
                done.append((key, entry.topics))
        self._ready.clear()
        return done

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the entries of revoked or lost partitions."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for key in [k for k in self._entries if (k[0], k[1]) in gone]:
            del self._entries[key]
