"""The kinds of stream Vigil runs, discovered from their ``PIPELINE`` declarations.

Each package directly under ``consumers/pipelines/`` that defines ``PIPELINE`` (a
``contract.PipelineKind``) in its ``__init__`` is a kind (the modules beside them are what
kinds share); so is every ``vigil.pipelines`` entry point of an installed distribution.
Importing a declaration must stay cheap (no torch): stages are imported when a pipeline is
built.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from importlib.metadata import entry_points

from consumers.pipelines.contract import Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from schemas.common import Message
from schemas.settings import TopicSpec, VigilSettings

__all__ = ["Pipeline", "PipelineKind", "all_topics", "build_pipeline", "message_types", "pipeline_kinds"]
ENTRY_POINT_GROUP = "vigil.pipelines"


@cache
def pipeline_kinds() -> dict[str, PipelineKind]:  # type: ignore[type-arg]
    """Every kind, by name: the in-tree ones, then those of entry points."""
    found: dict[str, PipelineKind] = {}  # type: ignore[type-arg]
    declared = [
        getattr(importlib.import_module(f"{__name__}.{module.name}"), "PIPELINE", None)
        for module in pkgutil.iter_modules(__path__)
        if module.ispkg
    ]
    declared += [point.load() for point in entry_points(group=ENTRY_POINT_GROUP)]
    for kind in declared:
        if isinstance(kind, PipelineKind):
            if kind.name in found:
                raise ValueError(f"two pipeline kinds are called {kind.name!r}")
            found[kind.name] = kind
    return dict(sorted(found.items()))


def build_pipeline(name: str, settings: VigilSettings, observer: RuntimeObserver | None = None) -> Pipeline:
    """The pipeline called ``name``, its stage reporting to ``observer``; ``KeyError`` names the known ones."""
    kinds = pipeline_kinds()
    if name not in kinds:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(kinds)}")
    return kinds[name].build(settings, observer or RuntimeObserver())


def all_topics(settings: VigilSettings) -> list[TopicSpec]:
    """The shared topics and every kind's own ones."""
    own = [spec for kind in pipeline_kinds().values() for spec in kind.topics(settings)]
    return [*settings.topics.all(), *own]


def message_types() -> list[type[Message]]:
    """Every kind's own message types."""
    return [message for kind in pipeline_kinds().values() for message in kind.messages]
