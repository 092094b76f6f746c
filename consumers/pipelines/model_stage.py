"""The model stage base: what every pipeline whose items are scored by model lanes shares.

Bookkeeping is ``BufferedStage``'s (``consumers.runtime.stage``): outcomes and the count in
flight under one lock, ``abandon`` where an input ends with none.

Scored items: lanes' executor threads deliver each item's output or error to ``ScoredItems``;
``collect`` drains it on the runtime's thread and asks the stage for the item's outcome
(``_scored_item``); an outcome that cannot be built fails its item alone.

Hot reload (``ModelReloader``): the reloader builds a new version's lane on its own thread and
leaves it in ``BuiltLanes``; the runtime's thread installs it between batches (``submit`` and
``collect`` begin with that), and the lane it replaces retires on a thread of its own once its
queued items are done. ``close`` stops the reloader, closes lanes built but never installed,
then the lanes serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, Protocol, TypeVar

import torch

from consumers.pipelines.lane import ModelLane, ScoredItems
from consumers.pipelines.reload import Binding, BuiltLanes, ModelReloader, retire
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Outcome, Work
from consumers.runtime.stage import BufferedStage
from models.registry import LoadedModel, ModelLoader

log = logging.getLogger(__name__)


class LaneItem(Protocol):
    """An item queued on a lane: it knows the input it came from."""

    @property
    def work(self) -> Work: ...


Item = TypeVar("Item", bound=LaneItem)
L = TypeVar("L", bound=ModelLane)  # type: ignore[type-arg]


class ModelStage(BufferedStage, Generic[Item, L]):
    """A ``ProcessingStage`` whose items are scored by model lanes; see the module docstring.

    A stage implements ``_admit`` (its inputs' checks and their queueing on a lane),
    ``_scored_item`` (the outcome of a scored item), ``_install`` and ``serving_lanes``.
    """

    def __init__(self, name: str, observer: RuntimeObserver | None) -> None:
        super().__init__(name)
        self.observer = observer or RuntimeObserver()
        self._scored: ScoredItems[Item] = ScoredItems()
        self._built: BuiltLanes[L] = BuiltLanes()
        self.reloader: ModelReloader[L] | None = None

    def _scored_item(self, item: Item, result: torch.Tensor | BaseException) -> Outcome | None:
        """The outcome of a scored item (the runtime's thread); None while its input waits for more."""
        raise NotImplementedError

    def _install(self, binding: Binding, lane: L) -> L:
        """Serve ``lane`` for ``binding`` from now on (the runtime's thread); the lane it replaces."""
        raise NotImplementedError

    def serving_lanes(self) -> list[L]:
        """The lanes serving now."""
        raise NotImplementedError

    def _retire(self, old: L) -> None:
        """Close a replaced lane once its queued items are done (a thread of its own)."""
        old.close()

    def submit(self, work: Sequence[Work]) -> None:
        """Install lanes built since the last batch, then admit the inputs."""
        self._install_built()
        super().submit(work)

    def _complete(self, timeout_s: float) -> None:
        """Build the outcomes of items scored since the last call, waiting up to ``timeout_s``
        for the first (the runtime's thread)."""
        self._install_built()
        self._before_collect()
        for item, result in self._scored.drain(timeout_s):
            try:
                outcome = self._scored_item(item, result)
            except Exception as error:  # a result that cannot be built fails its input alone
                log.exception("building the outcome of %s failed", item.work.record)
                self._fail(item.work, "processing_error", error)
                continue
            if outcome is not None:
                self._finish(outcome)

    def _before_collect(self) -> None:
        """A stage's step before scored items are drained (the runtime's thread)."""

    def close(self) -> None:
        """Stop the reloader, then finish the queued batches of every lane and stop them."""
        if self.reloader is not None:
            self.reloader.stop()
        for _, lane in self._built.take():
            lane.close()
        for lane in self.serving_lanes():
            lane.close()

    # -- hot reload ------------------------------------------------------------------------

    def _start_reloader(
        self,
        registry: str,
        interval_s: float,
        bindings: Callable[[], Sequence[Binding]],
        build: Callable[[Binding, LoadedModel], L],
        loader: ModelLoader,
    ) -> None:
        """Follow the registry's aliases for ``bindings`` (nothing when ``interval_s`` is 0)."""
        self.reloader = ModelReloader(
            self.name, registry, interval_s, bindings, build, self._built.put, loader, self.observer
        )
        self.reloader.start()

    def _install_built(self) -> None:
        """Install the lanes the reloader built since the last call; retire those they replace."""
        for binding, lane in self._built.take():
            old = self._install(binding, lane)
            retire(partial(self._retire, old), self.name)
