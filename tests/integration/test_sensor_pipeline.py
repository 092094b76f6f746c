"""Sensor readings → the sensor pipeline on a real broker → window results, alerts, dead letters."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.ops.topics import create_topics
from consumers.pipelines.sensors.scenarios import machine_readings
from consumers.pipelines.sensors.stage import SensorStage
from consumers.runtime.loop import StreamRuntime
from models.sensors.windowing import stagger
from schemas.messages import Alert, DeadLetter, InferenceResult, SampleBlock, SensorReading
from schemas.settings import (
    SensorModelBinding,
    TopicSpec,
    VigilSettings,
)
from tests.integration.runtime_harness import running
from tests.kafka_helpers import committed_offsets, end_offsets, read_until_quiet, wait_for
from tests.sensor_fixtures import PLANT, SensorModels, publish, publish_readings, scenario, sensor_settings

pytestmark = pytest.mark.integration


def run_to_end(settings: VigilSettings) -> SensorStage:
    """Run the sensor pipeline until every input offset is committed; return its stage."""
    stage = SensorStage(settings)
    runtime = StreamRuntime(settings, {settings.topics.sensors.name: SensorReading}, stage)
    ends = {
        tp: end
        for tp, end in end_offsets(settings.kafka.bootstrap_servers, settings.topics.sensors.name).items()
        if end
    }
    with running(runtime):
        wait_for(
            lambda: committed_offsets(settings.kafka.bootstrap_servers, settings.kafka.group_id) == ends,
            120,
            what="every reading committed",
        )
    return stage


def alerts_of(settings: VigilSettings) -> list[Alert]:
    records = read_until_quiet(settings.kafka.bootstrap_servers, settings.topics.alerts.name)
    return [Alert.from_json_bytes(r.value) for r in records]


def test_the_plant_and_the_city_raise_the_alerts_operators_need(
    kafka_bootstrap: str, sensor_models: SensorModels
) -> None:
    settings = sensor_settings(kafka_bootstrap, sensor_models)
    create_topics(settings)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    publish_readings(kafka_bootstrap, settings, scenario(start))

    run_to_end(settings)
    alerts = alerts_of(settings)
    by_source = {
        source: [(a.kind, a.rule, a.state) for a in alerts if a.source_id == source]
        for source in ("machine-1", "machine-2", "aq-1", "aq-2", "aq-3")
    }

    # The degrading machine: an anomaly alert after the drift began, a resolve after the repair.
    machine = [a for a in alerts if a.source_id == "machine-1"]
    assert [a.state for a in machine][:1] == ["firing"] and machine[-1].state == "resolved", by_source
    fault_at, repaired_at = start + timedelta(seconds=200), start + timedelta(seconds=380)
    assert machine[0].evidence.window_end is not None and machine[0].evidence.window_end >= fault_at
    assert machine[-1].evidence.window_end is not None and machine[-1].evidence.window_end >= repaired_at
    assert machine[0].kind == "sensor_anomaly" and machine[0].model is not None
    assert set(machine[0].explanation) == {"temp_c", "vibration_mm_s"}
    assert by_source["machine-2"] == []
    # The city: one threshold alert for the whole episode (not one per reading), then its resolve.
    assert by_source["machine-1"] == [
        ("sensor_anomaly", "machine-anomaly", "firing"),
        ("sensor_anomaly", "machine-anomaly", "resolved"),
    ]
    assert by_source["aq-1"] == [
        ("threshold", "pm25-10min", "firing"),
        ("threshold", "pm25-10min", "resolved"),
    ]
    firing = next(a for a in alerts if a.source_id == "aq-1")
    assert firing.timestamps.captured_at >= start + timedelta(seconds=(30 * 10) + 600)
    # The silent sensor: a stale-source alert.
    assert by_source["aq-2"] == [("stale_source", "silent", "firing")]
    assert by_source["aq-3"] == []
    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    windows = Counter(r.source_id for r in results if r.outcome == "scored")
    # A window every 8 samples once 32 are in, at samples aligned to event time and the
    # asset's own phase.
    for machine_id in ("machine-1", "machine-2"):
        phase = stagger(machine_id, 8)
        due = sum(1 for i in range(31, 560) if (int(start.timestamp()) + i + 1 + phase) % 8 == 0)
        assert windows[machine_id] == due, machine_id


@pytest.mark.parametrize(
    ("restored_from", "delivery"),
    [
        ("changelog", "at_least_once"),
        ("changelog", "exactly_once"),
        ("changelog-commit-lost", "at_least_once"),
        ("input", "at_least_once"),
    ],
)
def test_a_restart_in_mid_stream_gives_the_same_alerts(
    kafka_bootstrap: str, sensor_models: SensorModels, restored_from: str, delivery: str
) -> None:
    restarted = sensor_settings(kafka_bootstrap, sensor_models)
    runtime = restarted.runtime.model_copy(update={"delivery": delivery})
    restarted = restarted.model_copy(update={"runtime": runtime})
    create_topics(restarted)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    publish_readings(kafka_bootstrap, restarted, scenario(start, first=True))
    first_stage = run_to_end(restarted)
    assert first_stage.counts["replayed"] == 0
    publish_readings(kafka_bootstrap, restarted, scenario(start, first=False))
    if restored_from == "input":  # as after a crash: no hand-off to restore from
        state = TopicSpec(name=restarted.topics.sensor_state.name + "-empty", partitions=2)
        restarted = restarted.model_copy(
            update={"topics": restarted.topics.model_copy(update={"sensor_state": state})}
        )
        create_topics(restarted, [state])
    if restored_from == "changelog-commit-lost":
        lose_last_commit(restarted, LOST)
    second_stage = run_to_end(restarted)
    held = len({tp for tp, end in end_offsets(kafka_bootstrap, restarted.topics.sensors.name).items() if end})
    assert second_stage.counts[f"restored_from_{restored_from.split('-')[0]}"] == held
    # records the old owner processed but could not commit complete without being processed again
    assert second_stage.counts["done_by_previous_owner"] == (LOST * held if "lost" in restored_from else 0)
    # handed over: nothing read back; read back: the windows and alert state were rebuilt
    assert (second_stage.counts["replayed"] > 0) == (restored_from == "input")

    # The same input, read by one uninterrupted consumer, into separate output topics.
    topics = restarted.topics.model_copy(
        update={
            "alerts": TopicSpec(name=restarted.topics.alerts.name + "-once", partitions=1),
            "inferences": TopicSpec(name=restarted.topics.inferences.name + "-once", partitions=1),
        }
    )
    kafka = restarted.kafka.model_copy(update={"group_id": restarted.kafka.group_id + "-once"})
    uninterrupted = restarted.model_copy(update={"topics": topics, "kafka": kafka})
    create_topics(uninterrupted)
    run_to_end(uninterrupted)

    def summary(alerts: list[Alert]) -> set[tuple[str, str, str, int, int]]:
        return {(a.source_id, a.rule, a.state, a.evidence.partition, a.evidence.offset) for a in alerts}

    once = alerts_of(uninterrupted)
    assert {a.source_id for a in once} >= {"machine-1", "aq-1", "aq-2"}
    alerts = alerts_of(restarted)
    assert summary(alerts) == summary(once) and len(alerts) == len(once)  # none lost, none repeated


LOST = 5
"""Records per partition whose commit the old owner lost to a rebalance, in the test above."""


def lose_last_commit(settings: VigilSettings, lost: int) -> None:
    """As when the old owner's last commit lost the race with a rebalance: the group's offsets
    ``lost`` records back, and its hand-off saying so (its outputs of those records exist)."""
    bootstrap, state = settings.kafka.bootstrap_servers, settings.topics.sensor_state.name
    markers = {}
    for record in read_until_quiet(bootstrap, state):
        name = (record.key or b"").decode()
        if name.count("/") == 1:
            markers[name] = (record.partition, json.loads(record.value))
    rewound = {}
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for name, (partition, marker) in markers.items():
        marker["committed"] = marker["offset"] - lost
        producer.send(state, key=name.encode(), value=json.dumps(marker).encode(), partition=partition)
        topic, number = name.split("/")
        rewound[TopicPartition(topic, int(number))] = OffsetAndMetadata(marker["committed"], "", -1)
    producer.flush(30)
    producer.close()
    group = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.kafka.group_id)
    group.commit(rewound)
    group.close()


def test_bad_readings_each_get_their_defined_outcome(
    kafka_bootstrap: str, sensor_models: SensorModels
) -> None:
    settings = sensor_settings(kafka_bootstrap, sensor_models)
    create_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    base = machine_readings("machine-9", now - timedelta(minutes=5), 6, seed=3)

    def variant(reading: SensorReading, **update: object) -> bytes:
        return reading.model_copy(update=update).to_json_bytes()

    good = base[0].to_json_bytes()
    raw = json.loads(good)
    items: list[tuple[str, bytes]] = [
        ("good", good),
        ("unknown_channel", variant(base[1], values={**base[1].values, "humidity": 40.0})),
        ("invalid_value", variant(base[1], values={"temp_c": 61.0})),
        ("out_of_time_range", variant(base[1], event_time=now + timedelta(days=1))),
        ("out_of_time_range", variant(base[1], event_time=now - timedelta(days=30))),
        (  # a block whose second sample lies ~11.6 days on: accepted, it would make every later reading late
            "invalid_block",
            variant(
                base[3],
                values=None,
                block=SampleBlock(
                    sample_rate_hz=1e-6, channels={"temp_c": [60.0, 60.0], "vibration_mm_s": [2.0, 2.0]}
                ),
            ),
        ),
        (
            "schema_violation",
            json.dumps({**raw, "values": {"temp_c": float("nan"), "vibration_mm_s": 2.0}}).encode(),
        ),
        (
            "schema_violation",
            json.dumps({**raw, "values": {"temp_c": "hot", "vibration_mm_s": 2.0}}).encode(),
        ),
        ("duplicate", good),
        ("good", base[5].to_json_bytes()),
        ("late", base[2].to_json_bytes()),
    ]
    publish(
        kafka_bootstrap, settings.topics.sensors.name, [(PLANT, b"machine-9", value) for _, value in items]
    )

    run_to_end(settings)
    letters = [
        DeadLetter.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.dlq.name)
    ]
    expected_letters = [
        (kind, offset) for offset, (kind, _) in enumerate(items) if kind not in ("good", "duplicate", "late")
    ]
    assert sorted((d.reason, d.origin_offset) for d in letters) == sorted(expected_letters)
    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    assert sorted((r.outcome, r.evidence.offset) for r in results) == [("duplicate", 8), ("late", 10)]


def test_a_machine_running_out_of_life_raises_a_low_rul_alert_naming_channels(
    kafka_bootstrap: str, sensor_models: SensorModels
) -> None:
    settings = sensor_settings(kafka_bootstrap, sensor_models)
    binding = SensorModelBinding(assets="pump-*", sensor_kind="machine", model=sensor_models.rul)
    sensors = settings.sensors.model_copy(update={"models": [binding], "alert_rules": [], "rules": []})
    settings = settings.model_copy(update={"sensors": sensors})
    create_topics(settings)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=8)
    failing = machine_readings("pump-7", start, 400, seed=77, fault=(200, 200, 400), period_s=60.0)
    publish_readings(kafka_bootstrap, settings, [(PLANT, r) for r in failing])

    run_to_end(settings)
    alerts = alerts_of(settings)
    assert [(a.kind, a.state) for a in alerts][:1] == [("low_rul", "firing")], alerts
    firing = alerts[0]
    life_left_h = (start + timedelta(minutes=399) - firing.evidence.window_end).total_seconds() / 3600  # type: ignore[operator]
    assert life_left_h < 3.0  # it fires in the last hours, not while the machine is healthy
    assert set(firing.explanation) == {"temp_c", "vibration_mm_s"} and sum(firing.explanation.values()) > 0.99
    assert "remaining useful life of pump-7" in firing.message
