"""Scoring a history offline as the service would: its windows (``windowing.replay``), the
model's outputs, what they mean (``window_scores``, shared with the serving lane), and the
alert policy replayed over them (``replay_alerts``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn

from models.alert_policy import AlertPolicy
from models.sensors.series import Series
from models.sensors.training import normalise, score_windows
from models.sensors.windowing import replay, window_spec
from schemas.model_card import ModelCard, SeriesInputSpec
from schemas.settings import AlertRule


def window_scores(card: ModelCard, outputs: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """The label alerts are raised on, and the scores by label, of model outputs (N, k).

    Anomaly scorers give per-channel errors: ``anomaly`` is their mean. Life regressors give
    the life left: ``low_rul`` = card threshold / life, reaching 1.0 as life falls to it.
    """
    if card.task == "sensor_rul":
        life = np.maximum(outputs[:, 0], 1e-6)
        return "low_rul", {"rul": life, "low_rul": card.thresholds.get("low_rul", 0.0) / life}
    return "anomaly", {"anomaly": outputs.mean(axis=1)}


@dataclass(frozen=True)
class ScoredSeries:
    """A series scored window by window: end times, scores by label, the alerting label."""

    end_s: np.ndarray
    scores: dict[str, np.ndarray]
    label: str

    @property
    def alerting(self) -> np.ndarray:
        """The scores alerts are raised on."""
        return self.scores[self.label]


def require_channels(series: Series, card: ModelCard) -> None:
    """``ValueError`` naming the file, the model and the channels when ``series`` lacks one the model needs."""
    assert isinstance(card.input, SeriesInputSpec)
    if missing := [c for c in card.input.channels if c not in series.channels]:
        raise ValueError(
            f"{series.source or series.asset}: model {card.name} {card.version} requires channel(s) "
            f"{', '.join(missing)}, which asset {series.asset} does not have "
            f"(it has {', '.join(series.channels)})"
        )


def score_series(
    module: nn.Module, card: ModelCard, series: Series, stride: int | None = None, phase: int = 0
) -> ScoredSeries:
    """Every window the service would score for ``series`` (every ``stride`` samples if given)
    of an asset whose window phase is ``phase`` (``windowing.stagger``)."""
    spec = card.input
    assert isinstance(spec, SeriesInputSpec)
    require_channels(series, card)
    made = replay(series, window_spec(spec, stride=stride, phase=phase))
    batch = torch.from_numpy(normalise(made.values, spec.mean, spec.std).astype(np.float32))
    outputs = score_windows(module, batch).numpy().reshape(len(made), -1)
    label, scores = window_scores(card, outputs)
    return ScoredSeries(made.end_s, scores, label)


@dataclass(frozen=True)
class AlertReplay:
    """The policy replayed over scores: firing after each score, and when it started firing."""

    firing: np.ndarray
    fired_at: list[float]


def replay_alerts(
    times: np.ndarray, scores: np.ndarray, rule: AlertRule, source: str = "series"
) -> AlertReplay:
    """``rule`` through the service's ``AlertPolicy`` over ``scores`` at ``times`` (event time)."""
    policy = AlertPolicy([rule])
    firing = np.zeros(len(scores), dtype=bool)
    fired_at: list[float] = []
    state = False
    for k, (at, score) in enumerate(zip(times, scores, strict=True)):
        for transition in policy.observe(source, {rule.label: float(score)}, datetime.fromtimestamp(at, UTC)):
            state = transition.state == "firing"
            if state:
                fired_at.append(float(at))
        firing[k] = state
    return AlertReplay(firing, fired_at)
