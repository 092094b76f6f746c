"""Vibration spectra: a 1-D convolutional autoencoder, how it is trained, and its registry builder.

Input: an item of shape (axes, bins), magnitudes; the model sees ``log1p`` of them,
normalised per axis with the training spectra's mean and deviation. ``forward`` gives each
axis's mean squared reconstruction error (N, axes); their mean is the anomaly score, and the
card's threshold is the ``quantile`` of held-out healthy spectra's scores times ``margin``.

``synthetic_spectra`` makes the healthy and faulty machines of tests and the demo: shaft
harmonics over a noise floor; a bearing fault adds peaks at a non-integer multiple of the
shaft frequency and lifts the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.engine import static_graph
from models.registry import register_builder, save_model
from schemas.model_card import ModelCard, TensorInputSpec, ThresholdRule, TrainingSummary

TASK = "spectrum_autoencoder"
ARCHITECTURE = "conv1d_autoencoder"


class SpectrumAutoencoder(nn.Module):
    """Conv1d encoder (two stride-2 stages) and transposed-conv decoder over (N, axes, bins)."""

    def __init__(self, axes: int, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv1d(axes, width, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(width, 2 * width, 5, stride=2, padding=2),
            nn.GELU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(2 * width, width, 4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose1d(width, axes, 4, stride=2, padding=1),
        )

    def reconstruct(self, spectra: torch.Tensor) -> torch.Tensor:
        """The reconstruction of normalised ``spectra`` (N, axes, bins); bins divisible by 4."""
        return self.decoder(self.encoder(spectra))

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        return (self.reconstruct(spectra) - spectra).pow(2).mean(dim=2)


def normalised(spectra: np.ndarray, spec: TensorInputSpec) -> torch.Tensor:
    """Raw magnitudes (N, axes, bins) as the model's input."""
    values = np.log1p(spectra) if spec.transform == "log1p" else spectra
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None]
    return torch.from_numpy(((values - mean) / std).astype(np.float32))


def spectrum_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """The autoencoder, its width read off its weights."""
    assert isinstance(card.input, TensorInputSpec)
    model = SpectrumAutoencoder(card.input.shape[0], width=state["encoder.0.weight"].shape[0])
    model.load_state_dict(state)
    return static_graph(model)


register_builder(TASK, spectrum_module)


@dataclass(frozen=True)
class SpectrumTraining:
    """How a spectrum autoencoder is trained and calibrated."""

    width: int = 16
    epochs: int = 40
    batch: int = 64
    learning_rate: float = 3e-3
    calibration_fraction: float = 0.25
    quantile: float = 0.99
    margin: float = 1.5
    seed: int = 0


def train_spectrum_autoencoder(
    spectra: np.ndarray,
    axes: Sequence[str],
    registry: str | Path,
    name: str,
    version: str = "1",
    config: SpectrumTraining = SpectrumTraining(),
    dataset: str = "healthy spectra",
) -> Path:
    """Fit on healthy ``spectra`` (N, axes, bins), calibrate the threshold on a held-out share,
    and save the entry; returns its folder."""
    count, channels, bins = spectra.shape
    if bins % 4:
        raise ValueError(f"spectra need a number of bins divisible by 4; got {bins}")
    generator = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    order = generator.permutation(count)
    held = max(1, int(count * config.calibration_fraction))
    calibration, training = spectra[order[:held]], spectra[order[held:]]
    logged = np.log1p(training)
    mean = logged.mean(axis=(0, 2))
    std = np.maximum(logged.std(axis=(0, 2)), 1e-3)
    spec = TensorInputSpec(
        shape=[channels, bins],
        names=list(axes),
        mean=mean.tolist(),
        std=std.tolist(),
        transform="log1p",
    )
    model = SpectrumAutoencoder(channels, config.width)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    inputs = normalised(training, spec)
    model.train()
    for _ in range(config.epochs):
        for batch in inputs[torch.randperm(len(inputs))].split(config.batch):
            optimiser.zero_grad()
            loss = (model.reconstruct(batch) - batch).pow(2).mean()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        scores = model(normalised(calibration, spec)).mean(dim=1).numpy()
    threshold = float(np.quantile(scores, config.quantile) * config.margin)
    card = ModelCard(
        name=name,
        version=version,
        task=TASK,
        architecture=ARCHITECTURE,
        input=spec,
        labels=["anomaly"],
        thresholds={"anomaly": threshold},
        threshold_rule=ThresholdRule(
            quantile=config.quantile,
            margin=config.margin,
            calibration=f"{held} held-out healthy spectra, never trained on",
            calibration_windows=held,
        ),
        training=TrainingSummary(
            dataset=dataset,
            samples=len(training),
            epochs=config.epochs,
            metrics={
                "final_loss": float(loss.detach()),
                "calibration_score_median": float(np.median(scores)),
            },
        ),
        created_at=datetime.now(UTC),
    )
    return save_model(registry, card, model)


def synthetic_spectra(
    count: int, axes: int = 3, bins: int = 128, fault: float = 0.0, seed: int = 0
) -> np.ndarray:
    """``count`` spectra (count, axes, bins) of a machine whose bearing fault has grown to
    ``fault`` (0 healthy, 1 a clear defect); shaft speed and levels vary from one to the next."""
    generator = np.random.default_rng(seed)
    frequency = np.arange(bins, dtype=np.float64)
    spectra = np.empty((count, axes, bins), dtype=np.float32)
    for item in range(count):
        shaft = generator.uniform(7.5, 8.5)  # bins per shaft order
        for axis in range(axes):
            level = generator.uniform(0.8, 1.2) * (1.0 + 0.3 * axis)
            floor = 0.05 * (1 + fault) * generator.gamma(4.0, 0.25, size=bins)
            peaks = sum(
                level / order * np.exp(-0.5 * ((frequency - order * shaft) / 0.8) ** 2)
                for order in (1, 2, 3, 4)
            )
            defect = sum(
                fault * level * 0.6 * np.exp(-0.5 * ((frequency - k * 3.57 * shaft) / 0.8) ** 2)
                for k in (1, 2, 3)
            )
            spectra[item, axis] = floor + peaks + defect
    return spectra
