"""Recurrent models over sensor windows (batch, time, channels), normalised inputs.

- ``GruAutoencoder``: reconstructs the window; score = mean squared reconstruction error.
- ``GruForecaster``: forecasts each sample from those before it; score = the recent errors.
- ``GruRulRegressor``: remaining useful life (in the unit it was trained on) of the asset.
Every model returns per-channel contributions so alerts can say which channels mattered.
"""

from __future__ import annotations

import torch
from torch import nn


class GruAutoencoder(nn.Module):
    """Sequence-to-sequence GRU autoencoder; ``forward`` gives the per-channel mean squared
    reconstruction error over the window's last ``score_steps`` samples (N, C).

    Training reconstructs whole windows; scoring the recent samples only means a fault is
    seen as soon as it starts and forgotten as soon as it ends, not a window later.
    ``score_steps`` is a saved buffer (entries made before it existed score whole windows).
    """

    def __init__(
        self, channels: int, hidden: int = 32, layers: int = 1, score_steps: int = 1_000_000
    ) -> None:
        super().__init__()
        self.encoder = nn.GRU(channels, hidden, layers, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, channels)
        self.score_steps: torch.Tensor
        self.register_buffer("score_steps", torch.tensor(score_steps))

    def reconstruct(self, windows: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``windows`` (N, T, C)."""
        _, state = self.encoder(windows)
        code = state[-1].unsqueeze(1).expand(-1, windows.shape[1], -1)
        decoded, _ = self.decoder(code.contiguous(), state)
        return self.out(decoded).flip(1)  # decoding in reverse order eases the first steps

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        errors = (self.reconstruct(windows) - windows).pow(2)
        return errors[:, -int(self.score_steps) :].mean(dim=1)

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Training loss: the mean reconstruction error of whole windows."""
        return (self.reconstruct(windows) - windows).pow(2).mean()


class GruForecaster(nn.Module):
    """Forecasts each sample from the ones before it; ``forward`` gives the per-channel mean
    squared one-step error over the window's last ``score_steps`` samples (N, C).

    Scoring the recent steps rather than one sample smooths the score without any state
    outside the window; ``score_steps`` is a saved buffer, so the served model scores as it
    was calibrated.
    """

    def __init__(self, channels: int, hidden: int = 32, layers: int = 1, score_steps: int = 16) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, channels)
        self.score_steps: torch.Tensor
        self.register_buffer("score_steps", torch.tensor(score_steps))

    def step_errors(self, windows: torch.Tensor) -> torch.Tensor:
        """Squared error of every one-step forecast (N, T - 1, C)."""
        states, _ = self.gru(windows[:, :-1])
        return (self.out(states) - windows[:, 1:]).pow(2)

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Training loss: every forecast after a short warm-up of the recurrent state."""
        errors = self.step_errors(windows)
        return errors[:, min(4, errors.shape[1] - 1) :].mean()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.step_errors(windows)[:, -int(self.score_steps) :].mean(dim=1)


class GruRulRegressor(nn.Module):
    """Remaining useful life from a window; ``forward`` gives (N, 1), never negative.

    The network learns life / ``scale``; ``scale`` (a saved buffer, the cap of the target or
    the longest life seen) brings it back to the unit of training.
    """

    def __init__(self, channels: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, layers, batch_first=True, dropout=0.1 if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, 1)
        self.scale: torch.Tensor
        self.register_buffer("scale", torch.ones(()))

    def relative(self, windows: torch.Tensor) -> torch.Tensor:
        """Life as a fraction of ``scale`` (what training fits)."""
        _, state = self.gru(windows)
        return nn.functional.softplus(self.out(state[-1]))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.relative(windows) * self.scale


def build_sensor_model(task: str, channels: int, hidden: int = 32, layers: int = 1) -> nn.Module:
    """An untrained model for ``task`` (sensor_autoencoder, sensor_forecast or sensor_rul)."""
    if task == "sensor_autoencoder":
        return GruAutoencoder(channels, hidden, layers)
    if task == "sensor_forecast":
        return GruForecaster(channels, hidden, layers)
    if task == "sensor_rul":
        return GruRulRegressor(channels, hidden, layers)
    raise ValueError(f"unknown sensor task {task!r}")
