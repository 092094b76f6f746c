from __future__ import annotations

from datetime import UTC, datetime

from consumers.runtime.records import InboundRecord, Outcome, Output, Work
from consumers.runtime.stage import SyncStage
from tests import sample_messages as samples


def work(i: int) -> Work:
    return Work(InboundRecord("t", 0, i, None, b"{}"), samples.reading(i), datetime.now(UTC))


def test_a_bad_item_fails_alone() -> None:
    def process(batch):
        if any(w.record.offset == 2 for w in batch):
            raise ValueError("item 2 is cursed")
        return [Outcome(w.record, (Output("out", None, b"ok"),)) for w in batch]

    stage = SyncStage("test", process)
    stage.submit([work(i) for i in range(5)])
    assert stage.in_flight() == 5
    outcomes = {o.record.offset: o for o in stage.collect(0)}
    assert sorted(outcomes) == [0, 1, 2, 3, 4]
    assert outcomes[2].failure is not None and outcomes[2].failure.reason == "processing_error"
    assert "cursed" in outcomes[2].failure.error_message
    assert all(outcomes[i].failure is None for i in (0, 1, 3, 4))
    assert stage.in_flight() == 0
