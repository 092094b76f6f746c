"""The runtime's one metrics seam: it reports events here, never to Prometheus directly."""

from __future__ import annotations

from collections import Counter

from kafka.structs import TopicPartition


class RuntimeObserver:
    """Receives runtime events. The base class ignores them; subclasses turn them into metrics."""

    def on_consumed(self, topic: str, count: int) -> None:
        """Records were read from ``topic``."""

    def on_produced(self, topic: str, count: int) -> None:
        """Outputs to ``topic`` were acknowledged by the broker."""

    def on_dead_letter(self, reason: str, stage: str) -> None:
        """An input was sent to the dead-letter topic."""

    def on_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets were committed to the group."""

    def on_backpressure(self, paused: bool, in_flight: int) -> None:
        """Fetching was paused (or resumed) with ``in_flight`` records outstanding."""

    def on_assignment(self, partitions: set[TopicPartition]) -> None:
        """The consumer's assignment changed."""


class CountingObserver(RuntimeObserver):
    """Keeps totals in memory: for the demo's summary, benchmarks and tests."""

    def __init__(self) -> None:
        self.consumed: Counter[str] = Counter()
        self.produced: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.commits = 0
        self.pauses = 0
        self.assignment: set[TopicPartition] = set()

    def on_consumed(self, topic: str, count: int) -> None:
        self.consumed[topic] += count

    def on_produced(self, topic: str, count: int) -> None:
        self.produced[topic] += count

    def on_dead_letter(self, reason: str, stage: str) -> None:
        self.dead_letters[reason] += 1

    def on_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1

    def on_backpressure(self, paused: bool, in_flight: int) -> None:
        self.pauses += int(paused)

    def on_assignment(self, partitions: set[TopicPartition]) -> None:
        self.assignment = set(partitions)
