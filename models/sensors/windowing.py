"""Offline windows through the streaming window code: a history replayed sample by sample into
``AssetWindow``, the class the sensor stage serves with, so training, offline scoring and
evaluation see the very windows the service would (same event-time grid, gap filling,
alignment and padding)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from models.sensors.series import Series
from models.sensors.windows import AssetWindow, WindowSpec
from schemas.model_card import SeriesInputSpec


def window_spec(
    spec: SeriesInputSpec, lateness_s: float = 0.0, stride: int | None = None, phase: int = 0
) -> WindowSpec:
    """The window state's spec for a card's input (``stride`` overrides the served one)."""
    return WindowSpec(
        tuple(spec.channels),
        spec.window,
        stride or spec.stride,
        spec.sample_period_s,
        lateness_s,
        spec.gap_policy,
        spec.pad,
        phase,
    )


def stagger(asset_id: str, stride: int) -> int:
    """The asset's window phase: a stable hash of its id (the same in every process and after
    every restart, so a rebuilt state scores the same windows), spread evenly over ``stride``."""
    return zlib.crc32(asset_id.encode()) % stride


@dataclass(frozen=True)
class Windowed:
    """Windows of one series: raw values (N, window, C) and the event time of each end."""

    values: np.ndarray
    end_s: np.ndarray

    def __len__(self) -> int:
        return len(self.end_s)


def replay(series: Series, spec: WindowSpec) -> Windowed:
    """The windows the service would score for ``series`` (channels in ``spec`` order)."""
    order = [series.channels.index(c) for c in spec.channels]
    state = AssetWindow(spec)
    ready = []
    for time_s, values in zip(series.times, series.values[:, order], strict=True):
        ready.extend(state.add(float(time_s), values).ready)
    if not ready:
        return Windowed(np.empty((0, spec.window, len(spec.channels)), np.float32), np.empty(0))
    return Windowed(np.stack([w.values for w in ready]), np.array([w.end_s for w in ready]))


def rows_at(times: np.ndarray, end_s: np.ndarray) -> np.ndarray:
    """For each time, the index of the last window ending at or before it (-1: none yet)."""
    return np.searchsorted(end_s, times, side="right") - 1
