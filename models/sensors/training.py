"""Training sensor registry entries from history; ``SensorTraining`` holds every default, for
the CLI and the Python API alike.

Anomaly scorers (``sensor_autoencoder``, the default, and ``sensor_forecast``) learn the
normal period at the start of each series: its first part trains, its tail (never trained
on) stops training early and calibrates the threshold, ``threshold_quantile`` of the tail's
window scores times ``threshold_margin`` (recorded in the card's ``threshold_rule``).
Remaining-useful-life regressors (``sensor_rul``) take each series as a run to failure and
learn the capped life left at every sample, validated on whole held-out runs.
All windows come from ``models.sensors.windowing``: the windows the service serves.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from models.engine import default_torch_threads
from models.registry import save_model
from models.sensors.networks import GruAutoencoder, GruForecaster, GruRulRegressor, build_sensor_model
from models.sensors.series import Series, TableFormat, load_history, normal_rows
from models.sensors.windowing import replay, window_spec
from schemas.model_card import LifeSpec, ModelCard, ModelTask, SeriesInputSpec, ThresholdRule, TrainingSummary

log = logging.getLogger(__name__)

ARCHITECTURES = {
    "sensor_autoencoder": "gru_autoencoder",
    "sensor_forecast": "gru_forecaster",
    "sensor_rul": "gru_rul_regressor",
}
SENSOR_TASKS = tuple(ARCHITECTURES)


@dataclass(frozen=True)
class SensorTraining:
    """Every choice of a sensor training run (the CLI's defaults are these)."""

    task: ModelTask = "sensor_autoencoder"
    window: int = 32
    stride: int = 4
    """Samples between two scored windows in service (and in evaluation)."""
    hidden: int = 32
    layers: int | None = None
    """Recurrent layers; None: 1 for anomaly scorers, 2 for life regressors."""
    score_steps: int = 16
    """Anomaly scorers: the score is the mean error over the window's last this many samples."""
    epochs: int = 60
    patience: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    normal_rows: int | None = None
    """Anomaly scorers: leading samples of each series that are normal operation ..."""
    normal_span_s: float | None = None
    """... or leading seconds (or time-column units) of each series ..."""
    normal_fraction: float = 0.15
    """... or else this leading share of each series."""
    calibration_fraction: float = 0.25
    """Tail of the normal period held out: early stopping and the threshold."""
    threshold_quantile: float = 0.99
    threshold_margin: float = 2.0
    min_scale: float | None = None
    """Each channel's normalising scale is at least this share of its mean magnitude, so a
    channel nearly constant in training (a thermocouple on a cold rig) is not read as
    anomalous for drifting by a fraction of a degree. None: 1% for anomaly scorers; none for
    life regressors, which set no threshold and need a slow drift at its true size."""
    life_unit: Literal["cycles", "samples", "hours"] = "samples"
    life_cap: float | None = None
    """Life targets above this read as this (piecewise-linear: early in a run, wear does not
    show yet). None: ``LIFE_CAP_SHARE`` of the median run's life; 0: uncapped."""
    life_alert: float = 24.0
    """Life regressors: alert when the estimate falls to this, in ``life_unit``."""
    validation_fraction: float = 0.2
    """Life regressors: share of runs (whole runs) held out for early stopping."""
    sample_period_s: float | None = None
    """The served grid's period; None: the median spacing of the history."""
    seed: int = 0
    threads: int | None = None
    """Torch threads while training; None: ``default_torch_threads()``."""

    @property
    def scale_floor(self) -> float:
        """``min_scale``, or the task's default."""
        if self.min_scale is not None:
            return self.min_scale
        return 0.0 if self.task == "sensor_rul" else 0.01


LIFE_CAP_SHARE = 0.6
"""The default cap of the life target as a share of the median run's life (C-MAPSS FD001:
runs of 128-362 cycles, median 199, give 119, where the literature caps at 120-130)."""


@dataclass(frozen=True)
class SensorEntry:
    """A trained sensor model: its folder, card and module."""

    folder: Path
    card: ModelCard
    module: nn.Module


def normalise(values: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Values scaled by the card's statistics."""
    return (values - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)


def channel_statistics(values: np.ndarray, min_scale: float) -> tuple[list[float], list[float]]:
    """Mean and scale of each channel, computed in float64 (float32 reads a constant 518.67 as
    spread 0.016); the scale is at least ``min_scale`` of |mean| (and 1e-6)."""
    wide = values.astype(np.float64)
    mean = wide.mean(axis=0)
    std = np.maximum(wide.std(axis=0), np.maximum(min_scale * np.abs(mean), 1e-6))
    return mean.tolist(), std.tolist()


def score_windows(module: nn.Module, batch: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Model outputs for ``batch`` in chunks."""
    with torch.inference_mode():
        return (
            torch.cat([module(batch[k : k + chunk]) for k in range(0, len(batch), chunk)])
            if len(batch)
            else torch.empty(0)
        )


def train_sensor_model(
    history: str | Path | list[Series],
    registry: str | Path,
    name: str,
    version: str,
    config: SensorTraining | None = None,
    layout: TableFormat | None = None,
    progress: bool = True,
) -> SensorEntry:
    """Train ``config.task`` on ``history`` (a file, or series) and save it in ``registry``."""
    config = config or SensorTraining()
    if config.task not in ARCHITECTURES:
        raise ValueError(f"sensor training trains {', '.join(ARCHITECTURES)}, not {config.task!r}")
    series = history if isinstance(history, list) else load_history(history, layout)
    dataset = "in-memory" if isinstance(history, list) else str(history)
    if not series:
        raise ValueError(f"{dataset}: no history")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_torch_threads())
    torch.manual_seed(config.seed)
    try:
        train = _train_life if config.task == "sensor_rul" else _train_scorer
        card, module = train(series, dataset, name, version, config, progress)
    finally:
        torch.set_num_threads(threads)
    return SensorEntry(save_model(registry, card, module), card, module)


def _series_spec(
    series: list[Series],
    config: SensorTraining,
    mean: list[float],
    std: list[float],
    pad: Literal["none", "edge"] = "none",
    ignored: list[str] | None = None,
) -> SeriesInputSpec:
    return SeriesInputSpec(
        channels=series[0].channels,
        window=config.window,
        stride=config.stride,
        sample_period_s=config.sample_period_s or float(np.median([s.period_s for s in series])),
        mean=mean,
        std=std,
        pad=pad,
        ignored=ignored or [],
    )


def dense_windows(series: list[Series], spec: SeriesInputSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised windows ending at every sample, and their end times, per series."""
    dense = window_spec(spec, stride=1)
    out = []
    for s in series:
        made = replay(s, dense)
        out.append((normalise(made.values, spec.mean, spec.std).astype(np.float32), made.end_s))
    return out


def _train_scorer(
    series: list[Series], dataset: str, name: str, version: str, config: SensorTraining, progress: bool
) -> tuple[ModelCard, nn.Module]:
    heads = []
    for s in series:
        rows = normal_rows(s, config.normal_rows, config.normal_span_s, config.normal_fraction)
        if rows < config.window + 4:
            raise ValueError(
                f"{s.asset}: a normal period of {rows} samples is too short for windows of {config.window}"
            )
        heads.append(s.head(rows))
    splits = [len(h.times) - max(1, int(len(h.times) * config.calibration_fraction)) for h in heads]
    mean, std = channel_statistics(
        np.concatenate([h.values[:k] for h, k in zip(heads, splits, strict=True)]), config.scale_floor
    )
    spec = _series_spec(heads, config, mean, std)
    fit_parts, calibration_parts = [], []
    for (values, ends), head, split in zip(dense_windows(heads, spec), heads, splits, strict=True):
        trained = ends <= head.times[split - 1]
        fit_parts.append(values[trained])
        calibration_parts.append(values[~trained])
    fitting = torch.from_numpy(np.concatenate(fit_parts))
    calibration = torch.from_numpy(np.concatenate(calibration_parts))
    if not len(fitting) or not len(calibration):
        raise ValueError(
            f"the normal period gives {len(fitting)} training and {len(calibration)} calibration windows; "
            "give more normal rows or a smaller window"
        )
    layers = config.layers or 1
    model = build_sensor_model(config.task, len(spec.channels), config.hidden, layers)
    if isinstance(model, GruAutoencoder | GruForecaster):
        model.score_steps.fill_(min(config.score_steps, config.window - 1))
    loss: Callable[[torch.Tensor], torch.Tensor] = model.loss  # type: ignore[assignment]
    epochs, calibration_loss = _fit(
        model, loss, fitting, calibration, config, f"training {name} ({config.task})", progress
    )
    scores = score_windows(model, calibration).mean(dim=1).numpy()
    threshold = float(np.quantile(scores, config.threshold_quantile) * config.threshold_margin)
    rule = ThresholdRule(
        quantile=config.threshold_quantile,
        margin=config.threshold_margin,
        calibration=f"last {config.calibration_fraction:.0%} of each series' normal period",
        calibration_windows=len(calibration),
    )
    card = ModelCard(
        name=name,
        version=version,
        task=config.task,
        architecture=ARCHITECTURES[config.task],
        input=spec,
        labels=spec.channels,
        thresholds={"anomaly": threshold},
        threshold_rule=rule,
        training=TrainingSummary(
            dataset=dataset,
            samples=len(fitting),
            epochs=epochs,
            metrics={
                "calibration_score_median": float(np.median(scores)),
                "calibration_loss": calibration_loss,
            },
            notes=f"normal period: {_normal_text(config)} of each series",
        ),
        created_at=datetime.now(UTC),
    )
    return card, model


def _normal_text(config: SensorTraining) -> str:
    if config.normal_rows is not None:
        return f"first {config.normal_rows} samples"
    if config.normal_span_s is not None:
        return f"first {config.normal_span_s:g} s"
    return f"first {config.normal_fraction:.0%}"


def _fit(
    model: nn.Module,
    loss: Callable[..., torch.Tensor],
    fitting: torch.Tensor,
    validation: torch.Tensor,
    config: SensorTraining,
    label: str,
    progress: bool,
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[int, float]:
    """Adam with early stopping on the validation loss; the best epoch's weights are kept, and
    it and its validation loss are returned.

    ``targets`` (training, validation) make ``loss`` take (windows, targets)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_state, best_epoch, waited = float("inf"), copy.deepcopy(model.state_dict()), 0, 0

    def validation_loss() -> float:
        model.eval()
        with torch.inference_mode():
            value = loss(validation, targets[1]) if targets else loss(validation)
        return float(value)

    with Progress(disable=not progress) as bar:
        task = bar.add_task(label, total=config.epochs)
        for epoch in range(1, config.epochs + 1):
            model.train()
            for index in torch.randperm(len(fitting)).split(config.batch_size):
                optimiser.zero_grad()
                value = loss(fitting[index], targets[0][index]) if targets else loss(fitting[index])
                value.backward()
                optimiser.step()
            current = validation_loss()
            bar.update(task, advance=1, description=f"{label} val {current:.4g}")
            if current < best:
                best, best_state, best_epoch, waited = current, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return best_epoch, best


def informative_channels(series: list[Series]) -> list[str]:
    """Channels that vary in training (a constant one tells a model nothing)."""
    stacked = np.concatenate([s.values for s in series]).astype(np.float64)  # float32 misreads constants
    spread = stacked.std(axis=0) > 1e-6 * np.maximum(1.0, np.abs(stacked.mean(axis=0)))
    return [c for c, keep in zip(series[0].channels, spread, strict=True) if keep]


def life_left(
    series: Series, times: np.ndarray, unit: str, period_s: float, cap: float | None = None
) -> np.ndarray:
    """Life left at ``times`` of a run to failure (failure at its last sample), in ``unit``,
    no more than ``cap``."""
    seconds = series.times[-1] - times
    life = seconds / 3600 if unit == "hours" else np.round(seconds / period_s)
    return life if cap is None else np.minimum(life, cap)


def life_cap(runs: list[Series], config: SensorTraining, period_s: float) -> float | None:
    """The cap of the life target: ``config.life_cap`` (0: none), else ``LIFE_CAP_SHARE`` of
    the median run's whole life, in ``config.life_unit``."""
    if config.life_cap is not None:
        return config.life_cap or None
    lives = [float(life_left(r, r.times[:1], config.life_unit, period_s)[0]) for r in runs]
    return float(np.round(LIFE_CAP_SHARE * np.median(lives)))


def split_runs(
    runs: list[Series], share: float, seed: int, at_least: int = 0
) -> tuple[list[Series], list[Series]]:
    """Whole runs kept and held out (``share`` of them, at least ``at_least``), drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(runs))
    held = set(order[: max(at_least, round(len(runs) * share))].tolist())
    return [r for k, r in enumerate(runs) if k not in held], [r for k, r in enumerate(runs) if k in held]


def _train_life(
    series: list[Series], dataset: str, name: str, version: str, config: SensorTraining, progress: bool
) -> tuple[ModelCard, nn.Module]:
    channels = informative_channels(series)
    ignored = [c for c in series[0].channels if c not in channels]
    runs = [s.select(channels) for s in series]
    fitting, held = split_runs(runs, config.validation_fraction, config.seed) if len(runs) > 1 else (runs, [])
    mean, std = channel_statistics(np.concatenate([r.values for r in fitting]), config.scale_floor)
    spec = _series_spec(runs, config, mean, std, pad="edge", ignored=ignored)
    cap = life_cap(runs, config, spec.sample_period_s)

    def stack(chosen: list[Series]) -> tuple[torch.Tensor, torch.Tensor]:
        windows, lives = [], []
        for run, (values, ends) in zip(chosen, dense_windows(chosen, spec), strict=True):
            windows.append(values)
            lives.append(life_left(run, ends, config.life_unit, spec.sample_period_s, cap))
        return torch.from_numpy(np.concatenate(windows)), torch.from_numpy(
            np.concatenate(lives).astype(np.float32)
        )

    fit_x, fit_life = stack(fitting)
    val_x, val_life = stack(held or fitting)  # no run held out: validated on the training runs
    scale = float(cap if cap is not None else max(fit_life.max(), val_life.max()))
    fit_y, val_y = fit_life / scale, val_life / scale
    model = build_sensor_model("sensor_rul", len(channels), config.hidden, config.layers or 2)
    assert isinstance(model, GruRulRegressor)
    model.scale.fill_(scale)

    def loss(windows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (model.relative(windows).squeeze(1) - target).pow(2).mean()

    epochs, _ = _fit(
        model, loss, fit_x, val_x, config, f"training {name} (sensor_rul)", progress, (fit_y, val_y)
    )
    predicted = score_windows(model, val_x).squeeze(1)
    rmse = float((predicted - val_y * scale).pow(2).mean().sqrt())
    card = ModelCard(
        name=name,
        version=version,
        task="sensor_rul",
        architecture=ARCHITECTURES["sensor_rul"],
        input=spec,
        labels=["rul"],
        thresholds={"low_rul": config.life_alert},
        life=LifeSpec(unit=config.life_unit, cap=cap),
        training=TrainingSummary(
            dataset=dataset,
            samples=len(fit_x),
            epochs=epochs,
            metrics={"validation_rmse": rmse, "scale": scale, "validation_runs": float(len(held))},
            notes=f"{len(runs)} runs to failure; life in {config.life_unit}"
            + (f", capped at {cap:g}" if cap is not None else "")
            + (f"; constant channels left out: {', '.join(ignored)}" if ignored else ""),
        ),
        created_at=datetime.now(UTC),
    )
    return card, model
