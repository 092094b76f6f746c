"""The sensor stage's steps on their own: routing, windows, rule transitions, and the history
rebuild that replays readings through the same admission without counting them twice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import numpy as np

from consumers.pipelines.sensors.admission import Admission, Admitted
from consumers.pipelines.sensors.intake import model_value_limits
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.rebuild import rebuild
from consumers.pipelines.sensors.routing import Router
from consumers.pipelines.sensors.rules import RuleState, stale_transitions, value_transitions
from consumers.pipelines.sensors.tally import Tally
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, InboundRecord, Work
from models.alert_policy import AlertPolicy
from schemas.messages import Alert, InferenceResult, SensorReading
from schemas.model_card import SeriesInputSpec
from schemas.settings import SensorModelBinding, SensorRule, SensorSettings, VigilSettings

HOT = SensorRule(name="hot", kind="threshold", channel="temp_c", sensor_kind="machine", limit=80.0, n=1, m=1)
SILENT = SensorRule(name="silent", kind="stale", for_s=10.0)
T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_the_first_matching_binding_routes_and_stale_rules_never_ride_on_a_reading() -> None:
    bindings = [
        SensorModelBinding(assets="press-*", sensor_kind="machine", model="presses"),
        SensorModelBinding(assets="*", sensor_kind="machine", model="machines"),
    ]
    router = Router(bindings, ["presses-lane", "machines-lane"], [HOT, SILENT])
    assert router.route("press-1", "machine").lane == "presses-lane"
    assert router.route("fan-1", "machine").lane == "machines-lane"
    assert router.route("aq-1", "air_quality").lane is None
    assert router.route("fan-1", "machine").rules == [HOT]
    assert router.route("aq-1", "air_quality").rules == []
    assert router.route("fan-1", "machine") is router.route("fan-1", "machine")  # matched once


def policies(*rules: SensorRule) -> dict[str, AlertPolicy]:
    return {rule.name: AlertPolicy([rule.policy_rule()]) for rule in rules}


def reading_work(asset: str, seconds: float, values: dict[str, float], offset: int = 0) -> Work:
    reading = SensorReading(
        asset_id=asset,
        sensor_id=asset,
        kind="machine",
        event_time=T0 + timedelta(seconds=seconds),
        values=values,
    )
    return Work(InboundRecord("sensors", 0, offset, asset.encode(), None, (), None), reading, T0)


def admitting(
    lane: Any, lateness_s: float = 0.0, staggered: bool = True
) -> tuple[Admission, PartitionState, Counter[str]]:
    """An admission routing every machine to ``lane`` (None: rules only), a state, and its counts."""
    sensors = SensorSettings(max_past_s=None, lateness_s=lateness_s, stagger_windows=staggered)
    bindings = [SensorModelBinding(assets="*", model="m")] if lane is not None else []
    router = Router(bindings, [lane] if lane is not None else [], [])
    admission = Admission(sensors, router, SensorOutputs(VigilSettings(sensors=sensors)))
    counts: Counter[str] = Counter()
    return admission, PartitionState(model_policies={}, rule_policies={}), counts


def test_an_asset_without_a_model_keeps_no_window_but_late_and_duplicate_samples_are_named() -> None:
    admission, state, counts = admitting(None)
    works = [
        reading_work("aq-1", t, {"pm25": 1.0}, offset) for offset, t in enumerate((10.0, 10.0, 9.0, 11.0))
    ]
    admitted = admission.admit(works, state, Tally(RuntimeObserver(), counts))
    outcomes = [
        [InferenceResult.from_json_bytes(o.value).outcome for o in a.outputs]
        for a in admitted
        if isinstance(a, Admitted)
    ]
    assert outcomes == [[], ["duplicate"], ["late"], []]
    assert counts == Counter(duplicate=1, late=1) and state.windows == {}


def test_a_model_lanes_window_reorders_within_lateness_and_hands_on_windows_once_they_are_settled() -> None:
    spec = SeriesInputSpec(channels=["a"], window=3, stride=1, sample_period_s=1.0, mean=[0.0], std=[1.0])
    lane: Any = SimpleNamespace(spec=spec, channels=("a",), value_limits=np.full(1, 1e30))
    admission, state, counts = admitting(lane, lateness_s=2.0)
    seen = []
    for offset, t in enumerate((1.0, 2.0, 4.0, 3.0, 5.0, 6.0, 2.0)):
        before = counts.copy()
        [admitted] = admission.admit(
            [reading_work("m-1", t, {"a": t}, offset)], state, Tally(RuntimeObserver(), counts)
        )
        assert isinstance(admitted, Admitted)
        seen.append(
            (
                t,
                sorted((counts - before).elements()),
                [w.window.values[:, 0].tolist() for w in admitted.windows],
            )
        )
    assert seen == [
        (1.0, [], []),
        (2.0, [], []),
        (4.0, [], []),
        (3.0, ["out_of_order"], []),  # put back in order: within the 2 s lateness
        (5.0, [], [[1.0, 2.0, 3.0]]),  # settled once nothing can come before it
        (6.0, [], [[2.0, 3.0, 4.0]]),
        (2.0, ["late"], []),
    ]


def test_assets_reporting_on_the_same_ticks_complete_their_windows_on_ticks_of_their_own() -> None:
    spec = SeriesInputSpec(channels=["a"], window=8, stride=4, sample_period_s=1.0, mean=[0.0], std=[1.0])
    lane: Any = SimpleNamespace(spec=spec, channels=("a",), value_limits=np.full(1, 1e30))
    assets = [f"m-{n}" for n in range(40)]

    def due_ticks(staggered: bool) -> dict[str, list[float]]:
        admission, state, counts = admitting(lane, staggered=staggered)
        due: dict[str, list[float]] = {asset: [] for asset in assets}
        for t in range(24):
            works = [reading_work(asset, float(t), {"a": 1.0}) for asset in assets]
            for admitted in admission.admit(works, state, Tally(RuntimeObserver(), counts)):
                assert isinstance(admitted, Admitted)
                for item in admitted.windows:
                    due[item.asset_id].append(item.window.end_s - T0.timestamp())
        return due

    aligned, staggered = due_ticks(False), due_ticks(True)
    assert {tuple(ticks) for ticks in aligned.values()} == {(7.0, 11.0, 15.0, 19.0, 23.0)}
    assert {int(ticks[0]) % 4 for ticks in staggered.values()} == {0, 1, 2, 3}
    for ticks in staggered.values():
        assert len(ticks) >= 4 and all(b - a == 4.0 for a, b in pairwise(ticks))


def test_value_rules_fire_on_new_samples_only_and_stale_rules_on_the_partition_clock() -> None:
    memory, rules = RuleState(), policies(HOT, SILENT)
    fired = value_transitions(memory, rules, [HOT], "fan-1", 100.0, {"temp_c": 90.0})
    assert [(t.rule.name, t.state) for t in fired] == [("hot", "firing")]
    memory.remember("fan-1", "machine", 100.0, {"temp_c": 90.0})
    assert value_transitions(memory, rules, [HOT], "fan-1", 99.0, {"temp_c": 10.0}) == []  # older: no change
    resolved = value_transitions(memory, rules, [HOT], "fan-1", 101.0, {"temp_c": 10.0})
    assert [t.state for t in resolved] == ["resolved"]
    assert stale_transitions(memory, rules, [HOT, SILENT], 105.0) == []
    assert [(t.source_id, t.state) for t in stale_transitions(memory, rules, [SILENT], 111.0)] == [
        ("fan-1", "firing")
    ]


class Recording(RuntimeObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_alert(self, kind: str, severity: str, state: str) -> None:
        self.events.append(("alert", kind, state))

    def on_event(self, stage: str, outcome: str, count: int) -> None:
        self.events.append(("event", outcome))


def readings_record(offset: int, value: float, seconds: int) -> InboundRecord:
    reading = SensorReading(
        asset_id="fan-1",
        sensor_id="t",
        kind="machine",
        event_time=T0 + timedelta(seconds=seconds),
        values={"temp_c": value},
    )
    return InboundRecord("sensors", 0, offset, b"fan-1", reading.to_json_bytes(), (), None)


def test_a_rebuild_replays_history_into_state_silently_and_the_live_stream_carries_on_from_it() -> None:
    sensors = SensorSettings(rules=[HOT], max_past_s=None)
    outputs = SensorOutputs(VigilSettings(sensors=sensors))
    admission = Admission(sensors, Router([], [], sensors.rules), outputs)
    history = [readings_record(i, 70.0 if i < 3 else 95.0, i) for i in range(6)]  # hot from offset 3

    rebuilt = PartitionState(model_policies={}, rule_policies=policies(HOT))
    assert rebuild(rebuilt, history, admission, outputs, 1 << 20) == 6
    live_observer = Recording()
    counts: Counter[str] = Counter()
    tally = Tally(live_observer, counts)
    nxt = readings_record(6, 96.0, 6)
    work = Work(nxt, SensorReading.from_json_bytes(nxt.value or b""), datetime.now(UTC))
    [continued] = admission.admit([work], rebuilt, tally)
    assert isinstance(continued, Admitted) and continued.outputs == []  # already firing: no second alert

    fresh = PartitionState(model_policies={}, rule_policies=policies(HOT))
    [anew] = admission.admit([work], fresh, tally)
    assert isinstance(anew, Admitted)
    alerts = [Alert.from_json_bytes(o.value) for o in anew.outputs]
    assert [(a.rule, a.state) for a in alerts] == [
        ("hot", "firing")
    ]  # without the rebuild it would fire again
    assert live_observer.events == [("alert", "threshold", "firing")] and not counts


def test_a_value_a_float32_window_cannot_hold_is_refused_and_never_poisons_a_later_reading() -> None:
    spec = SeriesInputSpec(channels=["a"], window=3, stride=1, sample_period_s=1.0, mean=[5.0], std=[0.01])
    lane: Any = SimpleNamespace(spec=spec, channels=("a",), value_limits=model_value_limits([5.0], [0.01]))
    admission, state, counts = admitting(lane)
    tally = Tally(RuntimeObserver(), counts)
    values = [1.0, 2.0, 1e308, 1e37, 3.0, 4.0]  # 1e37 is finite in float32, not once normalised
    admitted = [
        admission.admit([reading_work("m-1", t, {"a": v}, t)], state, tally)[0] for t, v in enumerate(values)
    ]
    refused = [a for a in admitted if isinstance(a, Failure)]
    assert [f.reason for f in refused] == ["value_out_of_range", "value_out_of_range"]
    assert "float32" in refused[0].error_message
    windows = [w.window.values for a in admitted if isinstance(a, Admitted) for w in a.windows]
    # the refused samples left a gap, filled from the valid samples on either side
    assert len(windows) == 4
    assert all(np.isfinite(w).all() and w.min() >= 1.0 and w.max() <= 4.0 for w in windows)
