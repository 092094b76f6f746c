"""Admitting a poll batch at once gives what admitting its readings one at a time gives: the
same results, alerts, dead-letter reasons, windows, counts and state, on a stream with value,
rate, range and stale rules, sample blocks, gaps, repeats, late samples and bad readings."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import consumers.pipelines.sensors.admission as admission_module
import models.sensors.windows as windows_module
from consumers.pipelines.sensors.admission import Admission, Admitted
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.routing import Router
from consumers.pipelines.sensors.tally import Tally
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, InboundRecord, Work
from models.alert_policy import AlertPolicy
from models.sensors.windows import AssetWindow
from schemas.messages import SampleBlock, SensorReading
from schemas.model_card import SeriesInputSpec
from schemas.settings import SensorModelBinding, SensorRule, SensorSettings, VigilSettings

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
RULES = [
    SensorRule(
        name="hot", kind="threshold", channel="a", sensor_kind="machine", limit=1.5, for_s=1.0, n=1, m=1
    ),
    SensorRule(name="jumpy", kind="rate", channel="b", sensor_kind="machine", limit=3.0, n=2, m=3),
    SensorRule(name="dusty", kind="range", channel="pm25", high=1.5, n=1, m=2),
    SensorRule(name="silent", kind="stale", for_s=8.0),
]
WALL_CLOCK = {"inferred_at", "published_at"}


def without_wall_clock(value: Any) -> Any:
    """A decoded output without the times it was made (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    return value


def stream(seed: int, count: int) -> list[Work]:
    """Readings of four model-scored machines (two model bindings) and two rules-only air sensors."""
    rng = random.Random(seed)
    clocks: dict[str, float] = {}
    works = []
    for offset in range(count):
        asset = rng.choice(["m-0", "m-1", "m-2", "plain-3", "aq-0", "aq-1"])
        clocks[asset] = clocks.get(asset, 0.0) + rng.choice([1.0, 1.0, 1.0, 1.0, 3.0, 0.0, -2.0])
        event_time = T0 + timedelta(seconds=clocks[asset])
        air = asset.startswith("aq")
        values: dict[str, float] | None = (
            {"pm25": rng.gauss(1.0, 0.5)} if air else {"a": rng.gauss(1.0, 1.0), "b": rng.gauss(0.0, 2.0)}
        )
        block = None
        roll = rng.random()
        if not air and roll < 0.15:  # a block of samples, with or without values before it
            length = rng.randint(2, 40)
            block = SampleBlock(
                sample_rate_hz=1.0,
                channels={
                    "a": [rng.gauss(1.0, 1.0) for _ in range(length)],
                    "b": [0.1 * k for k in range(length)],
                },
            )
            values = values if rng.random() < 0.5 else None
            clocks[asset] += length
        elif not air and roll < 0.2:
            values = {"a": 1.0}  # the model's b is missing: dead-lettered
        elif not air and roll < 0.25:
            values = {**(values or {}), "x": 9.0}  # unknown to model and rules: dropped
        elif roll < 0.28:
            event_time = T0 + timedelta(days=30)  # out of time range
        reading = SensorReading(
            asset_id=asset,
            sensor_id=asset,
            kind="air_quality" if air else "machine",
            event_time=event_time,
            values=values,
            block=block,
        )
        stamp = int((T0 + timedelta(seconds=max(clocks.values()))).timestamp() * 1000)
        works.append(Work(InboundRecord("sensors", 0, offset, asset.encode(), None, (), stamp), reading, T0))
    return works


def admission() -> Admission:
    spec = SeriesInputSpec(
        channels=["a", "b"], window=8, stride=3, sample_period_s=1.0, mean=[0, 0], std=[1, 1]
    )
    lane: Any = SimpleNamespace(spec=spec, channels=("a", "b"), value_limits=np.full(2, 1e30))
    sensors = SensorSettings(rules=RULES, max_past_s=None, unknown_channels="ignore")
    bindings = [SensorModelBinding(assets="m-*", model="m"), SensorModelBinding(assets="plain-*", model="m")]
    return Admission(
        sensors, Router(bindings, [lane, lane], RULES), SensorOutputs(VigilSettings(sensors=sensors))
    )


def admitted_as(batches: list[list[Work]]) -> tuple[list[Any], Counter[str], PartitionState]:
    """What each reading produced, admitted in ``batches``, with the counts and the state."""
    steps = admission()
    state = PartitionState(
        model_policies={}, rule_policies={r.name: AlertPolicy([r.policy_rule()]) for r in RULES}
    )
    counts: Counter[str] = Counter()
    seen = []
    for batch in batches:
        for result in steps.admit(batch, state, Tally(RuntimeObserver(), counts)):
            if isinstance(result, Failure):
                seen.append(("failed", result.reason))
                continue
            assert isinstance(result, Admitted)
            outputs = [(o.topic, o.key, without_wall_clock(json.loads(o.value))) for o in result.outputs]
            windows = [
                (
                    w.index,
                    w.asset_id,
                    w.window.start_s,
                    w.window.end_s,
                    w.window.filled,
                    w.window.values.tolist(),
                )
                for w in result.windows
            ]
            seen.append((outputs, windows))
    return seen, counts, state


def test_a_batch_admits_exactly_what_its_readings_admitted_one_at_a_time_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    works = stream(seed=3, count=600)
    rng = random.Random(5)
    batches, start = [], 0
    while start < len(works):
        size = rng.choice([1, 7, 50, 120])
        batches.append(works[start : start + size])
        start += size
    on_arrays = Counter[str]()
    for name in ("_extend_on_grid", "_rules_on_arrays"):
        owner = AssetWindow if name == "_extend_on_grid" else Admission
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, counted(original, name, on_arrays))
    in_batches, counts_batched, batched = admitted_as(batches)
    assert on_arrays["_extend_on_grid"] and on_arrays["_rules_on_arrays"]  # both numpy paths ran

    # the reference: one reading at a time, every sample on its own (no run is long enough for numpy)
    for module in (admission_module, windows_module):
        monkeypatch.setattr(module, "VECTOR_MIN", 10**9)
    one_by_one, counts_alone, alone = admitted_as([[work] for work in works])

    assert in_batches == one_by_one
    assert counts_batched == counts_alone
    assert batched.rules.last_seen == alone.rules.last_seen and batched.clock_s == alone.clock_s
    assert batched.rules._last == alone.rules._last and batched.rules._above_since == alone.rules._above_since
    for asset, window in alone.windows.items():
        np.testing.assert_array_equal(batched.windows[asset]._values, window._values)
    # the stream exercises what the test claims
    reasons = Counter(r[1] for r in one_by_one if r[0] == "failed")
    assert reasons.keys() == {"invalid_value", "out_of_time_range"}
    alerts = Counter(o[2]["rule"] for r in one_by_one if r[0] != "failed" for o in r[0] if "rule" in o[2])
    assert alerts.keys() == {"hot", "jumpy", "dusty", "silent"}
    assert {"late", "duplicate", "dropped_channel"} <= counts_alone.keys()
    assert sum(len(r[1]) for r in one_by_one if r[0] != "failed") > 50


