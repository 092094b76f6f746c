"""Recurrent models over sensor windows (batch, time, channels), normalised inputs.

- ``GruAutoencoder``: reconstructs the window; score = mean squared reconstruction error.
- ``GruForecaster``: predicts the next ``horizon`` samples from the window before them.
- ``GruRulRegressor``: remaining useful life (in the units it was trained on) of the asset.
Every model returns per-channel contributions so alerts can say which channels mattered.
"""

from __future__ import annotations

import torch
from torch import nn


class GruAutoencoder(nn.Module):
    """Sequence-to-sequence GRU autoencoder; ``forward`` gives per-channel errors (N, C)."""

    def __init__(self, channels: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.GRU(channels, hidden, layers, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, channels)

    def reconstruct(self, windows: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``windows`` (N, T, C)."""
        _, state = self.encoder(windows)
        code = state[-1].unsqueeze(1).expand(-1, windows.shape[1], -1)
        decoded, _ = self.decoder(code.contiguous(), state)
        return self.out(decoded).flip(1)  # decoding in reverse order eases the first steps

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return (self.reconstruct(windows) - windows).pow(2).mean(dim=1)


class GruForecaster(nn.Module):
    """Forecasts the last ``horizon`` samples of a window from the samples before them."""

    def __init__(self, channels: int, hidden: int = 64, layers: int = 2, horizon: int = 4) -> None:
        super().__init__()
        self.horizon = horizon
        self.gru = nn.GRU(channels, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, channels * horizon)

    def forecast(self, history: torch.Tensor) -> torch.Tensor:
        """The next ``horizon`` samples (N, horizon, C) after ``history`` (N, T, C)."""
        _, state = self.gru(history)
        return self.out(state[-1]).reshape(history.shape[0], self.horizon, history.shape[2])

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        history, future = windows[:, : -self.horizon], windows[:, -self.horizon :]
        return (self.forecast(history) - future).pow(2).mean(dim=1)


class GruRulRegressor(nn.Module):
    """Remaining useful life from a window; ``forward`` gives (N, 1), never negative.

    The network learns life / ``scale``; ``scale`` (a saved buffer) brings it back to the
    units of training, hours.
    """

    def __init__(self, channels: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, 1)
        self.scale: torch.Tensor
        self.register_buffer("scale", torch.ones(()))

    def relative(self, windows: torch.Tensor) -> torch.Tensor:
        """Life as a fraction of ``scale`` (what training fits)."""
        _, state = self.gru(windows)
        return nn.functional.softplus(self.out(state[-1]))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.relative(windows) * self.scale


def build_sensor_model(task: str, channels: int, hidden: int = 64, layers: int = 2) -> nn.Module:
    """An untrained model for ``task`` (sensor_autoencoder, sensor_forecast or sensor_rul)."""
    if task == "sensor_autoencoder":
        return GruAutoencoder(channels, hidden, layers)
    if task == "sensor_forecast":
        return GruForecaster(channels, hidden, layers)
    if task == "sensor_rul":
        return GruRulRegressor(channels, hidden, layers)
    raise ValueError(f"unknown sensor task {task!r}")
