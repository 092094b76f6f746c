"""Replaying a labelled series through a detector and the alert policy, scored the NAB way.

An alert inside a labelled window is a detection (the earlier the better), an alert outside
every window is a false alert, a window without an alert is a miss. The rolling z-score
baseline is replayed through the same policy, with its threshold calibrated the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from models.sensors.series import Series, window_end_indices, windows
from models.sensors.training import normalise, score_windows
from schemas.model_card import ModelCard, SeriesInputSpec
from schemas.settings import AlertRule

DAY_S = 86_400.0


@dataclass
class DetectionReport:
    """How one detector did on one labelled series."""

    detector: str
    windows_total: int
    windows_detected: int
    false_alerts: int
    days: float
    delays_h: list[float] = field(default_factory=list)

    @property
    def false_alerts_per_day(self) -> float:
        """False alerts over the length of the series."""
        return self.false_alerts / self.days if self.days else 0.0

    @property
    def mean_delay_h(self) -> float:
        """Mean hours from a window's start to its first alert (detected windows only)."""
        return float(np.mean(self.delays_h)) if self.delays_h else float("nan")


def labelled_windows(labels_file: str | Path, series_file: str | Path) -> list[tuple[float, float]]:
    """The anomaly windows of ``series_file`` from a NAB ``combined_windows.json``."""
    labels = json.loads(Path(labels_file).read_text())
    name = Path(series_file).name
    for key, spans in labels.items():
        if key.endswith("/" + name) or key == name:
            return [(_epoch(low), _epoch(high)) for low, high in spans]
    raise KeyError(f"no labelled windows for {name} in {labels_file}")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def alert_times(times: np.ndarray, scores: np.ndarray, rule: AlertRule) -> list[float]:
    """When the rule fires, replaying ``scores`` at ``times`` through the alert policy."""
    from consumers.alerts.policy import AlertPolicy  # the same policy the service runs

    policy = AlertPolicy([rule])
    fired = []
    for at, score in zip(times, scores, strict=True):
        for transition in policy.observe(
            "series", {"anomaly": float(score)}, datetime.fromtimestamp(at, UTC)
        ):
            if transition.state == "firing":
                fired.append(float(at))
    return fired


def report(
    detector: str, fired: list[float], spans: list[tuple[float, float]], start: float, end: float
) -> DetectionReport:
    """NAB-style counts for alerts at ``fired`` against the labelled ``spans``."""
    result = DetectionReport(detector, len(spans), 0, 0, (end - start) / DAY_S)
    for low, high in spans:
        inside = [t for t in fired if low <= t <= high]
        if inside:
            result.windows_detected += 1
            result.delays_h.append((inside[0] - low) / 3600)
    result.false_alerts = sum(not any(low <= t <= high for low, high in spans) for t in fired)
    return result


def policy_rule(threshold: float) -> AlertRule:
    """2-of-3 confirmation, resolve below 75% of the threshold, a 6-hour cooldown."""
    return AlertRule(
        name="eval", label="anomaly", hi=threshold, lo=0.75 * threshold, n=2, m=3, cooldown_s=6 * 3600
    )


def model_scores(module: torch.nn.Module, card: ModelCard, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Window-end times and mean per-channel scores of a registry sensor model."""
    spec = card.input
    assert isinstance(spec, SeriesInputSpec)
    batch = windows(normalise(series.values, spec.mean, spec.std), spec.window, spec.stride)
    ends = window_end_indices(len(series.values), spec.window, spec.stride)
    return series.times[ends], score_windows(module, batch).mean(dim=1).numpy()


def rolling_zscore(series: Series, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: |x_t - mean| / std of the ``window - 1`` samples before t, largest over channels."""
    ends = window_end_indices(len(series.values), window, stride)
    scores = []
    for end in ends:
        past = series.values[end - window + 1 : end]
        scores.append(
            float(np.max(np.abs(series.values[end] - past.mean(axis=0)) / np.maximum(past.std(axis=0), 1e-6)))
        )
    return series.times[ends], np.asarray(scores)


def calibrated_threshold(times: np.ndarray, scores: np.ndarray, until: float, quantile: float) -> float:
    """The ``quantile`` of the scores up to time ``until`` (the normal, training period)."""
    head = scores[times <= until]
    return float(np.quantile(head if len(head) else scores, quantile))


def compare(
    module: torch.nn.Module,
    card: ModelCard,
    series: Series,
    spans: list[tuple[float, float]],
    train_fraction: float = 0.15,
    quantile: float = 0.995,
) -> list[DetectionReport]:
    """The model (its card threshold) and the rolling z-score (calibrated alike) on one series."""
    spec = card.input
    assert isinstance(spec, SeriesInputSpec)
    start, end = float(series.times[0]), float(series.times[-1])
    until = float(series.times[max(spec.window, int(len(series.times) * train_fraction)) - 1])
    times, scores = model_scores(module, card, series)
    reports = [
        report(
            f"{card.architecture} (model)",
            alert_times(times, scores, policy_rule(card.thresholds["anomaly"])),
            spans,
            start,
            end,
        )
    ]
    ztimes, zscores = rolling_zscore(series, spec.window, spec.stride)
    threshold = calibrated_threshold(ztimes, zscores, until, quantile)
    reports.append(
        report(
            "rolling z-score (baseline)",
            alert_times(ztimes, zscores, policy_rule(threshold)),
            spans,
            start,
            end,
        )
    )
    return reports
