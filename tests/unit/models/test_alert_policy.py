from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from consumers.pipelines.alerts import alert_id, build_alert
from models.alert_policy import AlertPolicy, at_time
from schemas.common import Evidence
from schemas.settings import AlertRule

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def feed(
    policy: AlertPolicy, scores: list[float], source: str = "cam-1", label: str = "crack", step_s: float = 1
):
    out = []
    for i, score in enumerate(scores):
        for t in policy.observe(source, {label: score, "ok": 1 - score}, T0 + timedelta(seconds=i * step_s)):
            out.append((i, t.state))
    return out


def test_n_of_m_confirmation() -> None:
    policy = AlertPolicy([AlertRule(name="crack", label="crack", hi=0.8, n=2, m=3)])
    assert feed(policy, [0.9, 0.1, 0.1, 0.9, 0.2, 0.95]) == [(5, "firing")]


def test_hysteresis_resolves_only_below_lo() -> None:
    policy = AlertPolicy([AlertRule(name="crack", label="crack", hi=0.8, lo=0.4)])
    assert feed(policy, [0.9, 0.6, 0.5, 0.7, 0.3, 0.6, 0.85]) == [
        (0, "firing"),
        (4, "resolved"),
        (6, "firing"),
    ]


def test_cooldown_after_resolve() -> None:
    policy = AlertPolicy([AlertRule(name="crack", label="crack", hi=0.8, cooldown_s=10)])
    transitions = feed(policy, [0.9, 0.1, 0.9, 0.9, 0.1] + [0.1] * 10 + [0.9])
    assert transitions == [(0, "firing"), (1, "resolved"), (15, "firing")]


def test_rules_match_sources_and_labels_by_pattern() -> None:
    policy = AlertPolicy([AlertRule(name="line2", sources="line2-*", label="*", hi=0.8)])
    assert feed(policy, [0.9], source="line1-cam") == []
    assert [s for _, s in feed(policy, [0.9], source="line2-cam")] == ["firing", "firing"][:1]


def test_alert_ids_are_deterministic_per_input_and_rule() -> None:
    rule = AlertRule(name="crack", label="crack", hi=0.5)
    [transition] = AlertPolicy([rule]).observe("cam-1", {"crack": 0.9}, T0)
    evidence = Evidence(topic="vigil.frames", partition=1, offset=42)
    assert alert_id(transition, evidence) == alert_id(transition, evidence)
    assert alert_id(transition, evidence) != alert_id(transition, evidence.model_copy(update={"offset": 43}))
    alert = build_alert(transition, "visual_defect", evidence, T0, T0, T0, "a" * 64)
    assert alert.state == "firing" and alert.threshold == 0.5 and alert.score == 0.9


def test_a_run_of_scores_gives_the_transitions_of_observing_each_in_turn() -> None:
    rng = np.random.default_rng(11)
    rules = [
        AlertRule(name="two-of-three", hi=0.8, lo=0.5, n=2, m=3, cooldown_s=4.0),
        AlertRule(name="edgy", sources="m-*", hi=0.95, n=1, m=1),
        AlertRule(name="others", sources="pump-*", hi=0.1),
    ]
    one_by_one, in_runs = AlertPolicy(rules), AlertPolicy(rules)
    start = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    expected, found = [], []
    offset = 0
    for length in [5, 40, 1, 64, 17, 30]:
        quiet = length % 2 == 0  # even runs stay low or stay high: the one-step path
        level = 0.2 if length in (40, 30) else 0.9
        scores = np.full(length, level) if quiet else rng.uniform(0.0, 1.0, length)
        scores[rng.random(length) < 0.1] = np.nan  # no score for those
        times = [start + offset + k for k in range(length)]
        for k, (score, time_s) in enumerate(zip(scores, times, strict=True)):
            if not np.isnan(score):
                expected += [
                    (offset + k, t) for t in one_by_one.observe("m-1", {"x": float(score)}, at_time(time_s))
                ]
        found += [(offset + k, t) for k, _, t in in_runs.observe_run("m-1", "x", scores, times)]
        offset += length
    assert found == expected
    assert {t.state for _, t in found} == {"firing", "resolved"}
