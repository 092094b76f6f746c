"""What the sensor stage counts and reports while it admits and scores: nothing when it
rebuilds a partition's state from history (that was counted the first time)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from consumers.runtime.observer import RuntimeObserver
from schemas.messages import Alert

STAGE = "sensors"


class Tally:
    """Events counted rather than dead-lettered (late, duplicate, dropped_channel, out_of_order),
    windows scored and alerts raised, reported to ``observer``."""

    def __init__(self, observer: RuntimeObserver, counts: Counter[str]) -> None:
        self.observer = observer
        self.counts = counts

    @classmethod
    def silent(cls) -> Tally:
        """A tally that keeps and reports nothing (history rebuilds)."""
        return cls(RuntimeObserver(), Counter())

    def event(self, outcome: str, events: int = 1) -> None:
        """``events`` samples or channels ended as ``outcome``."""
        if events:
            self.counts[outcome] += events
            self.observer.on_event(STAGE, outcome, events)

    def scored(self, at: datetime) -> None:
        """A window ending at ``at`` was scored."""
        self.observer.on_scored(STAGE, at)

    def alert(self, alert: Alert) -> None:
        """An alert was raised."""
        self.observer.on_alert(alert.kind, alert.severity, alert.state)
