"""The runtime's one metrics seam: it reports events here, never to Prometheus directly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime

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

    def on_poll(self) -> None:
        """The loop went round once (liveness)."""

    def on_lag(self, lag: dict[TopicPartition, int]) -> None:
        """Records behind the log end, per assigned partition."""

    def on_health(
        self,
        broker_reachable: bool,
        oldest_in_flight_s: float,
        commit_age_s: float,
        rebalancing: bool = False,
        restoring: Mapping[TopicPartition, tuple[int, int]] | None = None,
    ) -> None:
        """Twice a second: whether the broker answers, the age of the oldest input still in
        flight, (while inputs wait) the time since the last successful commit, whether the group
        is rebalancing, and the partitions whose state is being restored, with (records done,
        records to do)."""

    # -- stage events ----------------------------------------------------------------------

    def on_model(self, pipeline: str, name: str, version: str, device: str, engine: str = "torch") -> None:
        """A model was loaded and warmed up for ``pipeline``."""

    def on_model_switch(self, pipeline: str, name: str, before: str, after: str, outcome: str) -> None:
        """A lane bound to an alias switched from version ``before`` to ``after`` (``outcome``
        ``switched``), or kept ``before`` because ``after`` failed to load (``failed``)."""

    def on_queue(self, model: str, depth: Callable[[], int]) -> None:
        """``depth`` reports how many items wait in ``model``'s micro-batch queue."""

    def on_state(self, pipeline: str, memory_bytes: Callable[[], int], keys: Callable[[], int]) -> None:
        """``memory_bytes`` and ``keys`` report the size of ``pipeline``'s keyed state (sensor windows)."""

    def on_batch(self, model: str, size: int, seconds: float, waited_s: float = 0.0) -> None:
        """A micro-batch of ``size`` items was run through ``model`` in ``seconds``, its oldest
        item having waited ``waited_s`` in the lane's queue for it."""

    def on_step(self, step: str, seconds: float) -> None:
        """One item went through a step (``fetch``, ``decode``) in ``seconds``."""

    def on_scored(self, pipeline: str, captured_at: datetime) -> None:
        """An item's result was built for publishing; the end-to-end latency runs from capture."""

    def on_alert(self, kind: str, severity: str, state: str) -> None:
        """An alert transition was built for publishing."""

    def on_event(self, pipeline: str, outcome: str, count: int = 1) -> None:
        """Inputs counted rather than scored: ``late``, ``duplicate``, ``out_of_order``, ``dropped_channel``."""

    def on_restored(self, pipeline: str, source: str) -> None:
        """A partition's state was restored on assignment, from ``changelog`` (handed over) or
        ``input`` (read back)."""


class CountingObserver(RuntimeObserver):
    """Keeps totals in memory: for the demo's summary, benchmarks and tests."""

    def __init__(self) -> None:
        self.consumed: Counter[str] = Counter()
        self.produced: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.commits = 0
        self.pauses = 0
        self.assignment: set[TopicPartition] = set()
        self.switches: list[tuple[str, str, str, str]] = []
        """(model, before, after, outcome) of every hot-reload attempt."""

    def on_consumed(self, topic: str, count: int) -> None:
        self.consumed[topic] += count

    def on_model_switch(self, pipeline: str, name: str, before: str, after: str, outcome: str) -> None:
        self.switches.append((name, before, after, outcome))

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
