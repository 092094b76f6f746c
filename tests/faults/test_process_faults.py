"""Kill the runtime process and check, with an oracle, that no input is lost.

The oracle: the pass-through stage's output for an input depends only on that input, so
every input offset must have a result carrying that offset as evidence; the verifier reads
inputs, outputs, dead letters and committed offsets from the broker itself.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.processes import (
    INPUTS,
    finish,
    input_coordinates,
    produce_inputs,
    result_counts,
    start_worker,
    wait_committed_to_end,
)
from tests.kafka_helpers import committed_offsets, end_offsets, unique_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_sigkill_between_produce_and_commit_loses_nothing(kafka_bootstrap: str, delivery: str) -> None:
    settings = unique_settings(kafka_bootstrap, delivery=delivery, commit_interval_ms=300)
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"max_poll_records": 50, "group_instance_id": "worker-0"}
            )
        }
    )
    produce_inputs(settings)

    no_timed_commits = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"commit_interval_ms": 3_600_000})}
    )
    crashed = start_worker(no_timed_commits, "--kill-before-commit-after", "100")
    output = finish(crashed, 120)
    assert crashed.returncode == -signal.SIGKILL, output
    assert "KILLING" in output
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id)
    assert sum(committed.values()) == 0, "nothing may be committed past what the crash interrupted"
    if delivery == "at_least_once":
        assert sum(result_counts(settings).values()) >= 100, "outputs were acknowledged before the kill"
    else:
        assert sum(result_counts(settings).values()) == 0, "an aborted transaction is invisible"

    restarted = start_worker(settings)
    try:
        wait_committed_to_end(settings)
    finally:
        restarted.send_signal(signal.SIGTERM)
        finish(restarted, 60)
    counts = result_counts(settings)
    assert set(counts) == input_coordinates(settings), "every input has its output"
    if delivery == "at_least_once":
        assert max(counts.values()) >= 2, "the inputs processed before the kill were re-processed"
    else:
        assert max(counts.values()) == 1, "a read_committed reader sees each output once"


def test_sigterm_drains_commits_and_exits_zero(kafka_bootstrap: str) -> None:
    # A commit interval far beyond the test: only the shutdown commit can commit.
    settings = unique_settings(kafka_bootstrap, commit_interval_ms=3_600_000)
    produce_inputs(settings)
    worker = start_worker(settings)
    try:
        wait_for(
            lambda: sum(result_counts(settings).values()) >= INPUTS,
            timeout_s=90,
            interval_s=0.5,
            what="every input processed",
        )
        assert sum(committed_offsets(kafka_bootstrap, settings.kafka.group_id).values()) == 0
        worker.send_signal(signal.SIGTERM)
        output = finish(worker, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id) == end_offsets(
        kafka_bootstrap, settings.topics.sensors.name
    )
