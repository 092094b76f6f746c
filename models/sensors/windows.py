"""Per-asset sensor windows: bounded ring buffers on a regular event-time grid.

Events may arrive out of order by up to ``lateness_s``: they wait in a small reorder buffer
and enter the ring in event-time order once the watermark (the newest event time minus the
lateness) has passed them. An event older than the watermark is *late*, and the caller is
told, never silently dropped; an event at a time already held is a *duplicate*. A gap
longer than one sampling period is filled on the grid: linear interpolation (``resample``)
or zeros with the filled samples counted (``mask``). A copy of the full window is ready for
scoring every ``stride`` samples, at the samples whose grid index (event time / period)
+ 1 + ``phase`` is a multiple of ``stride``: aligned to event time, not to the first sample
seen, so a window state rebuilt from part of the history scores the same windows as one that
saw it all. The service gives each asset a phase of its own (``windowing.stagger``): a fleet
whose sensors all report on the same tick would otherwise complete every window at once.
With ``pad="edge"`` windows are ready from an asset's first sample on, the history they lack
filled with that first sample (models trained on runs shorter than a window).

Training, offline scoring and evaluation build their windows with this same class
(``models.sensors.windowing``), so what a model learns from is what it is served.
"""

from __future__ import annotations

import base64
import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

MAX_GAP_FILL = 10_000
"""A longer gap restarts the window instead of filling it (the asset was off)."""

VECTOR_MIN = 16
"""Runs of at least this many events on the grid go into the ring in one numpy step."""


@dataclass(frozen=True)
class WindowSpec:
    """Shape and timing of the windows of one kind of asset."""

    channels: tuple[str, ...]
    window: int
    stride: int
    period_s: float
    lateness_s: float = 0.0
    gap_policy: Literal["resample", "mask"] = "resample"
    pad: Literal["none", "edge"] = "none"
    phase: int = 0
    """Windows fall due this many grid steps earlier than at phase 0 (0 ≤ phase < stride)."""


@dataclass(frozen=True)
class ReadyWindow:
    """A full window to score: values (window, channels) and its event-time span."""

    values: np.ndarray
    start_s: float
    end_s: float
    filled: int


@dataclass
class Extended:
    """What happened to a run of events: those refused (index, ``late`` or ``duplicate``; the
    rest were accepted) and the windows they completed (index of the completing event)."""

    refused: list[tuple[int, Literal["late", "duplicate"]]] = field(default_factory=list)
    ready: list[tuple[int, ReadyWindow]] = field(default_factory=list)


@dataclass
class AddResult:
    """What happened to one event, and the windows it completed."""

    outcome: Literal["accepted", "late", "duplicate"]
    ready: list[ReadyWindow] = field(default_factory=list)


