"""What the runtime reports of itself: health (what ``/readyz`` judges) and consumer lag."""

from __future__ import annotations

import time

from kafka.structs import TopicPartition

from consumers.runtime.checkpoint import Checkpoint
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.ports import ConsumerPort
from consumers.runtime.stage import ProcessingStage

HEALTH_INTERVAL_S = 0.5
"""How often the loop reports what ``/readyz`` judges."""


class HealthReporter:
    """Reports the runtime's health and lag to its observer (the runtime's thread)."""

    def __init__(
        self,
        consumer: ConsumerPort,
        checkpoint: Checkpoint,
        stage: ProcessingStage,
        observer: RuntimeObserver,
        interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        self._consumer = consumer
        self._checkpoint = checkpoint
        self._stage = stage
        self._observer = observer
        self._interval_s = interval_s
        self._next = 0.0

    def health(self) -> None:
        """Broker reachable, commits going through, nothing stuck, rebalancing, restoring; at
        most once per interval."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval_s
        outage = self._checkpoint.outage
        oldest = self._checkpoint.oldest_received()
        restoring = self._stage.restoring()
        self._observer.on_health(
            broker_reachable=self._consumer.broker_reachable() and not outage.ongoing,
            oldest_in_flight_s=0.0 if oldest is None else now - oldest,
            commit_age_s=now - outage.last_success if oldest is not None else 0.0,
            rebalancing=self._consumer.rebalancing(),
            restoring={TopicPartition(*key): progress for key, progress in restoring.items()},
        )

    def lag(self) -> None:
        """Records behind the log end per partition, counted from the committed offset (no request)."""
        lag = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            committed = self._checkpoint.committed(tp)
            read_from = committed if committed is not None else self._consumer.position(tp)
            if read_from is not None:
                lag[tp] = max(0, end - read_from)
        if lag:
            self._observer.on_lag(lag)
