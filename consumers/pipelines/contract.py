"""The pipeline contract: what a kind of stream declares so that Vigil can run it.

A kind is one ``PipelineKind`` object named ``PIPELINE`` in a module or package under
``consumers/pipelines/`` (or exposed by another distribution's ``vigil.pipelines`` entry
point). From it come the ``vigil run --pipeline`` choices, the topics ``vigil topics create``
makes, the message types ``vigil schemas export`` writes, the model tasks it serves, and its
lane in ``vigil demo``. Nothing else lists the kinds.

What a kind builds is a ``Pipeline``: its input topics with their message types, and a
``ProcessingStage`` (``consumers.runtime.stage``) that turns each validated input into one
outcome. Model-serving stages build on ``consumers.pipelines.lane.ModelLane`` and
``consumers.pipelines.outputs.PipelineOutputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.stage import ProcessingStage
from schemas.common import Message, describe_errors
from schemas.messages import Alert
from schemas.settings import ConfigurationError, ModelServingSettings, TopicSpec, VigilSettings

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True)
class Pipeline:
    """Input topics with their message types, and the processing stage."""

    inputs: dict[str, type[Message]]
    stage: ProcessingStage


@dataclass(frozen=True)
class DemoOptions:
    """What ``vigil demo`` was asked for, for every kind's lane."""

    duration_s: float
    frames_per_s: int
    """Camera frames per second (a kind with cameras)."""
    store: Path
    """Where simulated frames are written (and served from)."""
    real_images: Path | None
    """Real images to serve instead of simulated ones."""
    start: datetime
    """When the simulated world begins (whole seconds)."""


class DemoSource(Protocol):
    """Publishes a kind's simulated inputs (to ``topic``) during ``vigil demo``."""

    topic: str

    def due(self, elapsed_s: float, duration_s: float) -> list[tuple[str, bytes, bytes]]:
        """The (topic, key, value) records due ``elapsed_s`` into a demo of ``duration_s``."""


@dataclass(frozen=True)
class DemoLane:
    """A kind's part in ``vigil demo``: ``prepare`` trains its demo models once (into the
    kind's registry) and returns the settings that serve them; ``source`` makes its input
    records; ``places`` are the parts of the demo world its alerts come from, and ``place``
    says which one an alert does (by default one place, the kind's name)."""

    prepare: Callable[[VigilSettings, DemoOptions, Callable[[str], None]], VigilSettings]
    source: Callable[[VigilSettings, DemoOptions], DemoSource]
    places: tuple[str, ...] = ()
    place: Callable[[Alert], str] | None = None


Pin = Callable[[VigilSettings, "str | None", str], "tuple[VigilSettings, dict[str, str]]"]
"""``pin(settings, model, version)``: ``settings`` with ``model`` (None: the kind's only one)
served at ``version`` (a version or an alias, resolved now), its other models at the version
their alias names now, hot reload off; and the version each model serves. ``PinError`` when
the kind serves no such model."""


class PinError(ValueError):
    """A model cannot be pinned as asked (the pipeline does not serve it)."""


@dataclass(frozen=True)
class PipelineKind(Generic[S]):
    """A kind of stream; see the module docstring."""

    name: str
    summary: str
    """One line for ``vigil run --help``."""
    build: Callable[[VigilSettings, RuntimeObserver], Pipeline]
    messages: tuple[type[Message], ...] = ()
    """The kind's own message types (inputs), beside Vigil's core ones."""
    model_tasks: tuple[str, ...] = ()
    """Registry tasks its stage serves; empty for a kind without models."""
    section: type[S] | None = None
    """Its settings section, read from ``pipelines.<name>`` of the configuration (the built-in
    vision and sensor sections are top-level ones and leave this None)."""
    topics: Callable[[VigilSettings], list[TopicSpec]] = field(default=lambda settings: [])
    """Its own topics, beyond the shared ones of ``settings.topics``, for ``vigil topics create``."""
    serving: Callable[[VigilSettings], ModelServingSettings] | None = None
    """Its model-serving section (registry, device, batching), for a kind with models."""
    input_topic: Callable[[VigilSettings], str] | None = None
    """The topic its inputs come from (what ``vigil replay`` reads)."""
    pin: Pin | None = None
    """Its settings with every model pinned, for ``vigil replay``; None: not replayable."""
    demo: DemoLane | None = None
    commands: str | None = None
    """The module (dotted path) of its ``vigil train`` and ``vigil eval`` subcommands, which
    defines ``add_train(train_sub, with_config)`` and ``add_eval(eval_sub, with_config)``;
    imported only when the command line is parsed."""

    def registry(self, settings: VigilSettings) -> str | None:
        """The registry folder its models are read from (``vigil train``, ``eval``, ``models``)."""
        return None if self.serving is None else self.serving(settings).registry

    @property
    def replayable(self) -> bool:
        """Whether ``vigil replay`` can run a range through it."""
        return self.pin is not None and self.input_topic is not None

    @property
    def serves_models(self) -> bool:
        """Whether the stage runs models (torch threads are shared between such pipelines)."""
        return bool(self.model_tasks)

    def settings(self, settings: VigilSettings) -> S:
        """This kind's section of ``settings`` (``pipelines.<name>``), validated."""
        if self.section is None:
            raise TypeError(f"pipeline {self.name!r} has no section under pipelines")
        try:
            return self.section.model_validate(settings.pipelines.get(self.name, {}))
        except ValidationError as error:
            raise ConfigurationError(
                f"invalid configuration in pipelines.{self.name}: {describe_errors(error, limit=10)}"
            ) from None

    def with_settings(self, settings: VigilSettings, section: S) -> VigilSettings:
        """``settings`` with this kind's section replaced by ``section``."""
        pipelines = {**settings.pipelines, self.name: section.model_dump(mode="json")}
        return settings.model_copy(update={"pipelines": pipelines})
