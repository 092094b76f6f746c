"""Rules without models, for city sensor networks, evaluated per asset and channel.

Each rule turns readings into a condition score that the shared ``AlertPolicy`` thresholds
(so N-of-M, hysteresis, resolve and cooldown behave as for model scores):
- ``threshold``: the value has been above ``limit`` for at least ``for_s`` seconds
  (PM2.5 above 35 µg/m³ for 10 minutes) — score 1 while that holds, else 0;
- ``rate``: absolute change per second between consecutive readings above ``limit``;
- ``range``: a value outside [``low``, ``high``];
- ``stale``: no reading from the asset for ``for_s`` seconds (checked against a clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

RuleKind = Literal["threshold", "rate", "range", "stale"]


@dataclass(frozen=True)
class SensorRule:
    """One rule, for assets and kinds matching the patterns, on one channel (or ``*``)."""

    name: str
    kind: RuleKind
    channel: str = "*"
    assets: str = "*"
    sensor_kind: str = "*"
    limit: float = 0.0
    low: float = float("-inf")
    high: float = float("inf")
    for_s: float = 0.0

    def applies(self, asset_id: str, sensor_kind: str) -> bool:
        """Whether this rule watches ``asset_id`` of ``sensor_kind``."""
        return fnmatchcase(asset_id, self.assets) and fnmatchcase(sensor_kind, self.sensor_kind)


class RuleState:
    """What the rules remember per asset: when a condition started, the last value and time."""

    def __init__(self) -> None:
        self._above_since: dict[tuple[str, str, str], float] = {}
        self._last: dict[tuple[str, str], tuple[float, float]] = {}
        self.last_seen: dict[str, tuple[float, str]] = {}

    def scores(
        self, rule: SensorRule, asset_id: str, time_s: float, values: dict[str, float]
    ) -> dict[str, float]:
        """Condition scores (1 = condition holds, or the measured rate) by channel."""
        out: dict[str, float] = {}
        for channel, value in values.items():
            if not fnmatchcase(channel, rule.channel):
                continue
            if rule.kind == "threshold":
                key = (rule.name, asset_id, channel)
                if value > rule.limit:
                    since = self._above_since.setdefault(key, time_s)
                    out[channel] = 1.0 if time_s - since >= rule.for_s else 0.0
                else:
                    self._above_since.pop(key, None)
                    out[channel] = 0.0
            elif rule.kind == "rate":
                previous = self._last.get((asset_id, channel))
                if previous is not None and time_s > previous[0]:
                    out[channel] = abs(value - previous[1]) / (time_s - previous[0])
            elif rule.kind == "range":
                out[channel] = 0.0 if rule.low <= value <= rule.high else 1.0
        return out

    def remember(self, asset_id: str, sensor_kind: str, time_s: float, values: dict[str, float]) -> None:
        """Record the reading after every rule has seen it."""
        for channel, value in values.items():
            self._last[(asset_id, channel)] = (time_s, value)
        self.last_seen[asset_id] = (max(time_s, self.last_seen.get(asset_id, (time_s, ""))[0]), sensor_kind)

    def stale(self, rule: SensorRule, now_s: float) -> dict[str, float]:
        """Assets matching ``rule`` silent for at least ``for_s``: score 1; others 0."""
        return {
            asset: 1.0 if now_s - seen >= rule.for_s else 0.0
            for asset, (seen, kind) in self.last_seen.items()
            if rule.applies(asset, kind)
        }
