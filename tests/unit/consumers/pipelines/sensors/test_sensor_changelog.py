"""Handing sensor state over through the changelog: a state written by one member and read by
the next carries on exactly as the original would, and a hand-off that does not fit the resume
point, the models or is cut short is never installed."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np

from consumers.pipelines.sensors.admission import Admission, Admitted
from consumers.pipelines.sensors.changelog import Handoff, handoff_outputs
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.routing import Router
from consumers.pipelines.sensors.tally import Tally
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import InboundRecord, Settled, Work
from models.alert_policy import AlertPolicy
from schemas.messages import SensorReading
from schemas.model_card import SeriesInputSpec
from schemas.settings import AlertRule, SensorModelBinding, SensorRule, SensorSettings, VigilSettings

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
HOT = SensorRule(name="hot", kind="threshold", channel="a", limit=5.0, for_s=3.0, n=1, m=1)
JUMP = SensorRule(name="jump", kind="rate", channel="a", limit=4.0, n=2, m=3, cooldown_s=30.0)
KEY = ("sensors", 1)


def pipeline() -> tuple[Admission, SensorSettings]:
    """An admission routing every asset to a window lane of 6 samples, with two value rules."""
    spec = SeriesInputSpec(channels=["a"], window=6, stride=2, sample_period_s=1.0, mean=[0.0], std=[1.0])
    lane: Any = SimpleNamespace(spec=spec, channels=("a",), value_limits=np.full(1, 1e30))
    sensors = SensorSettings(max_past_s=None, lateness_s=2.0, rules=[HOT, JUMP])
    router = Router([SensorModelBinding(assets="*", model="m")], [lane], sensors.rules)
    return Admission(sensors, router, SensorOutputs(VigilSettings(sensors=sensors))), sensors


def fresh(sensors: SensorSettings) -> PartitionState:
    model = AlertPolicy([AlertRule(name="m-anomaly", hi=0.5, n=2, m=4, cooldown_s=10.0)])
    return PartitionState(
        model_policies={"m": model},
        rule_policies={rule.name: AlertPolicy([rule.policy_rule()]) for rule in sensors.rules},
    )


def work(asset: str, seconds: float, value: float, offset: int) -> Work:
    reading = SensorReading(
        asset_id=asset,
        sensor_id="s",
        kind="machine",
        event_time=T0 + timedelta(seconds=seconds),
        values={"a": value},
    )
    return Work(InboundRecord(*KEY, offset, asset.encode(), None, (), None), reading, T0)


def feed(admission: Admission, state: PartitionState, works: list[Work]) -> list[Any]:
    """What admitting ``works`` one at a time gives: alerts and windows, in order."""
    seen: list[Any] = []
    for item in works:
        [admitted] = admission.admit([item], state, Tally(RuntimeObserver(), Counter()))
        assert isinstance(admitted, Admitted)
        seen.append([{**json.loads(o.value), "timestamps": None} for o in admitted.outputs])
        seen.append([(w.asset_id, w.window.values.tolist(), w.window.end_s) for w in admitted.windows])
        for window in admitted.windows:  # the model policy remembers scores per asset
            score = float(window.window.values.mean())
            state.model_policies["m"].observe(window.asset_id, {"anomaly": score}, T0)
    return seen


def history(assets: list[str], start: int, stop: int) -> list[Work]:
    values = {asset: [float((n * (i + 3)) % 9) for n in range(stop)] for i, asset in enumerate(assets)}
    return [
        work(asset, float(t) + (0.5 if asset.endswith("1") else 0.0), values[asset][t], t * 10 + i)
        for t in range(start, stop)
        for i, asset in enumerate(assets)
    ]


def handed(
    state: PartitionState, offset: int = 421, shaped_by: str = "v1", committed: int | None = 421
) -> list[tuple[bytes | None, bytes]]:
    outputs = handoff_outputs("state", 4, KEY, Settled(offset, committed), state, shaped_by)
    assert {output.partition for output in outputs} == {KEY[1] % 4}
    return [(output.key, output.value) for output in outputs]


def test_a_handed_over_state_carries_on_exactly_as_the_state_it_was_taken_from() -> None:
    admission, sensors = pipeline()
    assets = ["fan-0", "fan-1", "pump-2"]
    original = fresh(sensors)
    feed(admission, original, history(assets, 0, 20))
    records = handed(original)

    taken = Handoff.of(KEY, records).state_at(421, "v1", fresh(sensors))
    assert taken is not None and taken[1] == 421
    restored = taken[0]
    assert sorted(restored.windows) == assets
    later = history(assets, 20, 40)
    assert feed(admission, restored, later) == feed(admission, original, later)
    assert restored.model_policies["m"].snapshot() == original.model_policies["m"].snapshot()
    assert restored.rules.snapshot() == original.rules.snapshot()


def test_a_hand_off_that_does_not_fit_is_never_installed() -> None:
    admission, sensors = pipeline()
    original = fresh(sensors)
    feed(admission, original, history(["fan-0", "fan-1"], 0, 12))
    records = handed(original)
    assert Handoff.of(KEY, records).state_at(420, "v1", fresh(sensors)) is None  # resumes elsewhere
    assert Handoff.of(KEY, records).state_at(421, "v2", fresh(sensors)) is None  # other models
    assert Handoff.of(KEY, records[1:]).state_at(421, "v1", fresh(sensors)) is None  # cut short
    assert Handoff.of(("sensors", 5), records).marker is None  # another partition's


def test_a_newer_hand_off_replaces_the_older_and_assets_gone_since_are_left_out() -> None:
    admission, sensors = pipeline()
    first = fresh(sensors)
    feed(admission, first, history(["fan-0", "fan-1"], 0, 12))
    second = fresh(sensors)
    feed(admission, second, history(["fan-1"], 0, 14))
    records = handed(first, offset=100, committed=100) + handed(second, offset=200, committed=200)
    taken = Handoff.of(KEY, records).state_at(200, "v1", fresh(sensors))
    assert taken is not None and sorted(taken[0].windows) == ["fan-1"]
    assert Handoff.of(KEY, records).state_at(100, "v1", fresh(sensors)) is None


def test_a_hand_off_whose_commit_lost_the_race_is_taken_where_the_group_resumes() -> None:
    admission, sensors = pipeline()
    original = fresh(sensors)
    feed(admission, original, history(["fan-0"], 0, 12))
    records = handed(original, offset=421, committed=400)  # records 400-420 done, not committed
    assert Handoff.of(KEY, records).state_at(421, "v1", fresh(sensors)) is not None
    taken = Handoff.of(KEY, records).state_at(400, "v1", fresh(sensors))
    assert taken is not None and taken[1] == 421  # the new owner completes 400-420 with no outputs
    assert Handoff.of(KEY, records).state_at(390, "v1", fresh(sensors)) is None  # offsets reset
    assert Handoff.of(KEY, records).state_at(410, "v1", fresh(sensors)) is None
    uncommitted = handed(original, offset=421, committed=None)
    assert Handoff.of(KEY, uncommitted).state_at(400, "v1", fresh(sensors)) is None
