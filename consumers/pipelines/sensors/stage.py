"""The sensor stage: readings → per-asset windows and rules → micro-batched RNN → results and alerts.

Per reading (one ``Work``), in the runtime's thread:
1. admission (``intake``): event-time bounds and channel checks; a bad reading is a failure
   with its dead-letter reason;
2. each sample goes through the asset's rules (threshold, rate, range) and into its window;
   a late or duplicate sample becomes a ``late``/``duplicate`` result on ``vigil.inferences``;
3. the partition's event-time clock advances, and stale sources are looked for;
4. windows made ready go to their model's micro-batcher; the reading's outcome waits for
   their scores (``collect`` builds the window results and model alerts in window order).

State is per input partition (``PartitionState``): dropped when the partition goes, rebuilt
when it comes (the first record seen after an assignment triggers a replay of the
partition's recent history through the same steps, scored at once, outputs discarded), so
the same input gives the same alerts whether or not the consumer restarted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import NamedTuple

import torch

from consumers.pipelines.lane import ScoredItems
from consumers.pipelines.sensors.history import read_back
from consumers.pipelines.sensors.intake import (
    ReadingRejected,
    Sample,
    check_channels,
    check_event_time,
    expand,
)
from consumers.pipelines.sensors.lanes import SensorLane
from consumers.pipelines.sensors.outputs import SensorOutputs, at
from consumers.pipelines.sensors.partition import PartitionState, stale_interval
from consumers.runtime.decoding import decode_record
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Output, Work
from models.alert_policy import AlertPolicy
from models.registry import ModelLoader, registry_loader
from models.sensors.windowing import window_spec
from models.sensors.windows import AssetWindow, ReadyWindow
from schemas.messages import Alert, SensorReading
from schemas.settings import SensorRule, VigilSettings

log = logging.getLogger(__name__)
STAGE = "sensors"
PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Window:
    """A ready window of one asset, waiting for its score."""

    work: Work
    index: int
    asset_id: str
    lane: SensorLane[_Window]
    state: PartitionState
    window: ReadyWindow


class _Route(NamedTuple):
    lane: SensorLane[_Window] | None
    rules: list[SensorRule]


@dataclass
class _Intake:
    """What admitting one reading produced: outputs so far and windows to score."""

    outputs: list[Output] = field(default_factory=list)
    windows: list[_Window] = field(default_factory=list)


@dataclass
class _Pending:
    work: Work
    outputs: list[Output]
    waiting: int
    failure: Failure | None = None


class SensorStage:
    """``ProcessingStage`` for ``SensorReading`` inputs; see the module docstring."""

    name = STAGE

    def __init__(
        self,
        settings: VigilSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer or RuntimeObserver()
        sensors = settings.sensors
        load = loader or registry_loader(sensors.registry)
        self._scored: ScoredItems[_Window] = ScoredItems()
        self._lanes = [
            SensorLane[_Window](
                load(binding.model, binding.version), sensors, self._scored.deliver, self.observer
            )
            for binding in sensors.models
        ]
        self._value_rules = [rule for rule in sensors.rules if rule.kind != "stale"]
        self._stale_rules = [rule for rule in sensors.rules if rule.kind == "stale"]
        self._stale_every_s = stale_interval(sensors.rules)
        self._routes: dict[tuple[str, str], _Route] = {}
        self._partitions: dict[PartitionKey, PartitionState] = {}
        self._held: set[PartitionKey] = set()
        self._fresh: set[PartitionKey] = set()
        self._pending: dict[tuple[str, int, int], _Pending] = {}
        self._done: list[Outcome] = []
        self._in_flight = 0
        self._outputs = SensorOutputs(settings)
        self._replaying = False
        self.counts: Counter[str] = Counter()
        """Events counted rather than dead-lettered: late, duplicate, dropped_channel, replayed."""
        self.observer.on_state(STAGE, self.memory_bytes, self.assets)

    # -- ProcessingStage -------------------------------------------------------------------

    def submit(self, work: Sequence[Work]) -> None:
        """Admit each reading; outcomes of readings that completed a window wait for its score."""
        for item in work:
            self._in_flight += 1
            key = (item.record.topic, item.record.partition)
            if key in self._fresh:
                self._fresh.discard(key)
                self._rebuild(key, item.record.offset)
            try:
                intake = self._intake(item, self._state(key))
            except ReadingRejected as error:
                self._done.append(
                    Outcome(item.record, failure=Failure(error.reason, STAGE, "ReadingRejected", str(error)))
                )
                continue
            except Exception as error:  # a bug fails this reading alone, never the stage
                log.exception("reading %s failed unexpectedly", item.record)
                self._done.append(
                    Outcome(item.record, failure=Failure.from_exception("processing_error", STAGE, error))
                )
                continue
            if not intake.windows:
                self._done.append(Outcome(item.record, tuple(intake.outputs)))
                continue
            record = item.record
            self._pending[(record.topic, record.partition, record.offset)] = _Pending(
                item, intake.outputs, len(intake.windows)
            )
            for ready in intake.windows:
                ready.lane.batcher.put(ready)

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Outcomes finished since the last call; window results and alerts are built here."""
        for item, result in self._scored.drain(timeout_s):
            self._scored_window(item, result)
        done, self._done = self._done, []
        self._in_flight -= len(done)
        return done

    def in_flight(self) -> int:
        """Readings submitted whose outcome has not been collected."""
        return self._in_flight

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Drop the state of partitions no longer held; mark new ones for a rebuild."""
        for key in self._held - held:
            self._partitions.pop(key, None)
            self._fresh.discard(key)
        self._fresh |= held - self._held
        self._held = set(held)

    def close(self) -> None:
        """Finish queued batches and stop the lanes."""
        for lane in self._lanes:
            lane.close()

    def memory_bytes(self) -> int:
        """Bytes held by every asset window of every partition."""
        return sum(state.memory_bytes() for state in list(self._partitions.values()))

    def assets(self) -> int:
        """Assets with window state."""
        return sum(len(state.windows) for state in list(self._partitions.values()))

    # -- admission -------------------------------------------------------------------------

    def _count(self, outcome: str, events: int = 1) -> None:
        if events and not self._replaying:
            self.counts[outcome] += events
            self.observer.on_event(STAGE, outcome, events)

    def _state(self, key: PartitionKey) -> PartitionState:
        state = self._partitions.get(key)
        if state is None:
            state = self._partitions[key] = PartitionState(
                model_policies={lane.ref.name: AlertPolicy(lane.rules) for lane in self._lanes},
                rule_policies={
                    rule.name: AlertPolicy([rule.policy_rule()]) for rule in self.settings.sensors.rules
                },
            )
        return state

    def _route(self, asset_id: str, kind: str) -> _Route:
        """The model lane (first matching binding) and the value rules of an asset, matched once."""
        key = (asset_id, kind)
        route = self._routes.get(key)
        if route is None:
            bindings = self.settings.sensors.models
            lane = next(
                (
                    lane
                    for binding, lane in zip(bindings, self._lanes, strict=True)
                    if fnmatchcase(asset_id, binding.assets) and fnmatchcase(kind, binding.sensor_kind)
                ),
                None,
            )
            route = self._routes[key] = _Route(
                lane, [r for r in self._value_rules if r.applies(asset_id, kind)]
            )
        return route

    def _intake(self, work: Work, state: PartitionState) -> _Intake:
        reading = work.message
        assert isinstance(reading, SensorReading)
        record = work.record
        sensors = self.settings.sensors
        reference = at(record.timestamp_ms / 1000) if record.timestamp_ms is not None else work.received_at
        check_event_time(reading, reference, sensors)
        samples = expand(reading)
        lane, rules = self._route(reading.asset_id, reading.kind)
        if lane is not None:
            self._count(
                "dropped_channel",
                check_channels(samples, lane.channels, rules, sensors.unknown_channels, lane.spec.ignored),
            )
        intake = _Intake()
        for sample in samples:
            self._sample(work, state, lane, rules, sample, intake)
        if state.advance(samples[-1].time_s, self._stale_every_s):
            self._stale_check(work, state, intake)
        return intake

    def _sample(
        self,
        work: Work,
        state: PartitionState,
        lane: SensorLane[_Window] | None,
        rules: list[SensorRule],
        sample: Sample,
        intake: _Intake,
    ) -> None:
        reading = work.message
        assert isinstance(reading, SensorReading)
        asset = reading.asset_id
        newest = state.rules.newest(asset)
        if newest is None or sample.time_s > newest:
            for rule in rules:
                scores = state.rules.scores(rule, asset, sample.time_s, sample.values)
                for transition in state.rule_policies[rule.name].observe(asset, scores, at(sample.time_s)):
                    intake.outputs.append(
                        self._alert(self._outputs.rule_alert(transition, "threshold", work, sample.values))
                    )
        state.rules.remember(asset, reading.kind, sample.time_s, sample.values)
        if lane is None:
            outcome = (
                "accepted"
                if newest is None or sample.time_s > newest
                else ("duplicate" if sample.time_s == newest else "late")
            )
            ready: list[ReadyWindow] = []
        else:
            window = state.windows.get(asset)
            if window is None:
                window = state.windows[asset] = AssetWindow(
                    window_spec(lane.spec, self.settings.sensors.lateness_s)
                )
            added = window.add(sample.time_s, [sample.values[c] for c in lane.channels])
            outcome, ready = added.outcome, added.ready
            if outcome == "accepted" and newest is not None and sample.time_s < newest:
                self._count("out_of_order")  # within the lateness bound: put back in order
        if outcome != "accepted":
            self._count(outcome)
            intake.outputs.append(self._outputs.unscored_result(work, outcome, sample))
        for window_ready in ready:
            assert lane is not None
            intake.windows.append(_Window(work, len(intake.windows), asset, lane, state, window_ready))

    def _stale_check(self, work: Work, state: PartitionState, intake: _Intake) -> None:
        for rule in self._stale_rules:
            policy = state.rule_policies[rule.name]
            for asset, score in state.rules.stale(rule, state.clock_s).items():
                for transition in policy.observe(asset, {"stale": score}, at(state.clock_s)):
                    alert = self._outputs.rule_alert(transition, "stale_source", work, {}, own=False)
                    intake.outputs.append(self._alert(alert))

    # -- rebuild ---------------------------------------------------------------------------

    def _rebuild(self, key: PartitionKey, until_offset: int) -> None:
        """Replay the partition's recent history into fresh state, outputs discarded."""
        self._partitions.pop(key, None)
        state = self._state(key)
        self._replaying = True  # counts and metrics were taken the first time
        try:
            self._replay(key, state, until_offset)
        finally:
            self._replaying = False

    def _replay(self, key: PartitionKey, state: PartitionState, until_offset: int) -> None:
        sensors = self.settings.sensors
        waiting: list[_Window] = []
        replayed = 0
        for record in read_back(self.settings.kafka, key[0], key[1], until_offset, sensors.rebuild_history_s):
            decoded = decode_record(record, SensorReading, self.settings.runtime.max_message_bytes)
            if isinstance(decoded, Failure):
                continue  # it went to the dead-letter topic the first time
            try:
                intake = self._intake(Work(record, decoded, datetime.now(UTC)), state)
            except ReadingRejected:
                continue
            replayed += 1
            waiting.extend(intake.windows)
            if len(waiting) >= 1024:
                self._score_replayed(waiting)
                waiting = []
        self._score_replayed(waiting)
        self.counts["replayed"] += replayed
        log.info("rebuilt %s/%d from %d records before offset %d", key[0], key[1], replayed, until_offset)

    def _score_replayed(self, windows: list[_Window]) -> None:
        for lane in self._lanes:
            mine = [w for w in windows if w.lane is lane]
            if mine:
                for ready, output in zip(mine, lane.score_now([w.window.values for w in mine]), strict=True):
                    self._window_outputs(ready, output)

    # -- outcomes --------------------------------------------------------------------------

    def _scored_window(self, item: _Window, result: torch.Tensor | BaseException) -> None:
        record = item.work.record
        key = (record.topic, record.partition, record.offset)
        pending = self._pending[key]
        current = self._partitions.get((record.topic, record.partition)) is item.state
        if isinstance(result, BaseException):
            pending.failure = Failure.from_exception("inference_failed", STAGE, result)
        elif current and pending.failure is None:
            try:
                pending.outputs.extend(self._window_outputs(item, result))
            except Exception as error:  # a result that cannot be built fails its reading alone
                log.exception("building the outcome of %s failed", record)
                pending.failure = Failure.from_exception("processing_error", STAGE, error)
        pending.waiting -= 1
        if pending.waiting == 0:
            del self._pending[key]
            self._done.append(
                Outcome(record, tuple(pending.outputs) if pending.failure is None else (), pending.failure)
            )

    def _window_outputs(self, item: _Window, output: torch.Tensor) -> list[Output]:
        """Feed the window's score to the alert policy; the result and alerts to publish."""
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
            self._outputs.window_alert(t, work, lane.ref, window, scored, explanation, inferred_at)
            for t in transitions
        ]
        if not self._replaying:
            self.observer.on_scored(STAGE, at(window.end_s))
        result = self._outputs.window_result(
            work, item.index, item.asset_id, lane.ref, window, scored, inferred_at
        )
        return [self._alert(alert) for alert in alerts] + result

    def _alert(self, alert: Alert) -> Output:
        if not self._replaying:
            self.observer.on_alert(alert.kind, alert.severity, alert.state)
        return self._outputs.alert(alert)
