"""The model lane: one registry model served to a pipeline's items.

prepare → execute → deliver: the micro-batcher gathers items, the lane's ``prepare`` turns a
batch into the model's input on its device, ``execute`` runs it (an item the batch cannot
take fails alone), and each item's output (or error) goes to the stage's ``deliver``
callable, which builds results with their evidence on the runtime's thread. The lane also
holds the alert rules on the model's outputs: the configured ones, else the card's
thresholds in the pipeline's default ``AlertShape``.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import torch

from consumers.pipelines.batcher import Deliver, MicroBatcher, model_batcher
from consumers.runtime.observer import RuntimeObserver
from models.alert_policy import AlertShape
from models.engine import CpuPlan, InferenceEngine
from models.registry import LoadedModel
from schemas.settings import AlertRule, BatchingSettings, ModelServingSettings

T = TypeVar("T")


class ScoredItems(Generic[T]):
    """Where lanes' executor threads hand each item's output (or error) to the runtime's thread,
    which builds the outcomes: the executor gets back to the device at once."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[T, torch.Tensor | BaseException]] = queue.SimpleQueue()

    def deliver(self, item: T, result: torch.Tensor | BaseException) -> None:
        """A lane's ``Deliver``: called on its executor thread."""
        self._queue.put((item, result))

    def drain(self, timeout_s: float) -> list[tuple[T, torch.Tensor | BaseException]]:
        """Everything delivered since the last call, waiting up to ``timeout_s`` for the first."""
        done = []
        try:
            done.append(self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait())
            while True:
                done.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return done


class ModelLane(Generic[T]):
    """Engine, warm-up, micro-batcher and alert rules of one model; subclasses say how a batch
    of items becomes the model's input (``prepare``)."""

    def __init__(
        self,
        pipeline: str,
        model: LoadedModel,
        serving: ModelServingSettings,
        deliver: Deliver[T, torch.Tensor],
        observer: RuntimeObserver,
        example: torch.Tensor,
        shape: AlertShape,
        thresholds: Mapping[str, float] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        batching: BatchingSettings | None = None,
        cpu_plan: CpuPlan | None = None,
    ) -> None:
        self.model = model
        self.ref = model.ref
        self.rules: list[AlertRule] = serving.alert_rules or shape.card_rules(model.card, thresholds)
        self.engine = InferenceEngine(
            model.module, serving.device, serving.precision, channels_last, compile, serving.trace, cpu_plan
        )
        batching = batching or serving.batching
        self.engine.warm_up(example, sorted({1, batching.max_batch_size}))
        self.batcher: MicroBatcher[T, torch.Tensor] = model_batcher(
            pipeline,
            model.card,
            str(self.engine.device),
            batching,
            self.prepare,
            self.execute,
            deliver,
            observer,
            self.engine.engine_name(),
        )

    def prepare(self, batch: Sequence[T]) -> Any:
        """The batch as the model's input, on its device (the batcher's assembler thread)."""
        raise NotImplementedError

    def execute(self, batch: Sequence[T], prepared: Any) -> list[torch.Tensor | BaseException]:
        """One output (or error) per item (the batcher's executor thread)."""
        return self.engine.run_splitting(prepared)

    def run_now(self, inputs: torch.Tensor, chunk: int = 1024) -> list[torch.Tensor]:
        """Outputs for host ``inputs`` at once, in this thread (state rebuilds, explanations)."""
        outputs: list[torch.Tensor] = []
        for start in range(0, len(inputs), chunk):
            outputs.extend(self.engine.run_items(self.engine.prepare(inputs[start : start + chunk])))
        return outputs

    def close(self) -> None:
        """Finish queued batches and stop the batcher's threads."""
        self.batcher.close()
