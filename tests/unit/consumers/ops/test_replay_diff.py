"""The replay's alert diff: matched by source, rule, label, state and evidence position."""

from __future__ import annotations

from consumers.ops.replay import diff_alerts
from schemas.common import Evidence
from schemas.messages import Alert
from tests import sample_messages as samples


def _alert(offset: int, score: float = 0.9, severity: str = "critical", label: str = "crack") -> Alert:
    return samples.alert().model_copy(
        update={
            "alert_id": f"a-{offset}-{score}",
            "score": score,
            "severity": severity,
            "label": label,
            "evidence": Evidence(topic="vigil.frames", partition=0, offset=offset),
        }
    )


def test_added_removed_changed_and_same() -> None:
    production = [_alert(1), _alert(2), _alert(3), _alert(4, severity="warning"), _alert(5)]
    replayed = [
        _alert(1, score=0.90000001),
        _alert(3, score=0.7),
        _alert(4),
        _alert(5, label="spot"),
        _alert(6),
    ]
    diff = diff_alerts(production, replayed)
    assert diff.same == 1, "a score within the tolerance is the same alert"
    assert [c.key[5] for c in diff.changed] == [3, 4]
    assert sorted((c.key[5], c.key[2]) for c in diff.removed) == [(2, "crack"), (5, "crack")]
    assert sorted((c.key[5], c.key[2]) for c in diff.added) == [(5, "spot"), (6, "crack")]
    assert all(c.production is None and c.replayed is not None for c in diff.added)
