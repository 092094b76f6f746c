"""The records the sensor stage publishes: window results, model and rule alerts, and the
results that say a reading came late or twice."""

from __future__ import annotations

from datetime import UTC, datetime

import torch

from consumers.pipelines.alerts import build_alert
from consumers.pipelines.outputs import PipelineOutputs
from consumers.pipelines.sensors.intake import at
from consumers.pipelines.sensors.lanes import WindowScores
from consumers.pipelines.sensors.tally import Tally
from consumers.pipelines.sensors.windows import WindowItem
from consumers.runtime.records import Output, Work
from models.alert_policy import Transition
from models.sensors.windows import ReadyWindow
from schemas.common import Evidence, ModelRef
from schemas.messages import Alert, AlertKind, InferenceResult, SensorReading
from schemas.settings import VigilSettings


def _reading(work: Work) -> SensorReading:
    assert isinstance(work.message, SensorReading)
    return work.message


def _evidence(work: Work, window: ReadyWindow | None = None) -> Evidence:
    record = work.record
    return Evidence(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        window_start=at(window.start_s) if window else None,
        window_end=at(window.end_s) if window else None,
    )


class SensorOutputs(PipelineOutputs):
    """Builds the stage's output records for the configured topics."""

    def __init__(self, settings: VigilSettings) -> None:
        super().__init__(settings, "sensors")

    def window_alert(
        self,
        transition: Transition,
        work: Work,
        model: ModelRef,
        window: ReadyWindow,
        scored: WindowScores,
        explanation: dict[str, float],
        inferred_at: datetime,
    ) -> Alert:
        """A model's alert on one window, with the channels that drove it."""
        kind: AlertKind = "low_rul" if transition.label == "low_rul" else "sensor_anomaly"
        return build_alert(
            transition,
            kind,
            _evidence(work, window),
            at(window.end_s),
            work.received_at,
            inferred_at,
            self.config_hash,
            model=model,
            site=_reading(work).site,
            explanation=explanation,
            message=_model_message(transition, explanation, scored),
        )

    def window_result(
        self,
        work: Work,
        index: int,
        asset_id: str,
        model: ModelRef,
        window: ReadyWindow,
        scored: WindowScores,
        inferred_at: datetime,
    ) -> list[Output]:
        """The scores of one window for ``vigil.inferences`` (none when results are not published)."""
        record = work.record
        return self.result(
            record.item_id(f"w{index}"),
            asset_id,
            model,
            scored.label,
            {**scored.scores, **{f"share:{c}": v for c, v in scored.explanation.items()}},
            _evidence(work, window),
            at(window.end_s),
            inferred_at,
        )

    def scored_window(self, item: WindowItem, output: torch.Tensor, tally: Tally) -> list[Output]:
        """Feed a window's score to its asset's alert policy; the alerts and the result to publish."""
        lane, window, work = item.lane, item.window, item.work
        scored = lane.scores(output)
        transitions = item.state.model_policies[lane.ref.name].observe(
            item.asset_id, {scored.label: scored.scores[scored.label]}, at(window.end_s)
        )
        explanation = scored.explanation
        if transitions and not explanation and lane.model.card.task == "sensor_rul":
            explanation = lane.explain(window.values)
        inferred_at = datetime.now(UTC)
        alerts = [
            self.window_alert(t, work, lane.ref, window, scored, explanation, inferred_at)
            for t in transitions
        ]
        tally.scored(at(window.end_s))
        for alert in alerts:
            tally.alert(alert)
        result = self.window_result(work, item.index, item.asset_id, lane.ref, window, scored, inferred_at)
        return [self.alert(alert) for alert in alerts] + result

    def rule_alert(
        self, transition: Transition, kind: AlertKind, work: Work, values: dict[str, float], own: bool = True
    ) -> Alert:
        """A rule's alert; ``own`` is False when the reading of another asset made it (stale sources)."""
        explanation = {transition.label: values[transition.label]} if transition.label in values else {}
        return build_alert(
            transition,
            kind,
            _evidence(work),
            transition.at,
            work.received_at,
            datetime.now(UTC),
            self.config_hash,
            site=_reading(work).site if own else None,
            explanation=explanation,
        )

    def unscored_result(self, work: Work, outcome: str, time_s: float) -> Output:
        """The result that says a sample at ``time_s`` was ``late`` or a ``duplicate`` (published even when scores are not)."""
        record, reading = work.record, _reading(work)
        result = InferenceResult(
            result_id=record.item_id(outcome),
            pipeline="sensors",
            source_id=reading.asset_id,
            outcome=outcome,  # type: ignore[arg-type]
            evidence=_evidence(work),
            captured_at=at(time_s),
            inferred_at=datetime.now(UTC),
        )
        return Output(self.results_topic, reading.asset_id.encode(), result.to_json_bytes())


def _model_message(transition: Transition, explanation: dict[str, float], scored: WindowScores) -> str:
    top = sorted(explanation.items(), key=lambda kv: -kv[1])[:3]
    channels = ", ".join(f"{c} {share:.0%}" for c, share in top)
    if transition.label == "low_rul":
        return (
            f"remaining useful life of {transition.source_id} is {scored.scores['rul']:.1f} {scored.unit} "
            f"({transition.state}); "
            f"channels: {channels}"
        )
    return f"sensor anomaly {transition.state} on {transition.source_id}; channels: {channels}"
