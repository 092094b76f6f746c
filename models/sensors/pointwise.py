"""The point-wise protocol (SKAB's): for each series, train on its normal period, score every
later sample, and count TP/FP/FN/TN over all series.

A sample is flagged when the alert rule is firing at its time: the state after the last
window that ended at or before it, the rule replayed from the first window after the normal
period (as a model deployed then would run). Reported beside the model: flagging every
sample, and PCA T² + Q fitted on the same rows, its threshold calibrated on the same rows
by the same rule, through the same alert rule.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from models.alert_policy import AlertShape
from models.sensors.classical import PcaDetector
from models.sensors.scoring import replay_alerts, score_series
from models.sensors.series import Series, normal_rows
from models.sensors.training import SensorTraining, train_sensor_model
from models.sensors.windowing import rows_at


@dataclass
class Confusion:
    """Sample counts of one detector."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flags: np.ndarray, truth: np.ndarray) -> Confusion:
        """Count ``flags`` against ``truth`` (both boolean, per sample)."""
        self.tp += int((flags & truth).sum())
        self.fp += int((flags & ~truth).sum())
        self.fn += int((~flags & truth).sum())
        self.tn += int((~flags & ~truth).sum())
        return self

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN)."""
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)

    @property
    def false_alarm_rate(self) -> float:
        """FP / (FP + TN)."""
        return self.fp / max(1, self.fp + self.tn)

    @property
    def missed_alarm_rate(self) -> float:
        """FN / (FN + TP)."""
        return self.fn / max(1, self.fn + self.tp)


@dataclass
class SeriesOutcome:
    """One series under the protocol: where scoring starts, the model's window scores and
    threshold, the baseline's sample scores and threshold, and each detector's flags."""

    series: Series
    start: int
    end_s: np.ndarray
    scores: np.ndarray
    threshold: float
    baseline_scores: np.ndarray
    baseline_threshold: float
    flags: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class PointwiseResult:
    """Every detector's confusion summed over the series, and each series' outcome."""

    label: str
    confusion: dict[str, Confusion]
    outcomes: list[SeriesOutcome]
    repeats: int = 0
    """Samples set aside for repeating the time of the one before (the service's duplicates)."""
    seconds: float = 0.0
    """Wall time of training and scoring every series."""


MODEL, EVERYTHING, PCA = "model", "flag every sample", "PCA T²+Q (baseline)"


def evaluate_series(
    series: Series, config: SensorTraining, shape: AlertShape, registry: str, version: str = "1"
) -> SeriesOutcome:
    """Train on ``series``' normal period, then flag its later samples with each detector."""
    start = normal_rows(series, config.normal_rows, config.normal_span_s, config.normal_fraction)
    if start >= len(series.times):
        raise ValueError(f"{series.asset}: the normal period covers the whole series")
    entry = train_sensor_model([series], registry, "pointwise", version, config, progress=False)
    scored = score_series(entry.module, entry.card, series)
    threshold = entry.card.thresholds[scored.label]
    after = scored.end_s > series.times[start - 1]
    firing = np.zeros(len(scored.end_s), dtype=bool)
    firing[after] = replay_alerts(
        scored.end_s[after], scored.alerting[after], shape.rule(scored.label, threshold)
    ).firing
    at = rows_at(series.times, scored.end_s)
    model_flags = np.where(at >= 0, firing[np.maximum(at, 0)], False)[start:]

    split = start - max(1, int(start * config.calibration_fraction))
    pca = PcaDetector.fit(series.values[:split], min_scale=config.scale_floor)
    calibration = series.values[split:start]
    baseline = pca.scores(series.values, calibration, config.threshold_quantile)
    baseline_threshold = (
        float(np.quantile(baseline[split:start], config.threshold_quantile)) * config.threshold_margin
    )
    baseline_flags = replay_alerts(
        series.times[start:], baseline[start:], shape.rule("anomaly", baseline_threshold)
    ).firing
    outcome = SeriesOutcome(
        series, start, scored.end_s, scored.alerting, threshold, baseline, baseline_threshold
    )
    outcome.flags = {
        MODEL: model_flags,
        EVERYTHING: np.ones(len(series.times) - start, dtype=bool),
        PCA: baseline_flags,
    }
    return outcome


def evaluate_pointwise(
    series: list[Series], label: str, config: SensorTraining, shape: AlertShape
) -> PointwiseResult:
    """The protocol over ``series``, scored against their ``label`` column (non-zero = anomaly)."""
    missing = [s.asset for s in series if label not in s.labels]
    if missing:
        raise ValueError(f"no label column {label!r} in {', '.join(missing)}")
    result = PointwiseResult(label, {MODEL: Confusion(), EVERYTHING: Confusion(), PCA: Confusion()}, [])
    with tempfile.TemporaryDirectory(prefix="vigil-pointwise-") as registry:
        started = time.monotonic()
        for k, s in enumerate(series):
            outcome = evaluate_series(s, config, shape, registry, str(k))
            kept = ~s.repeats[outcome.start :]
            truth = s.labels[label][outcome.start :][kept] != 0
            for name, flags in outcome.flags.items():
                result.confusion[name].add(flags[kept], truth)
            result.repeats += int((~kept).sum())
            result.outcomes.append(outcome)
        result.seconds = time.monotonic() - started
    return result
