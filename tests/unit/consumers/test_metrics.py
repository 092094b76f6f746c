from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from kafka.structs import TopicPartition

from consumers.health import MetricsServer
from consumers.metrics import VigilMetrics


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_observer_turns_events_into_bounded_metrics() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    observer.on_consumed("vigil.sensors", 5)
    observer.on_dead_letter("invalid_json", "decode")
    observer.on_batch("press-ae", 32, 0.01)
    observer.on_scored("sensors", datetime.now(UTC) - timedelta(seconds=1))
    observer.on_alert("threshold", "warning", "firing")
    observer.on_event("sensors", "late", 2)
    observer.on_lag({TopicPartition("vigil.sensors", 0): 7})
    observer.on_queue("press-ae", lambda: 3)
    value = metrics.registry.get_sample_value
    assert value("vigil_messages_consumed_total", {"topic": "vigil.sensors"}) == 5
    assert value("vigil_dead_letters_total", {"reason": "invalid_json", "stage": "decode"}) == 1
    assert value("vigil_batch_size_sum", {"model": "press-ae"}) == 32
    assert value("vigil_end_to_end_seconds_bucket", {"pipeline": "sensors", "le": "0.5"}) == 0
    assert value("vigil_end_to_end_seconds_bucket", {"pipeline": "sensors", "le": "2.5"}) == 1
    assert value("vigil_alerts_total", {"kind": "threshold", "severity": "warning", "state": "firing"}) == 1
    assert value("vigil_input_events_total", {"pipeline": "sensors", "outcome": "late"}) == 2
    assert value("vigil_consumer_lag_messages", {"topic": "vigil.sensors", "partition": "0"}) == 7
    assert value("vigil_queue_depth", {"model": "press-ae"}) == 3


def test_ready_only_with_partitions_and_a_live_loop() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    server = MetricsServer(metrics.registry, "127.0.0.1", 0, observer.alive, observer.ready).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert (status(f"{base}/healthz"), status(f"{base}/readyz")) == (503, 503)
        observer.on_poll()
        assert (status(f"{base}/healthz"), status(f"{base}/readyz")) == (200, 503)
        observer.on_assignment({TopicPartition("vigil.frames", 0)})
        assert status(f"{base}/readyz") == 200
        observer.on_assignment(set())
        assert status(f"{base}/readyz") == 503
        assert metrics.registry.get_sample_value("vigil_assigned_partitions", {"topic": "vigil.frames"}) == 0
    finally:
        server.stop()
