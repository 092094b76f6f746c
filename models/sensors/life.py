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
    caps: list[float | None] = field(default_factory=list)
    """The life cap of each model trained (the truth is capped alike)."""

    @property
    def cap(self) -> str:
        """The cap(s) for a title: ``125``, ``118-121``, or ``none``."""
        known = sorted({c for c in self.caps if c is not None})
        if not known:
            return "none"
        return f"{known[0]:g}" if len(known) == 1 else f"{known[0]:g}-{known[-1]:g}"


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
    result = LifeResult([r.asset for r in training], [r.asset for r in testing], np.empty(0))
    truth, estimates, cap = _cut_and_estimate(training, testing, config, cuts, config.seed * 1_000_003)
    result.truth, result.caps = truth, [cap]
    _score(result, estimates)
    result.seconds = time.monotonic() - started
    return result


def evaluate_life_folds(runs: list[Series], config: SensorTraining, folds: int, cuts: int) -> LifeResult:
    """k-fold over units: the runs dealt (seeded) into ``folds`` parts; each part in turn is
    cut and estimated by a model trained on the others, so every unit is held out once."""
    if not 2 <= folds <= len(runs):
        raise ValueError(f"{folds} folds need between 2 and {len(runs)} runs")
    started = time.monotonic()
    order = np.random.default_rng(config.seed).permutation(len(runs))
    truths: list[np.ndarray] = []
    estimates: dict[str, list[np.ndarray]] = {}
    held: list[str] = []
    caps: list[float | None] = []
    for k, part in enumerate(np.array_split(order, folds)):
        chosen = set(part.tolist())
        training = [r for i, r in enumerate(runs) if i not in chosen]
        testing = [runs[i] for i in part]
        truth, fold, cap = _cut_and_estimate(
            training, testing, config, cuts, config.seed * 1_000_003 + k * 7_919
        )
        truths.append(truth)
        caps.append(cap)
        for name, values in fold.items():
            estimates.setdefault(name, []).append(values)
        held += [r.asset for r in testing]
    result = LifeResult([r.asset for r in runs], held, np.concatenate(truths), caps=caps)
    _score(result, {name: np.concatenate(v) for name, v in estimates.items()})
    result.seconds = time.monotonic() - started
    return result


def _cut_and_estimate(
    training: list[Series], testing: list[Series], config: SensorTraining, cuts: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray], float | None]:
    """Train on ``training``; the capped truth and every estimator's estimates at ``cuts``
    random cuts of each ``testing`` run, and the cap."""
    entry = _train(training, config)
    spec = entry.card.input
    cap = entry.card.life.cap if entry.card.life else None
    windows, truth = [], []
    for k, run in enumerate(testing):
        ends = cut_points(run, cuts, seed + k)
        windows.append(_last_windows(run, spec, ends))
        truth.append(life_left(run, run.times[ends - 1], config.life_unit, spec.sample_period_s, cap))
    return np.concatenate(truth), _estimates(entry, training, np.concatenate(windows), config, cap), cap


def _train(training: list[Series], config: SensorTraining) -> Any:
    with tempfile.TemporaryDirectory(prefix="vigil-life-") as registry:
        entry = train_sensor_model(training, registry, "life", "1", config, progress=False)
    assert isinstance(entry.card.input, SeriesInputSpec)
    return entry


def evaluate_life_on_test(
    training: list[Series], testing: list[Series], truth: np.ndarray, config: SensorTraining
) -> LifeResult:
    """Train on every training run, estimate each test run's life at its last cycle, compare
    with ``truth``; see the module docstring."""
    if len(truth) != len(testing):
        raise ValueError(f"the truth file has {len(truth)} values for {len(testing)} test runs")
    started = time.monotonic()
    entry = _train(training, config)
    spec = entry.card.input
    cap = entry.card.life.cap if entry.card.life else None
    test_x = np.concatenate([_last_windows(run, spec, np.array([len(run.times)])) for run in testing])
    result = LifeResult(
        [r.asset for r in training], [r.asset for r in testing], np.asarray(truth, float), caps=[cap]
    )
    _score(result, _estimates(entry, training, test_x, config, cap), cap)
    result.seconds = time.monotonic() - started
    return result


def _estimates(
    entry: Any, training: list[Series], test_x: np.ndarray, config: SensorTraining, cap: float | None
) -> dict[str, np.ndarray]:
    """The model's, the training mean's and a ridge's estimates on ``test_x``, the baselines
    fitted on ``training``'s windows."""
    spec = entry.card.input
    estimate = score_windows(entry.module, torch.from_numpy(test_x)).squeeze(1).numpy()
    train_x, train_y = [], []
    runs = [run.select(spec.channels) for run in training]
    for run, (values, ends) in zip(runs, dense_windows(runs, spec), strict=True):
        train_x.append(values)
        train_y.append(life_left(run, ends, config.life_unit, spec.sample_period_s, cap))
    ridge = RidgeLife.fit(np.concatenate(train_x), np.concatenate(train_y))
    constant = np.full(len(test_x), float(np.concatenate(train_y).mean()))
    return {MODEL: estimate, CONSTANT: constant, RIDGE: ridge.predict(test_x)}


def _score(result: LifeResult, estimates: dict[str, np.ndarray], cap_too: float | None = None) -> None:
    """Each estimator against ``result.truth`` (and, given ``cap_too``, against it capped)."""
    truth = result.truth
    for name, values in estimates.items():
        rmse = float(np.sqrt(np.mean((values - truth) ** 2)))
        capped = (
            float(np.sqrt(np.mean((values - np.minimum(truth, cap_too)) ** 2)))
            if cap_too is not None
            else None
        )
        bias = float(np.mean(values - truth))
        result.scores[name] = LifeScore(rmse, nasa_score(values, truth), values, bias, capped)
