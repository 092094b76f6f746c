"""Turning a stream of scores into alert transitions: N-of-M, hysteresis, cooldown, resolve.

State is kept per (rule, source, label). For each new score of a matching source and label:
- not firing: fire when at least ``n`` of the last ``m`` scores are >= ``hi`` and the
  cooldown since the last resolve (in event time) has passed;
- firing: resolve when fewer than ``n`` of the last ``m`` scores are >= ``lo``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Literal

from schemas.settings import AlertRule


@dataclass(frozen=True)
class Transition:
    """A rule started firing or resolved for one source and label."""

    rule: AlertRule
    source_id: str
    label: str
    state: Literal["firing", "resolved"]
    score: float
    at: datetime


@dataclass
class _Track:
    scores: deque[float]
    firing: bool = False
    resolved_at: datetime | None = None


class AlertPolicy:
    """Applies ``rules`` to scores; see the module docstring."""

    def __init__(self, rules: list[AlertRule]) -> None:
        self.rules = list(rules)
        self._tracks: dict[tuple[str, str, str], _Track] = {}

    def observe(self, source_id: str, scores: dict[str, float], at: datetime) -> list[Transition]:
        """Feed one item's scores (by label); return the transitions it causes."""
        transitions = []
        for rule in self.rules:
            if not fnmatchcase(source_id, rule.sources):
                continue
            for label, score in scores.items():
                if not fnmatchcase(label, rule.label):
                    continue
                transition = self._step(rule, source_id, label, score, at)
                if transition is not None:
                    transitions.append(transition)
        return transitions

    def _step(
        self, rule: AlertRule, source_id: str, label: str, score: float, at: datetime
    ) -> Transition | None:
        key = (rule.name, source_id, label)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(deque(maxlen=rule.m))
        track.scores.append(score)
        if not track.firing:
            hits = sum(s >= rule.hi for s in track.scores)
            cooled = track.resolved_at is None or at - track.resolved_at >= timedelta(seconds=rule.cooldown_s)
            if hits >= rule.n and cooled:
                track.firing = True
                return Transition(rule, source_id, label, "firing", score, at)
        else:
            holding = sum(s >= rule.resolve_below for s in track.scores)
            if holding < rule.n:
                track.firing = False
                track.resolved_at = at
                return Transition(rule, source_id, label, "resolved", score, at)
        return None
