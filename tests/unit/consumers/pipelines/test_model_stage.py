"""The model stage base: a scored item whose outcome cannot be built fails alone; lanes the
reloader built are installed between batches and retired; close closes every lane."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import torch

from consumers.pipelines.model_stage import ModelStage
from consumers.pipelines.reload import Binding
from consumers.runtime.records import InboundRecord, Outcome, Output, Work
from tests import sample_messages as samples


class FakeLane:
    def __init__(self, version: str) -> None:
        self.version = version
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


@dataclass(frozen=True)
class Item:
    work: Work
    lane: FakeLane


class Doubling(ModelStage[Item, FakeLane]):  # type: ignore[type-var]
    """Scores each input at once on its executor-less lane: the output is twice the offset."""

    def __init__(self) -> None:
        super().__init__("doubling", None)
        self.lane = FakeLane("1")

    def _admit(self, work: Sequence[Work]) -> None:
        for item in work:
            self._scored.deliver(Item(item, self.lane), torch.tensor([2.0 * item.record.offset]))

    def _scored_item(self, item: Item, result: torch.Tensor | BaseException) -> Outcome | None:
        if item.work.record.offset == 3:
            raise KeyError("no such label")
        return Outcome(item.work.record, (Output("out", None, str(float(result[0])).encode()),))

    def _install(self, binding: Binding, lane: FakeLane) -> FakeLane:
        old, self.lane = self.lane, lane
        return old

    def serving_lanes(self) -> list[FakeLane]:
        return [self.lane]


def work(i: int) -> Work:
    return Work(InboundRecord("t", 0, i, None, b"{}"), samples.reading(i), datetime.now(UTC))


def test_an_outcome_that_cannot_be_built_fails_its_input_alone() -> None:
    stage = Doubling()
    stage.submit([work(i) for i in range(5)])
    outcomes = {o.record.offset: o for o in stage.collect(0)}
    assert sorted(outcomes) == [0, 1, 2, 3, 4]
    assert outcomes[3].failure is not None and outcomes[3].failure.reason == "processing_error"
    assert outcomes[4].outputs[0].value == b"8.0"
    assert stage.in_flight() == 0


def test_a_built_lane_is_installed_between_batches_and_the_old_one_retires() -> None:
    stage = Doubling()
    first = stage.lane
    stage._built.put(Binding("0", "m", None, "1"), FakeLane("2"))
    assert stage.lane is first, "installed outside the runtime's thread"
    stage.submit([work(0)])
    assert stage.lane.version == "2"
    assert first.closed.wait(5), "the replaced lane was never closed"
    unused = FakeLane("3")
    stage._built.put(Binding("0", "m", None, "2"), unused)
    stage.close()
    assert unused.closed.is_set() and stage.lane.closed.is_set()
