"""Synthetic plant machines for tests, the demo and benchmarks: normal operation, and drifts
towards failure (hotter, rougher) that a repair ends."""

from __future__ import annotations

import numpy as np

from models.sensors.series import Series

MACHINE_CHANNELS = ["temp_c", "vibration_mm_s"]


def fault_profile(samples: int, start: int, ramp: int, repaired_at: int | None = None) -> np.ndarray:
    """Fault severity per sample: 0 before ``start``, rising to 1 over ``ramp``, 0 again after a repair."""
    severity = np.clip((np.arange(samples) - start) / max(ramp, 1), 0.0, 1.0)
    if repaired_at is not None:
        severity[repaired_at:] = 0.0
    return severity


def machine_values(samples: int, seed: int, fault: np.ndarray | None = None, start: int = 0) -> np.ndarray:
    """(samples, 2) temperature and vibration of one machine, from sample index ``start``."""
    rng = np.random.default_rng(seed)
    k = np.arange(start, start + samples)
    phase = rng.uniform(0, 2 * np.pi)
    severity = np.zeros(samples) if fault is None else fault
    temp = 60 + 3 * np.sin(2 * np.pi * k / 120 + phase) + rng.normal(0, 0.3, samples) + 12 * severity
    vibration = (
        2
        + 0.3 * np.sin(2 * np.pi * k / 30 + phase)
        + rng.normal(0, 0.05, samples)
        + severity * (2.5 + rng.normal(0, 0.8, samples))
    )
    return np.stack([temp, vibration], axis=1).astype(np.float32)


def normal_machines(assets: int, samples: int, period_s: float = 1.0, seed: int = 0) -> list[Series]:
    """Histories of healthy machines (for training anomaly models)."""
    times = np.arange(samples) * period_s
    return [
        Series(f"machine-{i}", list(MACHINE_CHANNELS), times, machine_values(samples, seed + i))
        for i in range(assets)
    ]


def runs_to_failure(assets: int, samples: int, period_s: float = 60.0, seed: int = 0) -> list[Series]:
    """Machines that degrade over their last half and fail at their last sample (for RUL training)."""
    times = np.arange(samples) * period_s
    fault = fault_profile(samples, samples // 2, samples // 2)
    return [
        Series(f"machine-{i}", list(MACHINE_CHANNELS), times, machine_values(samples, seed + i, fault))
        for i in range(assets)
    ]
