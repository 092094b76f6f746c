from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from kafka.structs import TopicPartition

from consumers.ops.health import MetricsServer
from consumers.ops.metrics import VigilMetrics


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
    observer.on_batch("press-ae", 32, 0.01, 0.2)
    observer.on_scored("sensors", datetime.now(UTC) - timedelta(seconds=1))
    observer.on_alert("threshold", "warning", "firing")
    observer.on_event("sensors", "late", 2)
    observer.on_lag({TopicPartition("vigil.sensors", 0): 7})
    observer.on_queue("press-ae", lambda: 3)
    value = metrics.registry.get_sample_value
    assert value("vigil_messages_consumed_total", {"topic": "vigil.sensors"}) == 5
    assert value("vigil_dead_letters_total", {"reason": "invalid_json", "stage": "decode"}) == 1
    assert value("vigil_batch_size_items_sum", {"model": "press-ae"}) == 32
    assert value("vigil_queue_wait_seconds_sum", {"model": "press-ae"}) == pytest.approx(0.2)
    assert value("vigil_end_to_end_seconds_bucket", {"pipeline": "sensors", "le": "0.5"}) == 0
    assert value("vigil_end_to_end_seconds_bucket", {"pipeline": "sensors", "le": "2.5"}) == 1
    assert value("vigil_alerts_total", {"kind": "threshold", "severity": "warning", "state": "firing"}) == 1
    assert value("vigil_input_events_total", {"pipeline": "sensors", "outcome": "late"}) == 2
    assert value("vigil_consumer_lag_messages", {"topic": "vigil.sensors", "partition": "0"}) == 7
    assert value("vigil_queue_depth_items", {"model": "press-ae"}) == 3


def test_a_partition_that_moves_away_takes_its_lag_series_with_it() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    kept, moved = TopicPartition("vigil.sensors", 0), TopicPartition("vigil.sensors", 1)
    observer.on_assignment({kept, moved})
    observer.on_lag({kept: 7, moved: 4})
    observer.on_assignment({kept})  # after a rebalance: partition 1 belongs to another member
    lag = metrics.registry.get_sample_value
    assert lag("vigil_consumer_lag_messages", {"topic": "vigil.sensors", "partition": "0"}) == 7
    assert lag("vigil_consumer_lag_messages", {"topic": "vigil.sensors", "partition": "1"}) is None
    observer.on_assignment({kept, moved})  # handed back: reported again at the next commit
    observer.on_lag({moved: 2})
    assert lag("vigil_consumer_lag_messages", {"topic": "vigil.sensors", "partition": "1"}) == 2


def test_ready_only_with_partitions_and_a_live_loop() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    server = MetricsServer(metrics.registry, "127.0.0.1", 0, observer.alive, observer.not_ready).start()
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


def test_readiness_fails_with_its_reason_on_outage_stall_or_stuck_item() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer("vision")
    observer.on_poll()
    observer.on_assignment({TopicPartition("vigil.frames", 0)})
    observer.on_health(broker_reachable=True, oldest_in_flight_s=1.0, commit_age_s=1.0)
    assert observer.not_ready() is None
    observer.on_health(broker_reachable=False, oldest_in_flight_s=1.0, commit_age_s=1.0)
    assert "unreachable" in (observer.not_ready() or "")
    assert metrics.registry.get_sample_value("vigil_broker_reachable", {"pipeline": "vision"}) == 0
    observer.on_health(broker_reachable=True, oldest_in_flight_s=1.0, commit_age_s=90.0)
    assert "no commit has succeeded for 90s" in (observer.not_ready() or "")
    observer.on_health(broker_reachable=True, oldest_in_flight_s=300.0, commit_age_s=0.0)
    assert "in flight for 300s" in (observer.not_ready(stuck_item_s=120) or "")
    assert metrics.registry.get_sample_value("vigil_oldest_in_flight_seconds", {"pipeline": "vision"}) == 300


