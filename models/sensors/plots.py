"""PNG plots of sensor evaluations: scores against the threshold over time with the labelled
anomalies shaded (point-wise), and estimated against true life (remaining useful life)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from models.plotting import plt, save_figure
from models.sensors.life import MODEL as LIFE_MODEL
from models.sensors.life import RIDGE, LifeResult
from models.sensors.pointwise import MODEL, PCA, PointwiseResult, SeriesOutcome


def _shade(axes: plt.Axes, times: np.ndarray, labelled: np.ndarray) -> None:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labelled.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        axes.axvspan(times[start], times[stop - 1], color="tab:red", alpha=0.15, lw=0)


def series_plot(outcome: SeriesOutcome, label: str, path: Path) -> Path:
    """Model score and threshold (top), baseline score and threshold (bottom), over sample
    index; labelled anomalies shaded, the normal period's end marked, flags drawn under."""
    series = outcome.series
    times = series.times - series.times[0]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
    labelled = series.labels[label] != 0
    lines = (
        (top, outcome.end_s - series.times[0], outcome.scores, outcome.threshold, "model score", MODEL),
        (bottom, times, outcome.baseline_scores, outcome.baseline_threshold, "PCA T²+Q", PCA),
    )
    for axes, x, y, threshold, name, key in lines:
        _shade(axes, times, labelled)
        axes.plot(x, y, lw=0.8, label=name)
        axes.axhline(threshold, color="black", ls="--", lw=0.8, label="threshold")
        axes.axvline(times[outcome.start - 1], color="grey", lw=0.8)
        axes.set_yscale("symlog", linthresh=max(threshold, 1e-6))
        flags = outcome.flags[key]
        axes.fill_between(
            times[outcome.start :],
            0,
            threshold * 0.05,
            where=flags,
            color="tab:orange",
            step="post",
            label="flagged",
        )
        axes.legend(loc="upper left", fontsize=7)
    top.set_title(f"{series.asset}: red = labelled '{label}', grey line = end of the normal period")
    bottom.set_xlabel("seconds (or time units) from the first sample")
    return save_figure(figure, path)


def pointwise_plots(result: PointwiseResult, folder: Path) -> list[Path]:
    """One ``series_plot`` per series."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        series_plot(outcome, result.label, folder / f"pointwise-{_safe(outcome.series.asset)}.png")
        for outcome in result.outcomes
    ]


def life_plot(result: LifeResult, folder: Path) -> Path:
    """Estimated against true life at every cut, model and ridge baseline."""
    folder.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 6))
    top = float(max(result.truth.max(), *(s.estimates.max() for s in result.scores.values())))
    axes.plot([0, top], [0, top], color="black", lw=0.8)
    for name in (RIDGE, LIFE_MODEL):
        score = result.scores[name]
        axes.scatter(result.truth, score.estimates, s=10, alpha=0.6, label=f"{name}: RMSE {score.rmse:.1f}")
    axes.set_xlabel("true life left (capped)")
    axes.set_ylabel("estimated life left")
    axes.legend(fontsize=8)
    return save_figure(figure, folder / "life.png")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
