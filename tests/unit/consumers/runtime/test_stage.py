from __future__ import annotations

import threading
from datetime import UTC, datetime

from consumers.runtime.records import InboundRecord, Outcome, Output, Work
from consumers.runtime.stage import BufferedStage, SyncStage
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


def test_inputs_finished_from_many_threads_are_each_collected_once_and_abandoned_ones_stop_counting() -> None:
    class Threaded(BufferedStage):
        def _admit(self, batch):
            threads = [threading.Thread(target=self._one, args=(w,)) for w in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        def _one(self, item: Work) -> None:
            if item.record.offset % 10 == 9:
                self.abandon()  # e.g. a fetch cut short by shutdown
            elif item.record.offset % 2:
                self._fail(item, "fetch_failed", OSError("gone"))
            else:
                self._finish(Outcome(item.record))

    stage = Threaded("threads")
    stage.submit([work(i) for i in range(200)])
    outcomes = stage.collect(0)
    assert sorted(o.record.offset for o in outcomes) == [i for i in range(200) if i % 10 != 9]
    assert {o.failure.reason for o in outcomes if o.failure} == {"fetch_failed"}
    assert all(o.failure.stage == "threads" for o in outcomes if o.failure)
    assert stage.in_flight() == 0 and stage.collect(0) == []
