"""Flow control: which assigned partitions the consumer fetches.

Backpressure: when ``max_in_flight`` inputs are outstanding, every assigned partition is
paused; they resume below ``resume_below_fraction`` of that. A partition whose state the stage
restores stays paused until it is restored. Draining at shutdown pauses everything for good,
partitions assigned later included.
"""

from __future__ import annotations

from kafka.structs import TopicPartition

from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.ports import ConsumerPort
from schemas.settings import RuntimeSettings


class FlowControl:
    """Pauses and resumes the consumer's partitions; see the module docstring."""

    def __init__(self, consumer: ConsumerPort, settings: RuntimeSettings, observer: RuntimeObserver) -> None:
        self._consumer = consumer
        self._limit = settings.max_in_flight
        self._resume_below = settings.max_in_flight * settings.resume_below_fraction
        self._observer = observer
        self.paused = False
        """Backpressure (or a drain) holds every assigned partition."""
        self._draining = False
        self._held_back: set[TopicPartition] = set()
        """The partitions paused now, for backpressure or for a restore."""

    def apply(self, outstanding: int, restoring: dict[tuple[str, int], tuple[int, int]]) -> None:
        """Pause every partition under backpressure, and the partitions being restored always;
        resume the others."""
        if not self.paused and outstanding >= self._limit:
            self.paused = True
            self._observer.on_backpressure(True, outstanding)
        elif self.paused and not self._draining and outstanding < self._resume_below:
            self.paused = False
            self._observer.on_backpressure(False, outstanding)
        if not self.paused and not restoring and not self._held_back:
            return
        assigned = set(self._consumer.assignment())
        wanted = assigned if self.paused else {tp for tp in assigned if (tp.topic, tp.partition) in restoring}
        if paused := wanted - self._held_back:
            self._consumer.pause(*paused)
        if resumed := (self._held_back - wanted) & assigned:
            self._consumer.resume(*resumed)
        self._held_back = wanted

    def drain(self, outstanding: int) -> None:
        """Stop fetching for good: every partition paused, those assigned from now on too."""
        self.paused = self._draining = True
        self.apply(outstanding, {})

    def assignment_changed(self, held: set[TopicPartition], added: set[TopicPartition]) -> None:
        """Partitions just assigned are paused at once while everything is."""
        self._held_back &= held
        if self.paused and added:
            self._consumer.pause(*added)
            self._held_back |= added
