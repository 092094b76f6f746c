"""Training sensor registry entries from history, with normalisation and threshold in the card."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import nn

from models.registry import save_model
from models.sensors.networks import GruRulRegressor, build_sensor_model
from models.sensors.series import Series, load_history, window_end_indices, windows
from schemas.model_card import ModelCard, ModelTask, SeriesInputSpec, TrainingSummary

ARCHITECTURES = {
    "sensor_autoencoder": "gru_autoencoder",
    "sensor_forecast": "gru_forecaster",
    "sensor_rul": "gru_rul_regressor",
}


@dataclass(frozen=True)
class SensorEntry:
    """A trained sensor model: its folder, card and module."""

    folder: Path
    card: ModelCard
    module: nn.Module


def normalise(values: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Values scaled by the card's statistics."""
    return (values - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)


def _series_spec(
    series: list[Series], window: int, stride: int, mean: list[float], std: list[float]
) -> SeriesInputSpec:
    return SeriesInputSpec(
        channels=series[0].channels,
        window=window,
        stride=stride,
        sample_period_s=series[0].period_s,
        mean=mean,
        std=std,
    )


def score_windows(module: nn.Module, batch: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Per-channel scores (N, C) of ``batch`` in chunks."""
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
    task: ModelTask = "sensor_autoencoder",
    window: int = 64,
    stride: int = 16,
    train_fraction: float = 0.15,
    epochs: int = 30,
    hidden: int = 64,
    quantile: float = 0.995,
    seed: int = 0,
    rul_alert_h: float = 24.0,
) -> SensorEntry:
    """Train on the first ``train_fraction`` of each series (taken as normal operation).

    ``sensor_rul`` instead takes every series as a run to failure (the failure at its last
    sample) and learns the hours left at each window's end; its card's ``low_rul``
    threshold is ``rul_alert_h``.
    """
    if task not in ARCHITECTURES:
        raise ValueError(f"train_sensor_model trains {', '.join(ARCHITECTURES)}, not {task!r}")
    torch.manual_seed(seed)
    series = history if isinstance(history, list) else load_history(history)
    if task == "sensor_rul":
        return _train_rul(
            series,
            str(history) if not isinstance(history, list) else "in-memory",
            registry,
            name,
            version,
            window,
            stride,
            epochs,
            hidden,
            rul_alert_h,
        )
    heads = [s.values[: max(window + 1, int(len(s.values) * train_fraction))] for s in series]
    stacked = np.concatenate(heads)
    mean = stacked.mean(axis=0).tolist()
    std = np.maximum(stacked.std(axis=0), 1e-6).tolist()
    train = torch.cat([windows(normalise(h, mean, std), window, max(1, stride // 4)) for h in heads])
    model = build_sensor_model(task, len(series[0].channels), hidden)
    _fit(model, lambda index: model(train[index]).mean(), len(train), epochs, f"training {name} ({task})")
    scores = score_windows(model, train).mean(dim=1)
    threshold = float(torch.quantile(scores, quantile))
    card = ModelCard(
        name=name,
        version=version,
        task=task,
        architecture=ARCHITECTURES[task],
        input=_series_spec(series, window, stride, mean, std),
        labels=series[0].channels,
        thresholds={"anomaly": threshold},
        training=TrainingSummary(
            dataset=str(history) if not isinstance(history, list) else "in-memory",
            samples=len(train),
            epochs=epochs,
            metrics={"train_score_median": float(scores.median()), "threshold_quantile": quantile},
            notes=f"first {train_fraction:.0%} of each series taken as normal",
        ),
        created_at=datetime.now(UTC),
    )
    return SensorEntry(save_model(registry, card, model), card, model)


def _fit(
    model: nn.Module, loss: Callable[[torch.Tensor], torch.Tensor], count: int, epochs: int, label: str
) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in track(range(epochs), description=label):
        for index in torch.randperm(count).split(64):
            optimiser.zero_grad()
            loss(index).backward()
            optimiser.step()
    model.eval()


def _train_rul(
    series: list[Series],
    dataset: str,
    registry: str | Path,
    name: str,
    version: str,
    window: int,
    stride: int,
    epochs: int,
    hidden: int,
    rul_alert_h: float,
) -> SensorEntry:
    stacked = np.concatenate([s.values for s in series])
    mean = stacked.mean(axis=0).tolist()
    std = np.maximum(stacked.std(axis=0), 1e-6).tolist()
    step = max(1, stride // 4)
    inputs, targets = [], []
    for s in series:
        inputs.append(windows(normalise(s.values, mean, std), window, step))
        ends = window_end_indices(len(s.values), window, step)
        targets.append(torch.from_numpy((s.times[-1] - s.times[ends]) / 3600).float())
    train, life = torch.cat(inputs), torch.cat(targets)
    model = build_sensor_model("sensor_rul", len(series[0].channels), hidden)
    assert isinstance(model, GruRulRegressor)
    scale = float(life.max().clamp(min=1e-6))
    model.scale.fill_(scale)
    _fit(
        model,
        lambda index: (model.relative(train[index]).squeeze(1) - life[index] / scale).pow(2).mean(),
        len(train),
        epochs,
        f"training {name} (sensor_rul)",
    )
    with torch.inference_mode():
        predicted = torch.cat([model(train[k : k + 512]) for k in range(0, len(train), 512)]).squeeze(1)
    card = ModelCard(
        name=name,
        version=version,
        task="sensor_rul",
        architecture=ARCHITECTURES["sensor_rul"],
        input=_series_spec(series, window, stride, mean, std),
        labels=["rul"],
        thresholds={"low_rul": rul_alert_h},
        training=TrainingSummary(
            dataset=dataset,
            samples=len(train),
            epochs=epochs,
            metrics={"train_mae_h": float((predicted - life).abs().mean()), "max_life_h": scale},
            notes=f"{len(series)} runs to failure; life in hours",
        ),
        created_at=datetime.now(UTC),
    )
    return SensorEntry(save_model(registry, card, model), card, model)
