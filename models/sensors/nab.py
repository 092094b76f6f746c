"""The NAB window protocol: a labelled series replayed through a detector and an alert rule.

An alert inside a labelled window is a detection (the earlier the better), an alert outside
every window is a false alert, a window without an alert is a miss. The rolling z-score
baseline goes through the same rule, its threshold calibrated the same way on the normal
period.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from torch import nn

from models.alert_policy import AlertShape
from models.sensors.classical import rolling_zscore
from models.sensors.scoring import replay_alerts, score_series
from models.sensors.series import Series
from schemas.model_card import ModelCard, SeriesInputSpec

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


def compare(
    module: nn.Module,
    card: ModelCard,
    series: Series,
    spans: list[tuple[float, float]],
    shape: AlertShape,
    normal_fraction: float = 0.15,
) -> list[DetectionReport]:
    """The model (its card threshold) and the rolling z-score (its threshold from the normal
    period, by the card's threshold rule) through the same alert rule, on one series."""
    spec = card.input
    assert isinstance(spec, SeriesInputSpec)
    start, end = float(series.times[0]), float(series.times[-1])
    scored = score_series(module, card, series)
    model_rule = shape.rule(scored.label, card.thresholds[scored.label])
    reports = [
        report(
            f"{card.architecture} (model)",
            replay_alerts(scored.end_s, scored.alerting, model_rule).fired_at,
            spans,
            start,
            end,
        )
    ]
    zscores = rolling_zscore(series, spec.window)
    normal = zscores[spec.window - 1 : max(spec.window, int(len(zscores) * normal_fraction))]
    quantile, margin = (
        (card.threshold_rule.quantile, card.threshold_rule.margin) if card.threshold_rule else (0.99, 1.0)
    )
    baseline_rule = shape.rule("anomaly", float(np.quantile(normal, quantile)) * margin)
    reports.append(
        report(
            "rolling z-score (baseline)",
            replay_alerts(series.times, zscores, baseline_rule).fired_at,
            spans,
            start,
            end,
        )
    )
    return reports
