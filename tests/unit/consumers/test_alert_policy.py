from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.pipelines.alerts import alert_id, build_alert
from models.alert_policy import AlertPolicy
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
