"""Turning a stream of scores into alert transitions: N-of-M, hysteresis, cooldown, resolve.

State is kept per (rule, source, label). For each new score of a matching source and label:
- not firing: fire when at least ``n`` of the last ``m`` scores are >= ``hi`` and the
  cooldown since the last resolve (in event time) has passed;
- firing: resolve when fewer than ``n`` of the last ``m`` scores are >= ``lo``.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np

from schemas.model_card import ModelCard
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


@dataclass(frozen=True)
class AlertShape:
    """An alert rule without its threshold: fire when ``n`` of the last ``m`` scores reach it,
    resolve when fewer than ``n`` of the last ``m`` reach ``resolve`` times it, and no new
    alert for ``cooldown_s`` after a resolve. The default is the sensor pipeline's (two of three windows)."""

    n: int = 2
    m: int = 3
    resolve: float = 1.0
    cooldown_s: float = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"

    def rule(self, label: str, threshold: float, name: str = "evaluation") -> AlertRule:
        """The alert rule at ``threshold``."""
        return AlertRule(
            name=name,
            label=label,
            hi=threshold,
            lo=self.resolve * threshold,
            n=self.n,
            m=self.m,
            cooldown_s=self.cooldown_s,
            severity=self.severity,
        )

    def describe(self) -> str:
        """The rule in words, for reports."""
        cooldown = f", cooldown {self.cooldown_s:g} s" if self.cooldown_s else ", no cooldown"
        return f"{self.n} of {self.m} scores over the threshold, resolve below {self.resolve:g}x{cooldown}"

    def card_rules(self, card: ModelCard, thresholds: Mapping[str, float] | None = None) -> list[AlertRule]:
        """One rule of this shape per thresholded label of ``card`` (``thresholds`` overrides
        where a label's score is not in the card threshold's units), named ``<model>-<label>``."""
        chosen = {**card.thresholds, **(thresholds or {})}
        return [self.rule(label, chosen[label], f"{card.name}-{label}") for label in card.thresholds]


matches = functools.lru_cache(maxsize=1 << 16)(fnmatchcase)
"""``fnmatchcase``, remembered: every score of every source asks again of the same few patterns."""


def at_time(time_s: float) -> datetime:
    """An event time (seconds since the epoch) as a UTC timestamp."""
    return datetime.fromtimestamp(time_s, UTC)


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

    def continue_from(self, other: AlertPolicy) -> None:
        """Share ``other``'s state (what fires, the recent scores), as a model that replaces
        another must: an alert already firing is not raised again, and resolves as usual.
        Rules are matched by name."""
        self._tracks = other._tracks

    def snapshot(self) -> dict[str, list[list[Any]]]:
        """What the policy remembers, by source: ``[rule, label, scores, firing, resolved_at]``
        rows of plain values (JSON), for ``restore``."""
        by_source: dict[str, list[list[Any]]] = {}
        for (rule, source, label), track in self._tracks.items():
            resolved = None if track.resolved_at is None else track.resolved_at.timestamp()
            row = [rule, label, list(track.scores), track.firing, resolved]
            by_source.setdefault(source, []).append(row)
        return by_source

    def restore(self, source_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """Take back what ``snapshot`` gave for ``source_id``; rows of rules no longer held are
        left out (a rule's memory is its own)."""
        lengths = {rule.name: rule.m for rule in self.rules}
        for rule, label, scores, firing, resolved in rows:
            if rule not in lengths:
                continue
            track = _Track(deque(scores, maxlen=lengths[rule]), bool(firing))
            track.resolved_at = None if resolved is None else at_time(resolved)
            self._tracks[(rule, source_id, label)] = track

    def observe(self, source_id: str, scores: dict[str, float], at: datetime) -> list[Transition]:
        """Feed one item's scores (by label); return the transitions it causes."""
        transitions = []
        for rule in self.rules:
            if not matches(source_id, rule.sources):
                continue
            for label, score in scores.items():
                if not matches(label, rule.label):
                    continue
                transition = self._step(rule, source_id, label, score, at)
                if transition is not None:
                    transitions.append(transition)
        return transitions

    def observe_run(
        self, source_id: str, label: str, scores: np.ndarray, times: Sequence[float]
    ) -> list[tuple[int, int, Transition]]:
        """``observe`` of one label's scores in turn (NaN: no score), each at its event time
        (seconds since the epoch): (index, rule index, transition) of each transition. A quiet
        stretch (nothing reaching a not-firing rule's threshold, nothing dropping below a
        firing one's resolve) takes one step."""
        found: list[tuple[int, int, Transition]] = []
        present = np.flatnonzero(~np.isnan(scores))
        if not len(present):
            return found
        for number, rule in enumerate(self.rules):
            if not matches(source_id, rule.sources) or not matches(label, rule.label):
                continue
            key = (rule.name, source_id, label)
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track(deque(maxlen=rule.m))
            values = scores[present]
            held = list(track.scores)
            quiet = (
                all(held_score >= rule.resolve_below for held_score in held)
                and bool(np.all(values >= rule.resolve_below))
                if track.firing
                else not any(held_score >= rule.hi for held_score in held)
                and not bool(np.any(values >= rule.hi))
            )
            if quiet:
                track.scores.extend(values[-rule.m :].tolist())
                continue
            for index in present.tolist():
                transition = self._step(rule, source_id, label, float(scores[index]), at_time(times[index]))
                if transition is not None:
                    found.append((index, number, transition))
        return found

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
