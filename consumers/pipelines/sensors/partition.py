"""The state the sensor stage keeps for one input partition.

Everything an asset's alerts depend on lives here, per partition, so that a partition can
be dropped when it is revoked and rebuilt from its own history when it is assigned: the
assets' windows, the rules' memory, the alert policies, and the partition's event-time clock
(the newest event time seen on it), against which stale sources are judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from consumers.pipelines.sensors.rules import RuleState
from models.alert_policy import AlertPolicy
from models.sensors.windows import AssetWindow
from schemas.settings import SensorRule


@dataclass
class PartitionState:
    """Windows, rule memory, policies and the event-time clock of one partition."""

    model_policies: dict[str, AlertPolicy]
    rule_policies: dict[str, AlertPolicy]
    windows: dict[str, AssetWindow] = field(default_factory=dict)
    rules: RuleState = field(default_factory=RuleState)
    clock_s: float = -math.inf
    stale_checked: int | None = None

    def advance(self, time_s: float, stale_every_s: float) -> bool:
        """Move the clock to ``time_s``; True when a stale check is due (once per interval of event time)."""
        self.clock_s = max(self.clock_s, time_s)
        if math.isinf(stale_every_s):
            return False
        bucket = math.floor(self.clock_s / stale_every_s)
        due = self.stale_checked is not None and bucket > self.stale_checked
        if self.stale_checked is None or due:
            self.stale_checked = bucket
        return due

    def memory_bytes(self) -> int:
        """Bytes held by the windows of this partition's assets."""
        return sum(window.memory_bytes() for window in list(self.windows.values()))


def stale_interval(rules: list[SensorRule]) -> float:
    """How often (event-time seconds) stale sources are looked for: a quarter of the shortest ``for_s``."""
    periods = [rule.for_s / 4 for rule in rules if rule.kind == "stale" and rule.for_s > 0]
    return max(1.0, min(periods)) if periods else math.inf
