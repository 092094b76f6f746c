"""The model card: what a registry entry is, what it expects as input, and how it was made."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.common import ChannelName, FiniteFloat, Identifier, ModelName, Sha256Hex, ShortText, Timestamp

ModelTask = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
"""What a model does, e.g. ``defect_classification``, ``visual_anomaly``, ``sensor_autoencoder``,
``sensor_forecast``, ``sensor_rul``; a pipeline kind may add its own. The registry refuses to
load a task no builder is registered for."""


class CardSection(BaseModel):
    """Base of every card section: immutable, closed to unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ImageInputSpec(CardSection):
    """How an image is turned into the model's input tensor."""

    kind: Literal["image"] = "image"
    height: Annotated[int, Field(gt=0, le=4096)]
    width: Annotated[int, Field(gt=0, le=4096)]
    channels: Literal[1, 3]
    mean: list[FiniteFloat]
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    resize: Literal["stretch", "shorter_side_then_center_crop", "letterbox"] = "stretch"
    """``letterbox`` keeps the aspect ratio: the image fits inside, padded with ``mean``."""


class SeriesInputSpec(CardSection):
    """How a sensor window is turned into the model's input tensor."""

    kind: Literal["series"] = "series"
    channels: list[ChannelName]
    window: Annotated[int, Field(gt=1, le=100_000)]
    stride: Annotated[int, Field(gt=0)]
    sample_period_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    mean: list[FiniteFloat]
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    gap_policy: Literal["resample", "mask"] = "resample"
    ignored: list[ChannelName] = Field(default_factory=list)
    """Channels of the training history the model does without (constant there): accepted in
    readings, never scored."""
    pad: Literal["none", "edge"] = "none"
    """``edge``: an asset's first windows are scored before ``window`` samples have arrived,
    the missing history filled with its first sample (models trained on short runs)."""


class TensorInputSpec(CardSection):
    """A fixed-shape input (pipeline kinds beyond images and series, e.g. spectra): the item's
    ``shape`` with ``names`` along its first axis, normalised per first-axis entry by ``mean``
    and ``std``."""

    kind: Literal["tensor"] = "tensor"
    shape: Annotated[list[Annotated[int, Field(gt=0, le=1_000_000)]], Field(min_length=1, max_length=4)]
    names: list[ChannelName]
    mean: list[FiniteFloat]
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    transform: Literal["none", "log1p"] = "none"
    """Applied to the raw values before normalising (``log1p``: magnitudes spanning decades)."""

    @model_validator(mode="after")
    def _aligned(self) -> Self:
        first = self.shape[0]
        if not len(self.names) == len(self.mean) == len(self.std) == first:
            raise ValueError(f"names, mean and std need one entry per first-axis entry ({first})")
        return self


class ThresholdRule(CardSection):
    """How the card's anomaly threshold was chosen: ``quantile`` of the scores of held-out
    normal windows (``calibration``), times ``margin``."""

    kind: Literal["calibration_quantile"] = "calibration_quantile"
    quantile: Annotated[float, Field(gt=0, le=1)]
    margin: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    calibration: ShortText = ""
    calibration_windows: Annotated[int, Field(ge=0)] = 0


class LifeSpec(CardSection):
    """What a remaining-useful-life model's output means: its ``unit`` (one sample is one
    cycle for ``cycles`` and ``samples``), and the cap of its piecewise-linear target (life
    beyond it reads as ``cap``: healthy)."""

    unit: Literal["cycles", "samples", "hours"]
    cap: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class BackboneInfo(CardSection):
    """The pretrained backbone inside a model: which, which feature levels, and the checkpoint
    its weights started from (the entry's own weights file holds the trained copy)."""

    name: Identifier
    levels: Annotated[list[Annotated[int, Field(ge=2, le=5)]], Field(min_length=1, max_length=4)]
    checkpoint: ShortText = ""
    checkpoint_sha256: Sha256Hex | None = None


class CpuEngineSpec(CardSection):
    """How the model may serve through OpenVINO on a CPU (``models/cpu_engine.py``): at
    ``precision`` (int8 calibrated on the check images), accepted at load only where its outputs
    on those images stay within ``tolerance`` of the torch model's (largest difference as a share
    of the outputs' range); else fp32, else torch, with a warning. The check images are
    ``checks_file`` (uint8 pixels at the input size), hashed like the weights."""

    precision: Literal["int8", "fp32"] = "int8"
    tolerance: Annotated[float, Field(gt=0, le=1)] = 0.05
    checks_file: ShortText = "checks.safetensors"
    checks_sha256: Sha256Hex | None = None


class TrainingSummary(CardSection):
    """What the model saw in training and how it scored on held-out data."""

    dataset: ShortText
    samples: Annotated[int, Field(ge=0)]
    epochs: Annotated[int, Field(ge=0)] = 0
    metrics: dict[ShortText, FiniteFloat] = Field(default_factory=dict)
    notes: ShortText = ""


class ModelCard(CardSection):
    """A registry entry's description; stored as ``card.json`` beside the weights."""

    name: ModelName
    version: ModelName
    task: ModelTask
    architecture: Identifier
    input: ImageInputSpec | SeriesInputSpec | TensorInputSpec = Field(discriminator="kind")
    labels: list[ShortText] = Field(default_factory=list)
    normal_label: ShortText | None = None
    """The class (or, for anomaly scorers, the training folder) that means 'no defect'."""
    thresholds: dict[ShortText, FiniteFloat] = Field(default_factory=dict)
    output: Literal["probabilities", "logits"] | None = None
    """What the stored classifier emits. Logits are turned into probabilities when loaded
    (Vigil's own state-dict classifiers always emit logits), so served scores and the
    thresholds always mean probabilities; None on a TorchScript card means probabilities."""
    backbone: BackboneInfo | None = None
    threshold_rule: ThresholdRule | None = None
    life: LifeSpec | None = None
    cpu_engine: CpuEngineSpec | None = None
    weights_file: ShortText = "weights.safetensors"
    weights_sha256: Sha256Hex | None = None
    training: TrainingSummary | None = None
    created_at: Timestamp
