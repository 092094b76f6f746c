"""Condition scores of the rules without models (``schemas.settings.SensorRule``), per asset.

Each condition scores 1.0 while it holds and 0.0 otherwise, so the shared ``AlertPolicy``
(threshold 1.0) gives N-of-M, hysteresis, resolve and cooldown exactly as for model scores:
- ``threshold``: the value has been above ``limit`` for at least ``for_s`` seconds;
- ``rate``: the absolute change per second since the previous reading is above ``limit``;
- ``range``: the value is outside [``low``, ``high``];
- ``stale``: no reading from the asset for ``for_s`` seconds of the partition's event time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from consumers.pipelines.sensors.intake import at
from models.alert_policy import AlertPolicy, Transition, matches
from schemas.settings import SensorRule

__all__ = ["RuleState", "SensorRule", "stale_transitions", "value_transitions"]


class RuleState:
    """What the rules remember for the assets of one partition."""

    def __init__(self) -> None:
        self._above_since: dict[tuple[str, str, str], float] = {}
        self._last: dict[tuple[str, str], tuple[float, float]] = {}
        self.last_seen: dict[str, tuple[float, str]] = {}

    def scores(
        self, rule: SensorRule, asset_id: str, time_s: float, values: dict[str, float]
    ) -> dict[str, float]:
        """Condition scores (1 = the condition holds) by channel."""
        out: dict[str, float] = {}
        for channel, value in values.items():
            if not matches(channel, rule.channel):
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
                    rate = abs(value - previous[1]) / (time_s - previous[0])
                    out[channel] = 1.0 if rate > rule.limit else 0.0
            elif rule.kind == "range":
                too_low = rule.low is not None and value < rule.low
                too_high = rule.high is not None and value > rule.high
                out[channel] = 1.0 if too_low or too_high else 0.0
        return out

    def scores_of_run(
        self,
        rule: SensorRule,
        asset_id: str,
        channel: str,
        times: np.ndarray,
        values: np.ndarray,
        newer: np.ndarray,
    ) -> np.ndarray:
        """``scores``' condition scores of one channel over a run of the asset's samples, as
        scoring (the ``newer`` ones) and remembering each in turn gives them; NaN where there
        is none (an older sample; a rate without an earlier sample before it)."""
        out = np.full(len(times), np.nan)
        if rule.kind == "threshold":
            key = (rule.name, asset_id, channel)
            seen = np.flatnonzero(newer)
            above = values[seen] > rule.limit
            # an unbroken stretch above the limit counts from its first sample, or from before the run
            starts = above & ~np.concatenate(([key in self._above_since], above[:-1]))
            since = np.where(starts, times[seen], np.nan)
            if len(above) and above[0] and key in self._above_since:
                since[0] = self._above_since[key]
            since = _carried_forward(since)
            out[seen] = np.where(above, (times[seen] - since) >= rule.for_s, False).astype(float)
            if len(above) and above[-1]:
                self._above_since[key] = float(since[-1])
            elif len(above):
                self._above_since.pop(key, None)
        elif rule.kind == "rate":
            last = self._last.get((asset_id, channel))
            before_t = np.concatenate(([np.nan if last is None else last[0]], times[:-1]))
            before_v = np.concatenate(([np.nan if last is None else last[1]], values[:-1]))
            with np.errstate(invalid="ignore", divide="ignore"):
                scored = newer & (times > before_t)  # NaN compares False: no earlier sample
                rate = np.abs(values - before_v) / (times - before_t)
            out[scored] = (rate[scored] > rule.limit).astype(float)
        elif rule.kind == "range":
            outside = np.zeros(len(values), dtype=bool)
            if rule.low is not None:
                outside |= values < rule.low
            if rule.high is not None:
                outside |= values > rule.high
            out[newer] = outside[newer].astype(float)
        return out

    def remember_run(
        self, asset_id: str, sensor_kind: str, times: np.ndarray, channels: Sequence[str], values: np.ndarray
    ) -> None:
        """``remember`` each sample of a run (``values`` one row per sample, in ``channels``)."""
        for index, channel in enumerate(channels):
            self._last[(asset_id, channel)] = (float(times[-1]), float(values[-1, index]))
        seen = self.last_seen.get(asset_id)
        newest = float(times.max())
        self.last_seen[asset_id] = (newest if seen is None else max(newest, seen[0]), sensor_kind)

    def remember(self, asset_id: str, sensor_kind: str, time_s: float, values: dict[str, float]) -> None:
        """Record the reading after every rule has seen it."""
        for channel, value in values.items():
            self._last[(asset_id, channel)] = (time_s, value)
        seen = self.last_seen.get(asset_id)
        self.last_seen[asset_id] = (time_s if seen is None else max(time_s, seen[0]), sensor_kind)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """What the rules remember, by asset, as plain values (JSON), for ``restore``."""
        by_asset: dict[str, dict[str, Any]] = {}

        def of(asset_id: str) -> dict[str, Any]:
            return by_asset.setdefault(asset_id, {"above_since": [], "last": [], "last_seen": None})

        for (rule, asset_id, channel), since in self._above_since.items():
            of(asset_id)["above_since"].append([rule, channel, since])
        for (asset_id, channel), (time_s, value) in self._last.items():
            of(asset_id)["last"].append([channel, time_s, value])
        for asset_id, (time_s, sensor_kind) in self.last_seen.items():
            of(asset_id)["last_seen"] = [time_s, sensor_kind]
        return by_asset

    def restore(self, asset_id: str, memory: Mapping[str, Any]) -> None:
        """Take back what ``snapshot`` gave for ``asset_id``."""
        for rule, channel, since in memory["above_since"]:
            self._above_since[(rule, asset_id, channel)] = float(since)
        for channel, time_s, value in memory["last"]:
            self._last[(asset_id, channel)] = (float(time_s), float(value))
        if memory["last_seen"] is not None:
            time_s, sensor_kind = memory["last_seen"]
            self.last_seen[asset_id] = (float(time_s), str(sensor_kind))

    def newest(self, asset_id: str) -> float | None:
        """The newest event time the rules have seen from ``asset_id``."""
        seen = self.last_seen.get(asset_id)
        return None if seen is None else seen[0]

    def stale(self, rule: SensorRule, now_s: float) -> dict[str, float]:
        """Assets matching ``rule``: 1.0 when silent for at least ``for_s``, else 0.0."""
        return {
            asset: 1.0 if now_s - seen >= rule.for_s else 0.0
            for asset, (seen, kind) in self.last_seen.items()
            if rule.applies(asset, kind)
        }


def _carried_forward(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last value before it that is not NaN."""
    present = ~np.isnan(values)
    last = np.maximum.accumulate(np.where(present, np.arange(len(values)), 0))
    return values[last]


def value_transitions(
    memory: RuleState,
    policies: Mapping[str, AlertPolicy],
    rules: Sequence[SensorRule],
    asset_id: str,
    time_s: float,
    values: dict[str, float],
) -> list[Transition]:
    """The alert transitions of ``rules`` on one sample newer than the asset's newest (an
    older one changes no rule's condition)."""
    newest = memory.newest(asset_id)
    if newest is not None and time_s <= newest:
        return []
    when = at(time_s)
    return [
        transition
        for rule in rules
        for transition in policies[rule.name].observe(
            asset_id, memory.scores(rule, asset_id, time_s, values), when
        )
    ]


def stale_transitions(
    memory: RuleState, policies: Mapping[str, AlertPolicy], rules: Sequence[SensorRule], clock_s: float
) -> list[Transition]:
    """The alert transitions of the ``stale`` rules at the partition's event-time ``clock_s``."""
    return [
        transition
        for rule in rules
        if rule.kind == "stale"
        for asset_id, score in memory.stale(rule, clock_s).items()
        for transition in policies[rule.name].observe(asset_id, {"stale": score}, at(clock_s))
    ]
