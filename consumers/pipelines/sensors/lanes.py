"""One sensor model's serving lane: engine, micro-batcher, and turning outputs into scores.

What an output means is ``models.sensors.scoring.window_scores`` (offline scoring uses it
too); the explanation of an anomaly is each channel's share of the error, that of a low
life estimate each channel's share of the life its values take off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from consumers.pipelines.batcher import Deliver
from consumers.pipelines.lane import ModelLane
from consumers.pipelines.sensors.intake import model_value_limits
from consumers.runtime.observer import RuntimeObserver
from models.alert_policy import AlertShape
from models.registry import LoadedModel
from models.sensors.scoring import window_scores
from schemas.model_card import SeriesInputSpec
from schemas.settings import BatchingSettings, SensorSettings

T = TypeVar("T")


@dataclass(frozen=True)
class WindowScores:
    """What one window scored: scores by label, the label that matters, and the explanation."""

    scores: dict[str, float]
    label: str
    explanation: dict[str, float]
    unit: str = ""
    """What a life estimate is counted in (cards from before life units: hours)."""


SENSOR_ALERTS = AlertShape()
"""The sensor default: two of three windows past a card threshold (offline evaluation replays it)."""


class SensorLane(ModelLane[T]):
    """Serves one registry model to windows of shape (window, channels)."""

    def __init__(
        self,
        model: LoadedModel,
        settings: SensorSettings,
        deliver: Deliver[T, torch.Tensor],
        observer: RuntimeObserver | None = None,
        batching: BatchingSettings | None = None,
    ) -> None:
        if not isinstance(model.card.input, SeriesInputSpec):
            raise ValueError(f"model {model.card.name} does not take sensor windows")
        self.spec: SeriesInputSpec = model.card.input
        self.channels = tuple(self.spec.channels)
        self._mean = np.asarray(self.spec.mean, dtype=np.float32)
        self._std = np.asarray(self.spec.std, dtype=np.float32)
        self.value_limits = model_value_limits(self.spec.mean, self.spec.std)
        """Per channel, the largest magnitude a value may have (``intake.check_model_range``)."""
        example = torch.zeros(self.spec.window, len(self.channels))
        # a life score reaches 1.0 as the life left falls to the card's threshold (``window_scores``)
        thresholds = {"low_rul": 1.0} if "low_rul" in model.card.thresholds else None
        super().__init__(
            "sensors",
            model,
            settings,
            deliver,
            observer or RuntimeObserver(),
            example,
            SENSOR_ALERTS,
            thresholds,
            batching=batching,
        )

    def normalised(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Windows stacked (N, window, channels) and normalised by the card's mean and std."""
        return (np.stack(windows) - self._mean) / self._std

    def tensor(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised windows stacked into a host batch (N, window, channels)."""
        return torch.from_numpy(self.normalised(windows))

    def prepare(self, batch: Sequence[Any]) -> torch.Tensor:
        """The batch's windows, normalised, on the device."""
        return self.engine.prepare(self.tensor([item.window.values for item in batch]))

    def score_now(self, windows: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Outputs for ``windows`` at once, in this thread (state rebuilds)."""
        return self.run_now(self.tensor(windows)) if windows else []

    def scores(self, output: torch.Tensor) -> WindowScores:
        """The scores of one window's model output (``window_scores``, as offline scoring)."""
        values = output.numpy().reshape(1, -1)  # numpy's reshape: torch's gives the GIL up
        label, by_label = window_scores(self.model.card, values)
        scores = {name: float(score[0]) for name, score in by_label.items()}
        if label != "anomaly":
            life = self.model.card.life
            return WindowScores(scores, label, {}, life.unit if life else "hours")
        total = float(values.sum())
        share = {
            c: float(v) / total if total > 0 else 0.0 for c, v in zip(self.channels, values[0], strict=True)
        }
        return WindowScores(scores, label, share)

    def explain(self, window: np.ndarray) -> dict[str, float]:
        """For life estimates: each channel's share of the life its values take off, found by
        holding that channel at its training mean and scoring again."""
        count = len(self.channels)
        variants = np.repeat(self.normalised([window]), count + 1, axis=0)
        for channel in range(count):
            variants[channel + 1, :, channel] = 0.0  # the training mean, in normalised units
        lives = self.engine.run(self.engine.prepare(torch.from_numpy(variants)))[:, 0].tolist()
        taken = [max(0.0, life - lives[0]) for life in lives[1:]]
        total = sum(taken)
        return {c: (t / total if total > 0 else 0.0) for c, t in zip(self.channels, taken, strict=True)}