def test_readiness_fails_while_the_group_rebalances_or_partitions_restore() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer("sensors")
    observer.on_poll()
    observer.on_assignment({TopicPartition("vigil.sensors", 0), TopicPartition("vigil.sensors", 1)})
    observer.on_health(True, 0.0, 0.0, rebalancing=True)
    assert observer.not_ready() == "the consumer group is rebalancing"
    assert metrics.registry.get_sample_value("vigil_rebalancing", {"pipeline": "sensors"}) == 1
    restoring = {TopicPartition("vigil.sensors", 0): (120, 400), TopicPartition("vigil.sensors", 1): (0, 100)}
    observer.on_health(True, 0.0, 0.0, restoring=restoring)
    assert observer.not_ready() == "restoring 2 partitions (120 of 500 records)"
    assert observer.alive()  # the loop goes round: /healthz stays 200
    assert metrics.registry.get_sample_value("vigil_restoring_partitions", {"pipeline": "sensors"}) == 2
    assert (
        metrics.registry.get_sample_value("vigil_restore_records_remaining", {"pipeline": "sensors"}) == 380
    )
    observer.on_health(True, 0.0, 0.0)
    assert observer.not_ready() is None
    observer.last_poll -= 6  # the loop held in a broker call (a transaction step in an outage)
    assert "has not gone round for 5s" in (observer.not_ready() or "") and observer.alive()


def test_metrics_can_require_basic_auth_over_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base64
    import ssl
    import subprocess

    from schemas.settings import MetricsSettings

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    settings = MetricsSettings(
        basic_auth_username="prometheus",
        basic_auth_password="s3cret",  # type: ignore[arg-type]
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    server = MetricsServer(
        metrics.registry, "127.0.0.1", 0, observer.alive, observer.not_ready, settings
    ).start()
    context = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"

    def get(path: str, credentials: str | None = None) -> int:
        request = urllib.request.Request(base + path)
        if credentials:
            request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    try:
        assert get("/metrics") == 401
        assert get("/metrics", "prometheus:wrong") == 401
        assert get("/metrics", "prometheus:s3cret") == 200
        assert get("/healthz") == 503  # open to probes without credentials (no loop yet)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
            plain_http_served = True
        except (urllib.error.URLError, ConnectionError, OSError):
            plain_http_served = False
        assert not plain_http_served
    finally:
        server.stop()


def test_the_registry_carries_the_process_series() -> None:
    value = VigilMetrics(gpu=False).registry.get_sample_value
    assert value("process_resident_memory_bytes") > 0
    assert value("process_cpu_seconds_total") is not None
    assert value("python_info", {"implementation": "CPython", **_python_version()}) == 1


def _python_version() -> dict[str, str]:
    import platform

    major, minor, patch = platform.python_version_tuple()
    return {"major": major, "minor": minor, "patchlevel": patch, "version": platform.python_version()}


def test_a_model_switch_is_counted_and_only_the_new_version_is_shown() -> None:
    metrics = VigilMetrics(gpu=False)
    observer = metrics.observer()
    observer.on_model("vision", "tiles", "3", "cpu")
    observer.on_model("vision", "tiles", "4", "cpu")  # the new lane, warmed up before the switch
    observer.on_model_switch("vision", "tiles", "3", "4", "switched")
    observer.on_model_switch("vision", "tiles", "4", "5", "failed")
    value = metrics.registry.get_sample_value
    info = {"pipeline": "vision", "name": "tiles", "device": "cpu", "engine": "torch"}
    assert value("vigil_model_info", {**info, "version": "3"}) is None
    assert value("vigil_model_info", {**info, "version": "4"}) == 1
    switches = {"pipeline": "vision", "name": "tiles"}
    assert value("vigil_model_switches_total", {**switches, "outcome": "switched"}) == 1
    assert value("vigil_model_switches_total", {**switches, "outcome": "failed"}) == 1
