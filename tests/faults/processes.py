"""Worker processes for fault tests and the oracle that checks their outputs on the broker."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from consumers.ops.topics import create_topics
from schemas.messages import InferenceResult
from schemas.settings import VigilSettings
from tests import sample_messages as samples
from tests.kafka_helpers import committed_offsets, end_offsets, produce, read_until_quiet, wait_for

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


def start_vigil_run(
    config: Path, pipelines: str, root: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``vigil run --config CONFIG --pipeline PIPELINES`` as an operator starts it, from the
    checkout at ``root``, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumers.ops.cli", "run", "--config", str(config), "--pipeline", pipelines],
        cwd=root,
        env=env,
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
