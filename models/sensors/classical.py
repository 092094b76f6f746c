"""Classical baselines the sensor evaluations report beside the models, fitted in the same run
on the same rows: PCA T² + Q (squared prediction error) for anomalies, a ridge regression on
window features for remaining useful life, a rolling z-score for NAB series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.sensors.series import Series
from models.sensors.training import channel_statistics


@dataclass(frozen=True)
class PcaDetector:
    """PCA on standardised normal rows, enough components for ``variance`` of the variance.

    A row's score is T²/q(T²) + Q/q(Q): each statistic over its own calibration quantile,
    so neither dominates by its units.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, variance: float = 0.9, min_scale: float = 0.01) -> PcaDetector:
        """Fit on normal ``rows`` (T, C)."""
        mean, scale = (np.asarray(v, dtype=rows.dtype) for v in channel_statistics(rows, min_scale))
        z = (rows - mean) / scale
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        explained = singular**2 / max(1, len(z) - 1)
        keep = int(np.searchsorted(np.cumsum(explained) / explained.sum(), variance) + 1)
        return cls(mean, scale, vt[:keep].T, np.maximum(explained[:keep], 1e-9))

    def statistics(self, rows: np.ndarray) -> np.ndarray:
        """T² and Q of each row (T, 2)."""
        z = (rows - self.mean) / self.scale
        projected = z @ self.components
        t2 = (projected**2 / self.variances).sum(axis=1)
        q = ((z - projected @ self.components.T) ** 2).sum(axis=1)
        return np.stack([t2, q], axis=1)

    def scores(self, rows: np.ndarray, calibration: np.ndarray, quantile: float) -> np.ndarray:
        """T²/q(T²) + Q/q(Q), the quantiles taken over the ``calibration`` rows."""
        reference = np.maximum(np.quantile(self.statistics(calibration), quantile, axis=0), 1e-12)
        return (self.statistics(rows) / reference).sum(axis=1)


def window_features(windows: np.ndarray) -> np.ndarray:
    """Per channel: the last value, the window mean and the least-squares slope (N, 3C)."""
    steps = np.arange(windows.shape[1]) - (windows.shape[1] - 1) / 2
    slope = (windows * steps[None, :, None]).sum(axis=1) / (steps**2).sum()
    return np.concatenate([windows[:, -1], windows.mean(axis=1), slope], axis=1)


@dataclass(frozen=True)
class RidgeLife:
    """Ridge regression of life on ``window_features``, predictions clipped at zero."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    @classmethod
    def fit(cls, windows: np.ndarray, life: np.ndarray, alpha: float = 1.0) -> RidgeLife:
        """Fit on normalised windows (N, W, C) and their life targets (N,)."""
        features = window_features(windows)
        mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
        x = (features - mean) / scale
        weights = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (life - life.mean()))
        return cls(mean, scale, weights, float(life.mean()))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Life estimates (N,)."""
        x = (window_features(windows) - self.mean) / self.scale
        return np.maximum(x @ self.weights + self.bias, 0.0)


def rolling_zscore(series: Series, window: int) -> np.ndarray:
    """|x_t - mean| / std of the ``window - 1`` samples before t, largest over channels (0 until
    there is a full history)."""
    values = series.values
    scores = np.zeros(len(values))
    for end in range(window - 1, len(values)):
        past = values[end - window + 1 : end]
        scores[end] = float(
            np.max(np.abs(values[end] - past.mean(axis=0)) / np.maximum(past.std(axis=0), 1e-6))
        )
    return scores
