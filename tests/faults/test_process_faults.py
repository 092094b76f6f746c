"""Kill the runtime process and check, with an oracle, that no input is lost.

The oracle: the pass-through stage's output for an input depends only on that input, so
every input offset must have a result carrying that offset as evidence; the verifier reads
inputs, outputs, dead letters and committed offsets from the broker itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from consumers.topics import create_topics
from schemas.messages import InferenceResult
from schemas.settings import VigilSettings
from tests import sample_messages as samples
from tests.kafka_helpers import (
    committed_offsets,
    end_offsets,
    produce,
    read_until_quiet,
    unique_settings,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]
INPUTS = 300


def start_worker(settings: VigilSettings, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.worker", settings.model_dump_json(), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(worker: subprocess.Popen[str], timeout_s: float) -> str:
    """Wait for ``worker`` to exit; on timeout kill it and fail with what it printed."""
    try:
        output, _ = worker.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
        pytest.fail(f"worker did not exit within {timeout_s}s; its output:\n{output[-6000:]}")
    return output


def produce_inputs(settings: VigilSettings) -> None:
    create_topics(settings)
    readings = [samples.reading(i) for i in range(INPUTS)]
    produce(
        settings.kafka.bootstrap_servers,
        settings.topics.sensors.name,
        [(r.asset_id.encode(), r.to_json_bytes()) for r in readings],
    )


def result_counts(settings: VigilSettings) -> Counter[tuple[int, int]]:
    records = read_until_quiet(settings.kafka.bootstrap_servers, settings.topics.inferences.name)
    results = [InferenceResult.from_json_bytes(r.value) for r in records]
    return Counter((r.evidence.partition, r.evidence.offset) for r in results)


def input_coordinates(settings: VigilSettings) -> set[tuple[int, int]]:
    ends = end_offsets(settings.kafka.bootstrap_servers, settings.topics.sensors.name)
    return {(tp.partition, o) for tp, end in ends.items() for o in range(end)}


def wait_committed_to_end(settings: VigilSettings) -> None:
    ends = end_offsets(settings.kafka.bootstrap_servers, settings.topics.sensors.name)
    wait_for(
        lambda: committed_offsets(settings.kafka.bootstrap_servers, settings.kafka.group_id) == ends,
        timeout_s=90,
        what="every input offset committed",
    )


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
