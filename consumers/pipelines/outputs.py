"""The records a model pipeline publishes: per-item results and alerts, with their evidence.

``PipelineOutputs.scored`` is the whole path for a pipeline that scores items one by one
(vision, vibration): the item's scores through its lane's alert policy, alerts and result
built and counted. Pipelines with more steps (sensor windows) use the pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumers.pipelines.alerts import build_alert
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import InboundRecord, Output
from models.alert_policy import AlertPolicy, Transition
from schemas.common import Evidence, ModelRef
from schemas.messages import Alert, AlertKind, InferenceResult
from schemas.settings import VigilSettings


@dataclass(frozen=True)
class ScoredItem:
    """One item's scores and what they are about."""

    record: InboundRecord
    source_id: str
    model: ModelRef
    scores: dict[str, float]
    """What the alert policy sees, by label."""
    evidence: Evidence
    captured_at: datetime
    received_at: datetime
    kind: AlertKind
    site: str | None = None
    explanation: dict[str, float] = field(default_factory=dict)
    """Per input part (channel, axis), what drove the score; alerts carry it, results as ``share:<part>``."""
    message: Callable[[Transition], str] | None = None


class PipelineOutputs:
    """Builds one pipeline's output records for the configured topics."""

    def __init__(self, settings: VigilSettings, pipeline: str) -> None:
        self.pipeline = pipeline
        self.alerts_topic = settings.topics.alerts.name
        self.results_topic = settings.topics.inferences.name
        self.publish_results = settings.runtime.publish_inferences
        self.config_hash = settings.config_hash()

    def alert(self, alert: Alert) -> Output:
        """The record of an alert, keyed by its source."""
        return Output(self.alerts_topic, alert.source_id.encode(), alert.to_json_bytes())

    def scored(self, item: ScoredItem, policy: AlertPolicy, observer: RuntimeObserver) -> list[Output]:
        """An item's alerts (from ``policy``) and result, reported to ``observer``; the result's
        label is the highest score."""
        inferred_at = datetime.now(UTC)
        outputs: list[Output] = []
        for transition in policy.observe(item.source_id, item.scores, item.captured_at):
            alert = build_alert(
                transition,
                item.kind,
                item.evidence,
                item.captured_at,
                item.received_at,
                inferred_at,
                self.config_hash,
                model=item.model,
                site=item.site,
                explanation=item.explanation or item.scores,
                message=item.message(transition) if item.message else "",
            )
            outputs.append(self.alert(alert))
            observer.on_alert(alert.kind, alert.severity, alert.state)
        observer.on_scored(self.pipeline, item.captured_at)
        record = item.record
        label = max(item.scores, key=item.scores.__getitem__)
        shares = {f"share:{part}": share for part, share in item.explanation.items()}
        return outputs + self.result(
            record.item_id(),
            item.source_id,
            item.model,
            label,
            {**item.scores, **shares},
            item.evidence,
            item.captured_at,
            inferred_at,
        )

    def result(
        self,
        result_id: str,
        source_id: str,
        model: ModelRef,
        label: str,
        scores: dict[str, float],
        evidence: Evidence,
        captured_at: datetime,
        inferred_at: datetime,
    ) -> list[Output]:
        """One item's scores for the results topic (none when results are not published)."""
        if not self.publish_results:
            return []
        result = InferenceResult(
            result_id=result_id,
            pipeline=self.pipeline,
            source_id=source_id,
            model=model,
            label=label,
            score=scores[label],
            scores=scores,
            evidence=evidence,
            captured_at=captured_at,
            inferred_at=inferred_at,
        )
        return [Output(self.results_topic, source_id.encode(), result.to_json_bytes())]
