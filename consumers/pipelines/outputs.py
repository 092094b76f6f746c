"""The records a model pipeline publishes: per-item results and alerts, with their evidence."""

from __future__ import annotations

from datetime import datetime

from consumers.pipelines.alerts import build_alert
from consumers.runtime.records import Output
from models.alert_policy import Transition
from schemas.common import Evidence, ModelRef
from schemas.messages import Alert, AlertKind, InferenceResult
from schemas.settings import VigilSettings


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

    def transition_alert(
        self,
        transition: Transition,
        kind: AlertKind,
        evidence: Evidence,
        captured_at: datetime,
        received_at: datetime,
        inferred_at: datetime,
        model: ModelRef | None = None,
        site: str | None = None,
        explanation: dict[str, float] | None = None,
        message: str = "",
    ) -> Alert:
        """The alert of one transition, stamped with the configuration's hash."""
        return build_alert(
            transition,
            kind,
            evidence,
            captured_at,
            received_at,
            inferred_at,
            self.config_hash,
            model=model,
            site=site,
            explanation=explanation,
            message=message,
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
