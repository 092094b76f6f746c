"""The remaining-useful-life protocol: runs to failure split by unit (never by row), a model
trained on some, and the others cut short at random cycles, as a fleet in service is.

Each held-out run is cut at ``cuts`` points drawn uniformly (seeded) between its first cycle
and its last; the estimate at each cut (from the window ending there, padded if the run is
shorter than a window) is compared with the true life left, capped like the training target.
Reported: RMSE and the NASA score (sum of e^(-d/13) - 1 for early estimates, e^(d/10) - 1
for late ones, d = estimate - truth) beside a constant estimate (the training runs' mean
target) and a ridge regression on window features, both fitted on the same runs.

The published protocol (C-MAPSS and most RUL benchmarks, ``evaluate_life_on_test``): train on
every run of the training file; each run of the test file ends before failure, and its life
left at its last cycle is given by the truth file, one value per run in the order the runs
first appear. Reported as above, plus the RMSE against the truth capped like the training
target and the mean bias (estimate - truth: positive is late).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.sensors.classical import RidgeLife
from models.sensors.series import Series
from models.sensors.training import (
    SensorTraining,
    dense_windows,
    life_left,
    score_windows,
    split_runs,
    train_sensor_model,
)
from schemas.model_card import SeriesInputSpec


def nasa_score(estimate: np.ndarray, truth: np.ndarray) -> float:
    """The PHM08 asymmetric score (late estimates cost more than early ones); lower is better."""
    d = estimate - truth
    return float(np.sum(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1)))


@dataclass(frozen=True)
class LifeScore:
    """One estimator on the cut runs."""

    rmse: float
    nasa: float
    estimates: np.ndarray
    bias: float = 0.0
    """Mean of estimate - truth (positive: late, which the NASA score punishes most)."""
    rmse_capped: float | None = None
    """The published protocol: RMSE against the truth capped like the training target."""


@dataclass
class LifeResult:
    """The protocol's outcome: which runs trained and which were cut, truths, every estimator."""

    train_units: list[str]
    test_units: list[str]
    truth: np.ndarray
    scores: dict[str, LifeScore] = field(default_factory=dict)
    seconds: float = 0.0


MODEL, CONSTANT, RIDGE = "model", "training mean (trivial)", "ridge on window features (baseline)"


def cut_points(run: Series, cuts: int, seed: int) -> np.ndarray:
    """``cuts`` sample counts at which ``run`` is cut (each at least 1)."""
    return np.random.default_rng(seed).integers(1, len(run.times) + 1, size=cuts)


def _last_windows(run: Series, spec: SeriesInputSpec, ends: np.ndarray) -> np.ndarray:
    """The normalised window ending at each cut (every sample's window: an estimate at the last cycle)."""
    [(values, end_s)] = dense_windows([run.select(spec.channels)], spec)
    return values[np.searchsorted(end_s, run.times[ends - 1])]


def evaluate_life(runs: list[Series], config: SensorTraining, holdout: float, cuts: int) -> LifeResult:
    """Train on some units, estimate the life of the others at random cuts; see the module docstring."""
    started = time.monotonic()
    training, testing = split_runs(runs, holdout, config.seed, at_least=1)
    with tempfile.TemporaryDirectory(prefix="vigil-life-") as registry:
        entry = train_sensor_model(training, registry, "life", "1", config)
    spec = entry.card.input
    assert isinstance(spec, SeriesInputSpec)
    cap = entry.card.life.cap if entry.card.life else None
    windows, truth = [], []
    for k, run in enumerate(testing):
        ends = cut_points(run, cuts, config.seed * 1_000_003 + k)
        windows.append(_last_windows(run, spec, ends))
        truth.append(life_left(run, run.times[ends - 1], config.life_unit, spec.sample_period_s, cap))
    result = LifeResult([r.asset for r in training], [r.asset for r in testing], np.concatenate(truth))
    _score(result, entry, training, np.concatenate(windows), config, cap)
    result.seconds = time.monotonic() - started
    return result


def evaluate_life_on_test(
    training: list[Series], testing: list[Series], truth: np.ndarray, config: SensorTraining
) -> LifeResult:
    """Train on every training run, estimate each test run's life at its last cycle, compare
    with ``truth``; see the module docstring."""
    if len(truth) != len(testing):
        raise ValueError(f"the truth file has {len(truth)} values for {len(testing)} test runs")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vigil-life-") as registry:
        entry = train_sensor_model(training, registry, "life", "1", config)
    spec = entry.card.input
    assert isinstance(spec, SeriesInputSpec)
    cap = entry.card.life.cap if entry.card.life else None
    test_x = np.concatenate([_last_windows(run, spec, np.array([len(run.times)])) for run in testing])
    result = LifeResult([r.asset for r in training], [r.asset for r in testing], np.asarray(truth, float))
    _score(result, entry, training, test_x, config, cap, capped_too=cap is not None)
    result.seconds = time.monotonic() - started
    return result


def _score(
    result: LifeResult,
    entry: Any,
    training: list[Series],
    test_x: np.ndarray,
    config: SensorTraining,
    cap: float | None,
    capped_too: bool = False,
) -> None:
    """The model's, the training mean's and a ridge's estimates on ``test_x`` against ``result.truth``."""
    spec = entry.card.input
    estimate = score_windows(entry.module, torch.from_numpy(test_x)).squeeze(1).numpy()
    train_x, train_y = [], []
    runs = [run.select(spec.channels) for run in training]
    for run, (values, ends) in zip(runs, dense_windows(runs, spec), strict=True):
        train_x.append(values)
        train_y.append(life_left(run, ends, config.life_unit, spec.sample_period_s, cap))
    ridge = RidgeLife.fit(np.concatenate(train_x), np.concatenate(train_y))
    truth = result.truth
    constant = np.full(len(truth), float(np.concatenate(train_y).mean()))
    for name, values in ((MODEL, estimate), (CONSTANT, constant), (RIDGE, ridge.predict(test_x))):
        rmse = float(np.sqrt(np.mean((values - truth) ** 2)))
        capped = (
            float(np.sqrt(np.mean((values - np.minimum(truth, cap)) ** 2)))
            if capped_too and cap is not None
            else None
        )
        bias = float(np.mean(values - truth))
        result.scores[name] = LifeScore(rmse, nasa_score(values, truth), values, bias, capped)
