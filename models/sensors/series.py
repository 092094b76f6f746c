"""Sensor history files: loading (CSV, ``;``- or whitespace-separated text, Parquet) into
per-asset series, with label columns kept apart from the channels.

Column names become channel names by the one rule messages and cards share
(``schemas.common.channel_name``), here, before any training: ``Volume Flow RateRMS`` is the
channel ``Volume_Flow_RateRMS`` everywhere. The time column is ISO 8601 (naive means UTC) or a
number (seconds, or a count such as cycles: one unit per sample).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from schemas.common import channel_names

log = logging.getLogger(__name__)

Separator = Literal[",", ";", "tab", "whitespace"]


@dataclass(frozen=True)
class Series:
    """One asset's history: times (s since epoch, or counts), values (T, C), labels by name."""

    asset: str
    channels: list[str]
    times: np.ndarray
    values: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    """The file it was read from (for messages)."""

    @property
    def repeats(self) -> np.ndarray:
        """Which samples repeat the time of the one before: the service refuses them as
        duplicates, so the protocols score none of them."""
        return np.concatenate([[False], np.diff(self.times) == 0])

    @property
    def period_s(self) -> float:
        """The (median) sampling period."""
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 1.0

    def head(self, rows: int) -> Series:
        """The first ``rows`` samples."""
        return Series(
            self.asset,
            self.channels,
            self.times[:rows],
            self.values[:rows],
            {k: v[:rows] for k, v in self.labels.items()},
            self.source,
        )

    def select(self, channels: list[str]) -> Series:
        """The same history restricted to ``channels``, in that order."""
        if missing := [c for c in channels if c not in self.channels]:
            raise ValueError(
                f"{self.source or self.asset}: asset {self.asset} has no channel {', '.join(missing)} "
                f"(it has {', '.join(self.channels)})"
            )
        index = [self.channels.index(c) for c in channels]
        return Series(self.asset, list(channels), self.times, self.values[:, index], self.labels, self.source)


@dataclass(frozen=True)
class TableFormat:
    """How a history file is laid out."""

    separator: Separator = ","
    time_column: str = "timestamp"
    asset_column: str = "asset"
    """Absent from the file: the whole file is one asset, named after the file."""
    label_columns: tuple[str, ...] = ()
    """Columns that are ground truth (``anomaly``, ``changepoint``), never channels."""
    columns: tuple[str, ...] = ()
    """Names for a file without a header row; empty: the first row is the header."""
    drop_columns: tuple[str, ...] = ()
    """Columns that are neither channels nor labels."""


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (naive: UTC), or the number itself."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # history files without a zone are taken as UTC
    return stamp.timestamp()


def _rows(path: Path, layout: TableFormat) -> tuple[list[str], list[list[str]]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # optional: only for Parquet files

        table = pq.read_table(path).to_pydict()
        header = list(table)
        return header, [[str(v) for v in row] for row in zip(*table.values(), strict=True)]
    with open(path, newline="") as handle:
        if layout.separator == "whitespace":
            rows = [line.split() for line in handle if line.strip()]
        else:
            delimiter = "\t" if layout.separator == "tab" else layout.separator
            rows = [row for row in csv.reader(handle, delimiter=delimiter) if row]
    if layout.columns:
        return list(layout.columns), rows
    return [name.strip() for name in rows[0]], rows[1:]


def load_history(path: str | Path, layout: TableFormat | None = None) -> list[Series]:
    """Series per asset of one history file, sorted by time; see ``TableFormat``."""
    path, layout = Path(path), layout or TableFormat()
    header, rows = _rows(path, layout)
    if layout.time_column not in header:
        raise ValueError(f"{path}: no time column {layout.time_column!r} among {', '.join(header)}")
    missing = [c for c in layout.label_columns if c not in header]
    if missing:
        raise ValueError(f"{path}: label columns {', '.join(missing)} are not in the file")
    aside = {layout.time_column, layout.asset_column, *layout.label_columns, *layout.drop_columns}
    columns = [c for c in header if c not in aside]
    if not columns:
        raise ValueError(f"{path}: no channel columns left besides {', '.join(sorted(aside & set(header)))}")
    names = channel_names(columns)
    position = {name: k for k, name in enumerate(header)}
    by_asset: dict[str, list[list[str]]] = {}
    asset_at = position.get(layout.asset_column)
    for line, row in enumerate(rows, start=2 if not layout.columns else 1):
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        by_asset.setdefault(row[asset_at] if asset_at is not None else path.stem, []).append(row)
    result = []
    for asset, items in by_asset.items():
        times = np.array([parse_time(r[position[layout.time_column]]) for r in items])
        order = np.argsort(times, kind="stable")
        try:
            values = np.array([[float(r[position[c]]) for c in columns] for r in items], dtype=np.float32)
            labels = {
                c: np.array([float(r[position[c]]) for r in items], dtype=np.float32)[order]
                for c in layout.label_columns
            }
        except ValueError as error:
            raise ValueError(f"{path}: asset {asset}: a value is not a number ({error})") from None
        if duplicates := int(np.count_nonzero(np.diff(times[order]) == 0)):
            log.warning(
                "%s: asset %s: %d rows repeat the timestamp of the row before; windows keep the "
                "first of each, as the service does, and the protocols score only those",
                path,
                asset,
                duplicates,
            )
        result.append(Series(asset, names, times[order], values[order], labels, str(path)))
    return result


def normal_rows(series: Series, rows: int | None, span_s: float | None, fraction: float) -> int:
    """How many leading samples of ``series`` are the normal period: ``rows``, else those within
    ``span_s`` of the first sample, else the leading ``fraction``."""
    if rows is not None:
        return min(rows, len(series.times))
    if span_s is not None:
        return int(np.searchsorted(series.times, series.times[0] + span_s, side="right"))
    return int(len(series.times) * fraction)
