"""The messages on Vigil's topics: inputs (FrameRef, SensorReading) and outputs."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.common import (
    Attributes,
    ChannelName,
    Evidence,
    FiniteFloat,
    Identifier,
    LongText,
    Message,
    ModelName,
    ModelRef,
    Sha256Hex,
    ShortText,
    Timestamp,
)

PipelineName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
ALLOWED_URI_SCHEMES = ("file://", "s3://", "http://", "https://")
MAX_CHANNELS = 64
MAX_BLOCK_SAMPLES = 4096
MAX_SCORES = 256


def _known_scheme(uri: str) -> str:
    if not uri.startswith(ALLOWED_URI_SCHEMES):
        raise ValueError(f"uri scheme must be one of {', '.join(ALLOWED_URI_SCHEMES)}")
    return uri


def _bounded(limit: int) -> AfterValidator:
    def check(value: dict[str, object]) -> dict[str, object]:
        if not value:
            raise ValueError("must not be empty")
        if len(value) > limit:
            raise ValueError(f"at most {limit} entries are allowed, got {len(value)}")
        return value

    return AfterValidator(check)


FrameUri = Annotated[str, StringConstraints(min_length=8, max_length=2048), AfterValidator(_known_scheme)]


class RegionOfInterest(BaseModel):
    """A pixel rectangle of the image to score (x, y of the top-left corner)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    x: Annotated[int, Field(ge=0, le=65535)]
    y: Annotated[int, Field(ge=0, le=65535)]
    width: Annotated[int, Field(ge=1, le=65535)]
    height: Annotated[int, Field(ge=1, le=65535)]


class FrameRef(Message):
    """A camera frame stored elsewhere; the image itself never travels through Kafka."""

    frame_id: Identifier
    camera_id: Identifier
    site: Identifier
    line: Identifier | None = None
    uri: FrameUri
    captured_at: Timestamp
    content_type: Literal["image/jpeg", "image/png"] | None = None
    sha256: Sha256Hex | None = None
    roi: RegionOfInterest | None = None
    model: ModelName | None = None
    attributes: Attributes = Field(default_factory=dict)


class SampleBlock(BaseModel):
    """Samples of a high-rate sensor taken at a fixed rate from the reading's event time."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sample_rate_hz: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    channels: Annotated[
        dict[ChannelName, Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_BLOCK_SAMPLES)]],
        _bounded(MAX_CHANNELS),
    ]

    @model_validator(mode="after")
    def _equal_lengths(self) -> Self:
        lengths = {len(samples) for samples in self.channels.values()}
        if len(lengths) > 1:
            raise ValueError("every channel of a sample block must have the same length")
        return self


class SensorReading(Message):
    """One event from an IoT sensor: channel values (finite numbers only) at an event time."""

    asset_id: Identifier
    sensor_id: Identifier
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    event_time: Timestamp
    values: Annotated[dict[ChannelName, FiniteFloat], _bounded(MAX_CHANNELS)] | None = None
    units: Annotated[
        dict[ChannelName, Annotated[str, StringConstraints(max_length=32)]], Field(max_length=MAX_CHANNELS)
    ] = Field(default_factory=dict)
    block: SampleBlock | None = None
    site: Identifier | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_data(self) -> Self:
        if self.values is None and self.block is None:
            raise ValueError("a reading needs `values` or a sample `block`")
        return self


AlertKind = Literal[
    "visual_defect", "visual_anomaly", "sensor_anomaly", "threshold", "stale_source", "low_rul"
]
Severity = Literal["info", "warning", "critical"]


class AlertTimestamps(BaseModel):
    """The life of an input through Vigil: captured → received → inferred → published."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    captured_at: Timestamp
    received_at: Timestamp
    inferred_at: Timestamp
    published_at: Timestamp


class Alert(Message):
    """An operator-facing alert (firing or resolved) with the audit trail behind it."""

    alert_id: Identifier
    kind: AlertKind
    severity: Severity
    state: Literal["firing", "resolved"]
    source_id: Identifier
    site: Identifier | None = None
    rule: Identifier
    label: ShortText
    score: FiniteFloat
    threshold: FiniteFloat
    model: ModelRef | None = None
    evidence: Evidence
    explanation: Annotated[dict[ShortText, FiniteFloat], Field(max_length=MAX_SCORES)] = Field(
        default_factory=dict
    )
    message: LongText = ""
    config_hash: Sha256Hex
    timestamps: AlertTimestamps


class InferenceResult(Message):
    """The scores of one input item, whether or not an alert fired."""

    result_id: Identifier
    pipeline: PipelineName
    """The kind of stream that scored it: ``vision``, ``sensors``, ``passthrough``, or a kind added since."""
    source_id: Identifier
    outcome: Literal["scored", "late", "duplicate"] = "scored"
    model: ModelRef | None = None
    label: ShortText | None = None
    score: FiniteFloat | None = None
    scores: Annotated[dict[ShortText, FiniteFloat], Field(max_length=MAX_SCORES)] = Field(
        default_factory=dict
    )
    evidence: Evidence
    captured_at: Timestamp
    inferred_at: Timestamp


DeadLetterReason = Literal[
    "undecodable",
    "invalid_json",
    "schema_violation",
    "oversize",
    "disallowed_uri",
    "missing_object",
    "unreadable_object",
    "empty_object",
    "unsupported_image",
    "image_too_large",
    "corrupt_image",
    "checksum_mismatch",
    "fetch_failed",
    "invalid_roi",
    "unknown_model",
    "inference_failed",
    "invalid_value",
    "value_out_of_range",
    "unknown_channel",
    "out_of_time_range",
    "invalid_block",
    "processing_error",
    "undelivered_alert",
]


class DeadLetter(Message):
    """Why an input could not be processed; the original bytes ride along, base64-encoded."""

    reason: DeadLetterReason
    stage: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    error_class: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    error_message: LongText
    origin_topic: Annotated[str, StringConstraints(min_length=1, max_length=249)]
    origin_partition: Annotated[int, Field(ge=0)]
    origin_offset: Annotated[int, Field(ge=0)]
    original_key_b64: str | None = None
    original_value_b64: str | None = None
    original_size: Annotated[int, Field(ge=0)]
    original_sha256: Sha256Hex | None = None
    """sha256 of the original value, whole even when the copy is truncated."""
    original_truncated: bool = False
    """The copy in ``original_value_b64`` is only the start of the value: the whole would not fit
    the dead-letter topic's record limit (the original stays in its topic at its offset)."""
    failed_at: Timestamp


MESSAGE_TYPES: dict[str, type[Message]] = {
    model.__name__: model for model in (FrameRef, SensorReading, Alert, InferenceResult, DeadLetter)
}
