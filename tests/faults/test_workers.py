"""``vigil run --workers 2`` as an operator runs it: two members of one group, one endpoint."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.ops.topics import create_topics
from tests.faults.drill import get
from tests.faults.processes import (
    INPUTS,
    ROOT,
    finish,
    input_coordinates,
    produce_inputs,
    result_counts,
    wait_committed_to_end,
)
from tests.kafka_helpers import unique_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _by_worker(port: int, series: str) -> dict[str, float]:
    """``series`` summed per ``worker`` label, from the supervisor's endpoint."""
    _status, text = get(port, "/metrics")
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == series:
                worker = sample.labels["worker"]
                totals[worker] = totals.get(worker, 0.0) + sample.value
    return totals


def test_two_workers_share_the_partitions_behind_one_endpoint_and_drain_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = unique_settings(kafka_bootstrap, partitions=2, instance_id="plant-a")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = json.loads(settings.model_dump_json())
    document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    config = tmp_path / "vigil.yaml"
    config.write_text(json.dumps(document))
    create_topics(settings)
    service = subprocess.Popen(
        [sys.executable, "-m", "consumers.ops.cli", "run", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 120, interval_s=0.5, what="both workers ready")
        assigned = wait_for(
            lambda: (
                (a := _by_worker(port, "vigil_assigned_partitions")) and len(a) == 2 and min(a.values()) and a
            ),
            60,
            interval_s=0.5,
            what="the group to give each worker partitions",
        )
        assert sum(assigned.values()) == 4, assigned  # 2 topics of 2 partitions, shared by Kafka
        produce_inputs(settings)
        wait_committed_to_end(settings)
        consumed = wait_for(
            lambda: (
                (c := _by_worker(port, "vigil_messages_consumed_total")) and sum(c.values()) >= INPUTS and c
            ),
            60,
            interval_s=0.5,
            what="the gathered metrics to count every input",
        )
        # Incremental (sticky) assignment shares partitions by count across the pipeline's two
        # input topics: the worker holding the sensor partitions read every reading.
        assert sum(consumed.values()) >= INPUTS, consumed
        service.send_signal(signal.SIGTERM)
        output = finish(service, 90)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, output
    counts = result_counts(settings)
    assert set(counts) == input_coordinates(settings), "every input has its output"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # an exited orphan may wait for its new parent to reap it


def test_workers_of_a_supervisor_killed_outright_drain_and_stop(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = unique_settings(kafka_bootstrap)
    create_topics(settings)
    config = tmp_path / "vigil.yaml"
    document = json.loads(settings.model_dump_json())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        document["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": probe.getsockname()[1]}
    config.write_text(json.dumps(document))
    port = document["metrics"]["port"]
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "consumers.ops.cli", "run", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 120, interval_s=0.5, what="both workers ready")
        workers = [int(pid) for pid in children.read_text().split()]
        assert len(workers) == 2
        supervisor.kill()
        supervisor.wait(10)
        wait_for(
            lambda: not any(map(_running, workers)), 60, interval_s=0.5, what="the orphaned workers to stop"
        )
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
