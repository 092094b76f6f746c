"""One reading through the sensor stage's steps, in the runtime's thread: event-time and
channel checks (``intake``), the asset's route (``routing``), each sample through its value
rules (``rules``) and into its window (``windows``), and the partition's stale check.

A reading that cannot be used raises ``ReadingRejected`` with its dead-letter reason. The
same steps rebuild a partition's state from its history (``rebuild``), with a silent tally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.pipelines.sensors.intake import Sample, at, check_channels, check_event_time, expand
from consumers.pipelines.sensors.lanes import SensorLane
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState, stale_interval
from consumers.pipelines.sensors.routing import Router
from consumers.pipelines.sensors.rules import stale_transitions, value_transitions
from consumers.pipelines.sensors.tally import Tally
from consumers.pipelines.sensors.windows import WindowItem, place
from consumers.runtime.records import Output, Work
from models.alert_policy import Transition
from schemas.messages import AlertKind, SensorReading
from schemas.settings import SensorRule, SensorSettings


@dataclass
class Admitted:
    """What admitting one reading produced: outputs so far and windows to score."""

    outputs: list[Output] = field(default_factory=list)
    windows: list[WindowItem] = field(default_factory=list)


class Admission:
    """Admits readings into a partition's state; see the module docstring."""

    def __init__(
        self, settings: SensorSettings, router: Router[SensorLane[WindowItem]], outputs: SensorOutputs
    ) -> None:
        self._settings = settings
        self._router = router
        self._outputs = outputs
        self._stale_every_s = stale_interval(settings.rules)

    def admit(self, work: Work, state: PartitionState, tally: Tally) -> Admitted:
        """Check ``work``'s reading and take its samples in; ``ReadingRejected`` when it cannot be used."""
        reading = work.message
        assert isinstance(reading, SensorReading)
        record = work.record
        reference = at(record.timestamp_ms / 1000) if record.timestamp_ms is not None else work.received_at
        check_event_time(reading, reference, self._settings)
        samples = expand(reading)
        route = self._router.route(reading.asset_id, reading.kind)
        lane = route.lane
        if lane is not None:
            dropped = check_channels(
                samples, lane.channels, route.rules, self._settings.unknown_channels, lane.spec.ignored
            )
            tally.event("dropped_channel", dropped)
        admitted = Admitted()
        for sample in samples:
            self._sample(work, state, lane, route.rules, sample, admitted, tally)
        if state.advance(samples[-1].time_s, self._stale_every_s):
            stale = stale_transitions(state.rules, state.rule_policies, self._settings.rules, state.clock_s)
            self._alerts(stale, "stale_source", work, {}, admitted, tally, own=False)
        return admitted

    def _sample(
        self,
        work: Work,
        state: PartitionState,
        lane: SensorLane[WindowItem] | None,
        rules: list[SensorRule],
        sample: Sample,
        admitted: Admitted,
        tally: Tally,
    ) -> None:
        reading = work.message
        assert isinstance(reading, SensorReading)
        asset = reading.asset_id
        newest = state.rules.newest(asset)
        fired = value_transitions(
            state.rules, state.rule_policies, rules, asset, sample.time_s, sample.values
        )
        self._alerts(fired, "threshold", work, sample.values, admitted, tally)
        state.rules.remember(asset, reading.kind, sample.time_s, sample.values)
        placed = place(
            state, asset, lane, sample, newest, self._settings.lateness_s, self._settings.stagger_windows
        )
        if placed.out_of_order:
            tally.event("out_of_order")  # within the lateness bound: put back in order
        if placed.outcome != "accepted":
            tally.event(placed.outcome)
            admitted.outputs.append(self._outputs.unscored_result(work, placed.outcome, sample))
        for ready in placed.ready:
            assert lane is not None
            admitted.windows.append(WindowItem(work, len(admitted.windows), asset, lane, state, ready))

    def _alerts(
        self,
        transitions: list[Transition],
        kind: AlertKind,
        work: Work,
        values: dict[str, float],
        admitted: Admitted,
        tally: Tally,
        own: bool = True,
    ) -> None:
        for transition in transitions:
            alert = self._outputs.rule_alert(transition, kind, work, values, own=own)
            tally.alert(alert)
            admitted.outputs.append(self._outputs.alert(alert))
