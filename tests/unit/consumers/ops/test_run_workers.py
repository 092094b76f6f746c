from __future__ import annotations

import pytest

from consumers.ops.workers import WORKER_ENV, WorkerSlot
from models.engine import default_torch_threads
from schemas.settings import KafkaSettings, MetricsSettings, RuntimeSettings, VigilSettings


def test_a_worker_reads_its_slot_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert WorkerSlot.from_environment() is None
    slot = WorkerSlot(1, 3, 40123)
    monkeypatch.setenv(WORKER_ENV, slot.encode())
    assert WorkerSlot.from_environment() == slot


def test_a_worker_gets_its_own_instance_ids_and_a_private_endpoint() -> None:
    settings = VigilSettings(
        kafka=KafkaSettings(group_instance_id="line-4"),
        runtime=RuntimeSettings(instance_id="plant-a"),
        metrics=MetricsSettings(host="0.0.0.0", port=9108, basic_auth_username="u", basic_auth_password="p"),
    )
    worker = WorkerSlot(1, 2, 40123).settings(settings)
    assert worker.runtime.instance_id == "plant-a-w1" and worker.kafka.group_instance_id == "line-4-w1"
    assert (worker.metrics.host, worker.metrics.port) == ("127.0.0.1", 40123)
    assert worker.metrics.basic_auth_username is None  # the supervisor's endpoint guards the set
    unset = WorkerSlot(0, 2, 40124).settings(VigilSettings())
    assert unset.runtime.instance_id is None and unset.kafka.group_instance_id is None  # host-pid differs


def test_torch_threads_are_shared_among_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_torch_threads(1) == 15
    assert default_torch_threads(1, processes=4) == 3  # 12 cores left to torch, 4 processes
    assert default_torch_threads(2, processes=4) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_torch_threads(1, processes=2) == 1
