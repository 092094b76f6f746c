"""Sensor history: loading (CSV or Parquet: timestamp, optional asset, channels), regular
resampling, normalisation and windowing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Series:
    """One asset's regularly sampled history: times (s since epoch) and values (T, C)."""

    asset: str
    channels: list[str]
    times: np.ndarray
    values: np.ndarray

    @property
    def period_s(self) -> float:
        """The (median) sampling period."""
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 1.0


def _timestamp(text: str) -> float:
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        from datetime import UTC

        stamp = stamp.replace(tzinfo=UTC)  # history files without a zone are taken as UTC
    return stamp.timestamp()


def load_history(path: str | Path) -> list[Series]:
    """Series per asset from a CSV or Parquet file with ``timestamp``, optional ``asset``, channels."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # optional: only for Parquet files

        table = pq.read_table(path).to_pydict()
        columns = list(table)
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*table.values(), strict=True)]
        rows = [{k: str(v) for k, v in row.items()} for row in rows]
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    if not rows or "timestamp" not in rows[0]:
        raise ValueError(f"{path}: needs a header with a 'timestamp' column")
    channels = [c for c in rows[0] if c not in ("timestamp", "asset")]
    by_asset: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_asset.setdefault(row.get("asset") or path.stem, []).append(row)
    result = []
    for asset, items in by_asset.items():
        items.sort(key=lambda r: r["timestamp"])
        times = np.array([_timestamp(r["timestamp"]) for r in items])
        values = np.array([[float(r[c]) for c in channels] for r in items], dtype=np.float32)
        result.append(Series(asset, channels, times, values))
    return result


def windows(values: np.ndarray, window: int, stride: int) -> torch.Tensor:
    """Sliding windows (N, window, C) of ``values`` (T, C), one every ``stride`` samples."""
    if len(values) < window:
        return torch.empty(0, window, values.shape[1])
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return tensor.unfold(0, window, stride).permute(0, 2, 1).contiguous()


def window_end_indices(length: int, window: int, stride: int) -> np.ndarray:
    """Index of the last sample of each window that ``windows`` makes."""
    return np.arange(window - 1, length, stride)[: max(0, (length - window) // stride + 1)]