class AssetWindow:
    """The window state of one asset; see the module docstring."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._values = np.zeros((spec.window, len(spec.channels)), dtype=np.float32)
        self._filled = np.zeros(spec.window, dtype=bool)
        self._count = 0  # samples ever committed to the ring
        self._last_time: float | None = None
        self._pending_times: list[float] = []
        self._pending_values: list[np.ndarray] = []
        self._newest = float("-inf")

    @property
    def watermark(self) -> float:
        """Events at or before this time can no longer be placed."""
        return self._newest - self.spec.lateness_s

    def add(self, time_s: float, values: Sequence[float] | np.ndarray) -> AddResult:
        """Offer one event (values in ``spec.channels`` order)."""
        if (
            self._last_time is not None and time_s <= self._last_time
        ) or time_s <= self.watermark - self.spec.period_s:
            held = self._last_time is not None and abs(time_s - self._last_time) < 1e-9
            return AddResult("duplicate" if held else "late")
        if self.spec.lateness_s == 0:
            # Nothing is ever held back: an event past the last one goes straight into the ring.
            self._newest = time_s
            ready: list[ReadyWindow] = []
            self._commit(time_s, values, ready)
            return AddResult("accepted", ready)
        index = bisect.bisect_left(self._pending_times, time_s)
        if index < len(self._pending_times) and abs(self._pending_times[index] - time_s) < 1e-9:
            return AddResult("duplicate")
        self._pending_times.insert(index, time_s)
        self._pending_values.insert(index, np.asarray(values, dtype=np.float32))
        self._newest = max(self._newest, time_s)
        ready = []
        while self._pending_times and self._pending_times[0] <= self.watermark:
            self._commit(self._pending_times.pop(0), self._pending_values.pop(0), ready)
        return AddResult("accepted", ready)

    def extend(self, times: Sequence[float], values: Sequence[Sequence[float]] | np.ndarray) -> Extended:
        """Offer a run of events in arrival order (``values`` one row per event), with the same
        outcomes and windows as offering each in turn; a long gap-free run on the grid after
        the last event, with no lateness allowed, is written to the ring in one step."""
        if len(times) >= VECTOR_MIN and self.spec.lateness_s == 0 and self._continues_grid(times):
            return self._extend_on_grid(
                np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float32)
            )
        extended = Extended()
        for index, (time_s, row) in enumerate(zip(times, values, strict=True)):
            added = self.add(time_s, row)
            if added.outcome != "accepted":
                extended.refused.append((index, added.outcome))
            extended.ready.extend((index, window) for window in added.ready)
        return extended

    def _continues_grid(self, times: Sequence[float]) -> bool:
        """Each event one period after the one before it (the first after the last committed)."""
        before = times[0] - self.spec.period_s if self._last_time is None else self._last_time
        steps = np.diff(np.asarray(times, dtype=np.float64), prepend=before)
        return bool(np.all(steps > 0) and np.all(np.rint(steps / self.spec.period_s) == 1))

    def _extend_on_grid(self, times: np.ndarray, values: np.ndarray) -> Extended:
        spec, count = self.spec, self._count
        held = min(count, spec.window)
        history = self._ordered(self._values, count)
        combined = np.concatenate((history, values))
        filled = np.concatenate((self._ordered(self._filled, count), np.zeros(len(times), dtype=bool)))
        tail = max(0, len(times) - spec.window)  # earlier events of a long run never stay in the ring
        slots = (count + np.arange(tail, len(times))) % spec.window
        self._values[slots] = values[tail:]
        self._filled[slots] = False
        self._count += len(times)
        self._last_time = self._newest = float(times[-1])
        span = (spec.window - 1) * spec.period_s
        grid = np.rint(times / spec.period_s).astype(np.int64)
        extended = Extended()
        for index in np.flatnonzero((grid + 1 + spec.phase) % spec.stride == 0).tolist():
            end = held + index + 1
            time_s = float(times[index])
            if count + index + 1 >= spec.window:
                window = combined[end - spec.window : end]
                gaps = int(np.count_nonzero(filled[end - spec.window : end]))
            elif spec.pad == "edge":
                missing = spec.window - end
                window = np.concatenate([np.repeat(combined[:1], missing, axis=0), combined[:end]])
                gaps = missing + int(np.count_nonzero(filled[:end]))
            else:
                continue
            extended.ready.append((index, ReadyWindow(window, time_s - span, time_s, gaps)))
        return extended

    def _ordered(self, ring: np.ndarray, count: int) -> np.ndarray:
        """The ring's committed rows, oldest first."""
        if count < self.spec.window:
            return ring[:count]
        oldest = count % self.spec.window
        return np.concatenate((ring[oldest:], ring[:oldest]))

    def _commit(self, time_s: float, values: Sequence[float] | np.ndarray, ready: list[ReadyWindow]) -> None:
        period = self.spec.period_s
        if self._last_time is not None:
            missing = round((time_s - self._last_time) / period) - 1
            if missing > MAX_GAP_FILL:
                self._count = 0  # too long a gap: start over
            elif missing > 0:
                values = np.asarray(values, dtype=np.float32)
                previous = self._values[(self._count - 1) % self.spec.window].copy()
                base = self._last_time
                for k in range(1, missing + 1):
                    share = k / (missing + 1)
                    fill = (
                        previous + share * (values - previous)
                        if self.spec.gap_policy == "resample"
                        else np.zeros_like(values)
                    )
                    self._push(base + k * period, fill, True, ready)
        self._push(time_s, values, False, ready)

    def _push(
        self, time_s: float, values: Sequence[float] | np.ndarray, filled: bool, ready: list[ReadyWindow]
    ) -> None:
        slot = self._count % self.spec.window
        self._values[slot] = values
        self._filled[slot] = filled
        self._count += 1
        self._last_time = time_s
        on_stride = (round(time_s / self.spec.period_s) + 1 + self.spec.phase) % self.spec.stride == 0
        if not on_stride:
            return
        span = (self.spec.window - 1) * self.spec.period_s
        if self._count >= self.spec.window:
            values = self._ordered(self._values, self._count)
            ready.append(ReadyWindow(values, time_s - span, time_s, int(np.count_nonzero(self._filled))))
        elif self.spec.pad == "edge":
            missing = self.spec.window - self._count
            values = np.concatenate(
                [np.repeat(self._values[:1], missing, axis=0), self._values[: self._count]]
            )
            padded = missing + int(self._filled[: self._count].sum())
            ready.append(ReadyWindow(values, time_s - span, time_s, padded))

    def snapshot(self) -> dict[str, Any]:
        """The window's whole state as plain values (JSON; arrays as base64 of their bytes), for
        ``restore``: the ring, its fill marks and count, the reorder buffer, the clock."""
        return {
            "spec": asdict(self.spec),
            "values": _packed(self._values),
            "filled": _packed(self._filled),
            "count": self._count,
            "last_time": self._last_time,
            "pending": [
                [t, _packed(v)] for t, v in zip(self._pending_times, self._pending_values, strict=True)
            ],
            "newest": self._newest,
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> AssetWindow:
        """The window ``snapshot`` describes (``ValueError`` when its arrays do not fit its spec)."""
        spec = snapshot["spec"]
        window = cls(WindowSpec(**{**spec, "channels": tuple(spec["channels"])}))
        values, filled = _unpacked(snapshot["values"]), _unpacked(snapshot["filled"])
        if values.shape != window._values.shape or filled.shape != window._filled.shape:
            raise ValueError(f"a window snapshot of shape {values.shape} does not fit its spec")
        window._values, window._filled = values, filled
        window._count = int(snapshot["count"])
        window._last_time = snapshot["last_time"]
        window._pending_times = [float(t) for t, _ in snapshot["pending"]]
        window._pending_values = [_unpacked(v) for _, v in snapshot["pending"]]
        window._newest = float(snapshot["newest"])
        return window

    def memory_bytes(self) -> int:
        """Bytes held for this asset (ring and reorder buffer)."""
        pending = sum(v.nbytes for v in self._pending_values) + 8 * len(self._pending_times)
        return self._values.nbytes + self._filled.nbytes + pending


def _packed(array: np.ndarray) -> list[Any]:
    """``array`` as [dtype, shape, base64 of its bytes]: exact, and a third of JSON floats' size."""
    return [
        array.dtype.str,
        list(array.shape),
        base64.b64encode(np.ascontiguousarray(array).tobytes()).decode(),
    ]


def _unpacked(packed: Sequence[Any]) -> np.ndarray:
    """The array ``_packed`` gave (a copy, writable)."""
    dtype, shape, data = packed
    if np.dtype(dtype).kind not in "fb":
        raise ValueError(f"a window snapshot holds an array of dtype {dtype}")
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
