"""Building ``Alert`` messages with deterministic ids and the audit trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from models.alert_policy import Transition
from schemas.common import Evidence, ModelRef
from schemas.messages import Alert, AlertKind, AlertTimestamps

_NAMESPACE = uuid.UUID("6f1d2c1e-8a4b-4c55-9e0a-7b1f3a5d9c21")


def alert_id(transition: Transition, evidence: Evidence) -> str:
    """Same input record + rule + transition → same id, so duplicates are recognisable downstream."""
    name = "|".join(
        (
            transition.rule.name,
            transition.source_id,
            transition.label,
            transition.state,
            evidence.topic,
            str(evidence.partition),
            str(evidence.offset),
        )
    )
    return str(uuid.uuid5(_NAMESPACE, name))


def build_alert(
    transition: Transition,
    kind: AlertKind,
    evidence: Evidence,
    captured_at: datetime,
    received_at: datetime,
    inferred_at: datetime,
    config_hash: str,
    model: ModelRef | None = None,
    site: str | None = None,
    explanation: dict[str, float] | None = None,
    message: str = "",
) -> Alert:
    """The alert message for ``transition``."""
    rule = transition.rule
    threshold = rule.hi if transition.state == "firing" else rule.resolve_below
    return Alert(
        alert_id=alert_id(transition, evidence),
        kind=kind,
        severity=rule.severity,
        state=transition.state,
        source_id=transition.source_id,
        site=site,
        rule=rule.name,
        label=transition.label,
        score=transition.score,
        threshold=threshold,
        model=model,
        evidence=evidence,
        explanation=explanation or {},
        message=message
        or f"{transition.label} {transition.state} on {transition.source_id} (rule {rule.name})",
        config_hash=config_hash,
        timestamps=AlertTimestamps(
            captured_at=captured_at,
            received_at=received_at,
            inferred_at=inferred_at,
            published_at=datetime.now(UTC),
        ),
    )
