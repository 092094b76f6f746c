"""Admitting a reading: event-time bounds, channel checks, and expansion into samples.

Outcomes of bad input (each a dead-letter reason, never a crash):
- event time further than ``max_future_s`` after, or ``max_past_s`` before, the record's
  Kafka timestamp: ``out_of_time_range``; a sample block spanning more than
  ``max_block_span_s`` or ending beyond ``max_future_s``: ``invalid_block`` (the Kafka timestamp, not the wall clock, keeps a
  replay of the partition deciding the same way);
- a channel the asset's model needs is missing: ``invalid_value``;
- a value of a model channel beyond what its float32 window holds: ``value_out_of_range``;
- a channel that neither the model nor any rule of the asset knows: ``unknown_channel``,
  or dropped and counted when ``unknown_channels`` is ``ignore``.
NaN, infinities and wrong types never get this far: the schema rejects them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from consumers.runtime.records import Rejected
from models.alert_policy import at_time
from schemas.messages import SensorReading
from schemas.settings import SensorRule, SensorSettings


@dataclass(frozen=True, slots=True)
class Sample:
    """One point in event time of one asset: seconds since the epoch and channel values."""

    time_s: float
    values: dict[str, float]


at = at_time
"""An event time (seconds since the epoch) as a UTC timestamp."""


class ReadingRejected(Rejected):
    """A reading that cannot be used; ``reason`` is its dead-letter reason."""


def check_event_time(reading: SensorReading, reference_s: float, settings: SensorSettings) -> None:
    """Raise ``ReadingRejected`` when the event time is implausibly far from ``reference_s``
    (seconds since the epoch).

    A sample block is judged by its end too: one that spans more than ``max_block_span_s`` or
    ends further than ``max_future_s`` after ``reference`` is ``invalid_block``, so no single
    record can move an asset's clock beyond ``max_future_s`` past its Kafka timestamp.
    """
    offset = reading.event_time.timestamp() - reference_s
    if reading.block is not None:
        samples = len(next(iter(reading.block.channels.values())))
        span = (samples - 1) / reading.block.sample_rate_hz
        if span > settings.max_block_span_s:
            raise ReadingRejected(
                "invalid_block",
                f"block of {samples} samples at {reading.block.sample_rate_hz:g} Hz spans {span:.0f}s "
                f"(at most {settings.max_block_span_s:g}s)",
            )
        ends = offset + span
        if ends > settings.max_future_s:
            raise ReadingRejected("invalid_block", f"block ends {ends:.0f}s after the record's timestamp")
    if offset > settings.max_future_s:
        raise ReadingRejected(
            "out_of_time_range", f"event time {reading.event_time.isoformat()} is {offset:.0f}s in the future"
        )
    if settings.max_past_s is not None and -offset > settings.max_past_s:
        raise ReadingRejected(
            "out_of_time_range", f"event time {reading.event_time.isoformat()} is {-offset:.0f}s in the past"
        )


def expand(reading: SensorReading, without: Collection[str] = ()) -> list[Sample]:
    """The reading's samples (at ``sample_times``): its values at the event time, then its
    block at the block's rate; ``without`` channels left out."""
    times = sample_times(reading)
    samples = []
    if reading.values:
        samples.append(Sample(times[0], {c: v for c, v in reading.values.items() if c not in without}))
    if reading.block is not None:
        channels = {name: series for name, series in reading.block.channels.items() if name not in without}
        block_times = times[1:] if reading.values else times
        samples.extend(
            Sample(time_s, {name: series[k] for name, series in channels.items()})
            for k, time_s in enumerate(block_times)
        )
    return samples


def sample_times(reading: SensorReading) -> list[float]:
    """The event times of the reading's samples: its values, then each row of its block."""
    start = reading.event_time.timestamp()
    times = [start] if reading.values else []
    if reading.block is not None:
        length = len(next(iter(reading.block.channels.values())))
        times.extend((start + np.arange(length) * (1.0 / reading.block.sample_rate_hz)).tolist())
    return times


def model_value_limits(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per channel, the largest magnitude a value may have so that it, and its value normalised
    by the card's ``mean`` and ``std``, stay finite in float32 with room for a window's
    differences (interpolation across a gap)."""
    big = float(np.finfo(np.float32).max) / 2
    spread = np.asarray(std, dtype=np.float64)
    return np.minimum(big, big * spread) - np.abs(np.asarray(mean, dtype=np.float64))


def check_model_range(reading: SensorReading, channels: Sequence[str], limits: np.ndarray) -> None:
    """Raise ``value_out_of_range`` when a value of a model channel lies beyond ``limits`` (per
    channel, the largest magnitude whose normalised value float32 holds): such a value would
    make the asset's window, and every later window holding it, infinite or NaN."""
    if reading.values:  # one sample: the common case, checked without numpy
        values = reading.values
        for column, (channel, limit) in enumerate(zip(channels, limits.tolist(), strict=True)):
            if not -limit <= values[channel] <= limit:
                _out_of_range(channels, limits, column)
    if reading.block is not None:
        block = np.column_stack([np.asarray(reading.block.channels[c], dtype=np.float64) for c in channels])
        beyond = ~(np.abs(block) <= limits)
        if beyond.any():
            _out_of_range(channels, limits, int(np.nonzero(beyond.any(axis=0))[0][0]))


def _out_of_range(channels: Sequence[str], limits: np.ndarray, column: int) -> None:
    raise ReadingRejected(
        "value_out_of_range",
        f"{channels[column]} holds a value the model's float32 window cannot hold "
        f"(beyond ±{limits[column]:.3g})",
    )


def channel_sets(reading: SensorReading) -> list[tuple[tuple[str, ...], int]]:
    """The channel names of the reading's samples, and how many samples have them: its
    values (one sample), its block (one per row)."""
    sets = [(tuple(reading.values), 1)] if reading.values else []
    if reading.block is not None:
        channels = reading.block.channels
        sets.append((tuple(channels), len(next(iter(channels.values())))))
    return sets


def check_channels(
    channels: Iterable[str],
    model_channels: Sequence[str],
    rules: Sequence[SensorRule],
    unknown: str,
    ignored: Sequence[str] = (),
) -> tuple[str, ...]:
    """Check the channels of a sample of a model-scored asset; returns the unknown ones to drop.

    ``ignored`` channels (known to the model's card, not used by it) are neither needed nor
    unknown."""
    present = set(channels)
    missing = [c for c in model_channels if c not in present]
    if missing:
        raise ReadingRejected(
            "invalid_value", f"channels {', '.join(missing)} needed by the model are missing"
        )
    extra = tuple(
        c
        for c in present
        if c not in model_channels
        and c not in ignored
        and not any(fnmatchcase(c, rule.channel) for rule in rules)
    )
    if extra and unknown == "dead_letter":
        raise ReadingRejected("unknown_channel", f"unknown channels {', '.join(sorted(extra))}")
    return tuple(sorted(extra))
