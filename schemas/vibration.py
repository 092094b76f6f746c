"""Vibration spectra: the message of the ``vibration`` pipeline kind and its settings section.

An edge device (a condition-monitoring accelerometer on a fan, pump or motor) computes a
magnitude spectrum over a fixed number of FFT bins per axis and publishes it; Vigil scores
each spectrum against the machine's healthy ones.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from schemas.common import Attributes, ChannelName, Identifier, Message, ModelName, Timestamp
from schemas.settings import BatchingSettings, ModelServingSettings, Precision, TopicSpec

MAX_AXES = 8
MAX_BINS = 4096

Magnitude = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class VibrationSpectrum(Message):
    """One spectrum per axis (same bins for every axis, bin ``i`` at ``i * sample_rate_hz / (2 * bins)`` Hz)."""

    asset_id: Identifier
    sensor_id: Identifier
    measured_at: Timestamp
    sample_rate_hz: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    rpm: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)] | None = None
    axes: Annotated[
        dict[ChannelName, Annotated[list[Magnitude], Field(min_length=2, max_length=MAX_BINS)]],
        Field(min_length=1, max_length=MAX_AXES),
    ]
    site: Identifier | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _same_bins(self) -> Self:
        if len({len(bins) for bins in self.axes.values()}) > 1:
            raise ValueError("every axis of a spectrum must have the same number of bins")
        return self

    @property
    def bins(self) -> int:
        """FFT bins per axis."""
        return len(next(iter(self.axes.values())))


class VibrationSettings(ModelServingSettings):
    """The ``vibration`` pipeline (``pipelines.vibration`` in the configuration)."""

    input: TopicSpec = TopicSpec(name="vigil.vibration", partitions=6)
    model: ModelName = "demo-vibration"
    model_version: ModelName | None = None
    precision: Precision = "fp32"
    batching: BatchingSettings = BatchingSettings(max_batch_size=64, max_wait_ms=10.0)