def counted(method: Any, name: str, calls: Counter[str]) -> Any:
    def counting(*args: Any) -> Any:
        calls[name] += 1
        return method(*args)

    return counting


def test_a_source_sending_ever_new_channel_names_is_checked_each_time_without_growing_memory() -> None:
    spec = SeriesInputSpec(
        channels=["a", "b"], window=8, stride=3, sample_period_s=1.0, mean=[0, 0], std=[1, 1]
    )
    lane: Any = SimpleNamespace(spec=spec, channels=("a", "b"), value_limits=np.full(2, 1e30))
    sensors = SensorSettings(max_past_s=None, unknown_channels="ignore")
    router = Router([SensorModelBinding(assets="*", model="m")], [lane], [])
    steps = Admission(sensors, router, SensorOutputs(VigilSettings(sensors=sensors)))
    state, counts = PartitionState(model_policies={}, rule_policies={}), Counter[str]()
    for n in range(100):
        reading = SensorReading(
            asset_id="m-0",
            sensor_id="s",
            kind="machine",
            event_time=T0 + timedelta(seconds=n),
            values={"a": 1.0, "b": 1.0, f"made_up_{n}": 0.0},
        )
        work = Work(InboundRecord("sensors", 0, n, b"m-0", None, (), None), reading, T0)
        [admitted] = steps.admit([work], state, Tally(RuntimeObserver(), counts))
        assert isinstance(admitted, Admitted)
    assert counts["dropped_channel"] == 100  # every one checked, the made-up channel dropped
    assert len(router.route("m-0", "machine").verdicts) == admission_module.VERDICTS_KEPT


def test_a_stale_check_that_fails_costs_the_reading_it_rides_on_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> list[Any]:
        raise RuntimeError("a bug in the stale check")

    monkeypatch.setattr(admission_module, "stale_transitions", broken)
    works = stream(seed=3, count=200)
    results, _, _ = admitted_as([works[start : start + 50] for start in range(0, len(works), 50)])
    failed = Counter(result[1] for result in results if result[0] == "failed")
    assert failed["processing_error"] >= 1  # the readings whose stale check broke
    assert sum(failed.values()) < len(works) // 2  # their neighbours went on
    assert any(result[0] != "failed" and result[1] for result in results)  # windows still made
