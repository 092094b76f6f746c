from __future__ import annotations

from datetime import UTC, datetime

from consumers.pipelines.sensors.rules import RuleState, SensorRule
from models.alert_policy import AlertPolicy
from schemas.settings import AlertRule

PM25 = SensorRule(
    name="pm25-10min", kind="threshold", channel="pm25", sensor_kind="air_quality", limit=35, for_s=600
)


def run(
    rule: SensorRule, readings: list[tuple[float, float]], channel: str = "pm25"
) -> list[tuple[float, str]]:
    state = RuleState()
    policy = AlertPolicy([AlertRule(name=rule.name, label=channel, hi=0.5, lo=0.5)])
    out = []
    for t, v in readings:
        scores = state.scores(rule, "aq-1", t, {channel: v})
        state.remember("aq-1", "air_quality", t, {channel: v})
        for transition in policy.observe("aq-1", scores, datetime.fromtimestamp(t, UTC)):
            out.append((t, transition.state))
    return out


def test_threshold_over_a_duration_alerts_once_then_resolves() -> None:
    readings = (
        [(t * 60.0, 20.0) for t in range(5)]
        + [(t * 60.0, 50.0) for t in range(5, 25)]
        + [(t * 60.0, 10.0) for t in range(25, 30)]
    )
    assert run(PM25, readings) == [
        (900.0, "firing"),
        (1500.0, "resolved"),
    ]  # above since 300 s: fires at 900 s


def test_a_short_excursion_does_not_alert() -> None:
    readings = [(t * 60.0, 50.0 if 5 <= t < 12 else 20.0) for t in range(30)]
    assert run(PM25, readings) == []


def test_rate_of_change_and_range() -> None:
    rate = SensorRule(name="level-jump", kind="rate", channel="level", limit=0.1)
    levels = [(0.0, 1.0), (10.0, 1.2), (20.0, 5.0), (30.0, 5.1)]
    state = RuleState()
    seen = []
    for t, v in levels:
        seen.append(state.scores(rate, "w-1", t, {"level": v}).get("level"))
        state.remember("w-1", "water", t, {"level": v})
    assert seen == [None, 0.0, 1.0, 0.0]  # 0.02/s, 0.38/s, 0.01/s against 0.1/s
    in_range = SensorRule(name="temp-range", kind="range", channel="*", low=-40, high=60)
    assert RuleState().scores(in_range, "s", 0, {"a": 20.0, "b": 99.0}) == {"a": 0.0, "b": 1.0}


def test_stale_sources() -> None:
    stale = SensorRule(name="silent", kind="stale", sensor_kind="air_quality", for_s=300)
    state = RuleState()
    state.remember("aq-1", "air_quality", 0.0, {"pm25": 10})
    state.remember("aq-2", "air_quality", 250.0, {"pm25": 10})
    state.remember("pump-1", "machine", 0.0, {"t": 1})
    assert state.stale(stale, 400.0) == {"aq-1": 1.0, "aq-2": 0.0}
