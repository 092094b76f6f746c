"""A poll batch of one partition's readings through the sensor stage's steps, in the runtime's
thread.

Each reading first alone: its event-time and channel checks (``intake``) and its asset's route
(``routing``, with the channel check's verdict kept per set of channel names). A reading that
cannot be used gets its dead-letter reason and changes no state. The rest go in per asset, in
arrival order: each sample through the asset's value rules (``rules``), and all of them into
the asset's window in one call (``windows``: a long run on the grid is one numpy step).

Assets share nothing but the partition's event-time clock, against which stale sources are
judged once per interval. The batch is cut after each reading that moves the clock into a
new interval and the stale check runs there, so a batch admits exactly what admitting its
readings one at a time would, and a partition rebuilt from history (``rebuild``, the same
steps with a silent tally) reaches the same state whatever its poll batches were.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from consumers.pipelines.sensors.intake import (
    ReadingRejected,
    channel_sets,
    check_channels,
    check_event_time,
    check_model_range,
    expand,
    sample_times,
)
from consumers.pipelines.sensors.lanes import SensorLane
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState, stale_interval
from consumers.pipelines.sensors.routing import Route, Router
from consumers.pipelines.sensors.rules import stale_transitions, value_transitions
from consumers.pipelines.sensors.tally import STAGE, Tally
from consumers.pipelines.sensors.windows import WindowItem, window_of
from consumers.runtime.records import Failure, Output, Work
from models.alert_policy import Transition, matches
from models.sensors.windows import VECTOR_MIN
from schemas.messages import AlertKind, SensorReading
from schemas.settings import SensorSettings

log = logging.getLogger(__name__)

SensorRoute = Route[SensorLane[WindowItem]]

VERDICTS_KEPT = 16
"""Sets of channel names whose check is kept per route; further sets are checked each time."""


@dataclass
class Admitted:
    """What admitting one reading produced: outputs so far and windows to score."""

    outputs: list[Output] = field(default_factory=list)
    windows: list[WindowItem] = field(default_factory=list)


@dataclass(slots=True)
class _Taken:
    """A reading that passed its checks: where it goes, its sample times, what it produced."""

    work: Work
    reading: SensorReading
    route: SensorRoute
    dropped: tuple[str, ...]
    times: list[float]
    admitted: Admitted = field(default_factory=Admitted)
    failure: Failure | None = None


class Admission:
    """Admits readings into a partition's state; see the module docstring."""

    def __init__(
        self, settings: SensorSettings, router: Router[SensorLane[WindowItem]], outputs: SensorOutputs
    ) -> None:
        self._settings = settings
        self._router = router
        self._outputs = outputs
        self._stale_every_s = stale_interval(settings.rules)

    def admit(self, works: Sequence[Work], state: PartitionState, tally: Tally) -> list[Admitted | Failure]:
        """Admit ``works`` (readings of the partition of ``state``, in offset order): for each,
        what it produced, or the failure that dead-letters it."""
        results: list[Admitted | Failure | None] = [None] * len(works)
        taken: list[tuple[int, _Taken]] = []
        for position, work in enumerate(works):
            try:
                taken.append((position, self._check(work, tally)))
            except ReadingRejected as error:
                results[position] = error.failure(STAGE)
            except Exception as error:  # a bug fails this reading alone, never the stage
                log.exception("reading %s failed unexpectedly", work.record)
                results[position] = Failure.from_exception("processing_error", STAGE, error)
        start = 0
        for end, (_, item) in enumerate(taken, 1):
            if state.advance(item.times[-1], self._stale_every_s):
                self._take([t for _, t in taken[start:end]], state, tally)
                self._stale_check(state, item, tally)
                start = end
        self._take([t for _, t in taken[start:]], state, tally)
        for position, item in taken:
            results[position] = item.failure or item.admitted
        return [result for result in results if result is not None]

    def _stale_check(self, state: PartitionState, item: _Taken, tally: Tally) -> None:
        """The stale rules at the partition's clock, their alerts riding on ``item``; a bug fails
        that reading alone."""
        try:
            stale = stale_transitions(state.rules, state.rule_policies, self._settings.rules, state.clock_s)
            self._alerts(stale, "stale_source", item, {}, tally, own=False)
        except Exception as error:
            log.exception("the stale check after %s failed unexpectedly", item.work.record)
            item.failure = Failure.from_exception("processing_error", STAGE, error)

    def _check(self, work: Work, tally: Tally) -> _Taken:
        """The reading's checks and route; ``ReadingRejected`` when it cannot be used."""
        reading = work.message
        assert isinstance(reading, SensorReading)
        stamp = work.record.timestamp_ms
        check_event_time(
            reading, stamp / 1000 if stamp is not None else work.received_at.timestamp(), self._settings
        )
        route = self._router.route(reading.asset_id, reading.kind)
        if reading.block is None and reading.values:  # one sample: the common case, kept short
            dropped: tuple[str, ...] = ()
            if route.lane is not None:
                dropped = self._verdict(route, tuple(reading.values))
                check_model_range(reading, route.lane.channels, route.lane.value_limits)
            tally.event("dropped_channel", len(dropped))
            return _Taken(work, reading, route, dropped, [reading.event_time.timestamp()])
        extra: set[str] = set()
        if route.lane is not None:
            for names, samples in channel_sets(reading):
                dropped = self._verdict(route, names)
                extra.update(dropped)
                tally.event("dropped_channel", len(dropped) * samples)
            check_model_range(reading, route.lane.channels, route.lane.value_limits)
        return _Taken(work, reading, route, tuple(extra), sample_times(reading))

    def _verdict(self, route: SensorRoute, names: tuple[str, ...]) -> tuple[str, ...]:
        """The channel check of a model-scored route on one set of channel names, worked out
        once per set: the unknown channels to drop, or ``ReadingRejected``."""
        verdict = route.verdicts.get(names)
        if verdict is None:
            lane = route.lane
            assert lane is not None
            try:
                verdict = check_channels(
                    names, lane.channels, route.rules, self._settings.unknown_channels, lane.spec.ignored
                )
            except ReadingRejected as error:
                verdict = error
            if len(route.verdicts) < VERDICTS_KEPT:  # a source inventing channel names cannot grow it
                route.verdicts[names] = verdict
        if isinstance(verdict, ReadingRejected):
            raise ReadingRejected(verdict.reason, str(verdict))
        assert isinstance(verdict, tuple)
        return verdict

    def _take(self, taken: list[_Taken], state: PartitionState, tally: Tally) -> None:
        """Take checked readings in, asset by asset; a bug fails the readings of its asset alone."""
        by_asset: dict[str, list[_Taken]] = {}
        for item in taken:
            items = by_asset.get(item.reading.asset_id)
            if items is None:
                by_asset[item.reading.asset_id] = [item]
            else:
                items.append(item)
        for asset, items in by_asset.items():
            runs = (
                [items] if len(items) == 1 else [list(r) for _, r in itertools.groupby(items, key=_route_of)]
            )
            for run in runs:
                try:
                    self._take_asset(asset, run, state, tally)
                except Exception as error:
                    log.exception("readings of %s failed unexpectedly", asset)
                    for item in run:
                        item.failure = Failure.from_exception("processing_error", STAGE, error)

    def _take_asset(self, asset: str, items: list[_Taken], state: PartitionState, tally: Tally) -> None:
        """Readings of one asset on one route, in order: rules sample by sample, then the window."""
        route, lane = items[0].route, items[0].route.lane
        if len(items) == 1:
            times, owners = items[0].times, items * len(items[0].times)
        else:
            times = [time_s for item in items for time_s in item.times]
            owners = [item for item in items for _ in item.times]
        lateness_s = self._settings.lateness_s
        newest_before = (
            _newest_before(state.rules.newest(asset), times) if lane is None or lateness_s > 0 else []
        )
        channels = _same_channels(items) if route.rules and len(times) >= VECTOR_MIN else None
        if channels is not None:
            self._rules_on_arrays(asset, items, owners, channels, state, tally)
        else:
            for item in items:
                if route.rules:
                    self._rules(asset, item, state, tally)
                else:
                    _remember_last(item, asset, state)
        if lane is None:  # no window: a sample no newer than the asset's newest is refused
            for time_s, newest, item in zip(times, newest_before, owners, strict=True):
                if time_s <= newest:
                    self._refused(item, "duplicate" if time_s == newest else "late", time_s, tally)
            return
        window = window_of(state, asset, lane, lateness_s, self._settings.stagger_windows)
        extended = window.extend(times, _rows(items, lane.channels))
        for index, outcome in extended.refused:
            self._refused(owners[index], outcome, times[index], tally)
        if newest_before:
            refused = dict(extended.refused)
            for index, (time_s, newest) in enumerate(zip(times, newest_before, strict=True)):
                if index not in refused and time_s < newest:
                    tally.event("out_of_order")  # within the lateness bound: put back in order
        for index, ready in extended.ready:
            admitted = owners[index].admitted
            admitted.windows.append(
                WindowItem(owners[index].work, len(admitted.windows), asset, lane, state, ready)
            )

    def _rules(self, asset: str, item: _Taken, state: PartitionState, tally: Tally) -> None:
        """The reading's samples through the asset's value rules, each as it comes."""
        memory = state.rules
        for sample in expand(item.reading, item.dropped):
            fired = value_transitions(
                memory, state.rule_policies, item.route.rules, asset, sample.time_s, sample.values
            )
            self._alerts(fired, "threshold", item, sample.values, tally)
            memory.remember(asset, item.reading.kind, sample.time_s, sample.values)

    def _rules_on_arrays(
        self,
        asset: str,
        items: list[_Taken],
        owners: list[_Taken],
        channels: tuple[str, ...],
        state: PartitionState,
        tally: Tally,
    ) -> None:
        """A long run's samples (every one with the same ``channels``) through the asset's value
        rules at once: the alerts ``_rules`` would raise sample by sample, in the same order."""
        route, memory, kind = items[0].route, state.rules, items[0].reading.kind
        times = np.asarray([time_s for item in items for time_s in item.times])
        values = np.concatenate([_columns(item, channels, np.float64) for item in items])
        newer = times > np.asarray(_newest_before(memory.newest(asset), times.tolist()))
        found = []
        for number, rule in enumerate(route.rules):
            for column, channel in enumerate(channels):
                if matches(channel, rule.channel):
                    scores = memory.scores_of_run(rule, asset, channel, times, values[:, column], newer)
                    found += [
                        (index, number, policy_rule, column, transition)
                        for index, policy_rule, transition in state.rule_policies[rule.name].observe_run(
                            asset, channel, scores, times.tolist()
                        )
                    ]
        memory.remember_run(asset, kind, times, channels, values)
        for index, _, _, column, transition in sorted(found, key=lambda f: f[:4]):
            self._alerts(
                [transition],
                "threshold",
                owners[index],
                {channels[column]: float(values[index, column])},
                tally,
            )

    def _refused(self, item: _Taken, outcome: str, time_s: float, tally: Tally) -> None:
        tally.event(outcome)
        item.admitted.outputs.append(self._outputs.unscored_result(item.work, outcome, time_s))

    def _alerts(
        self,
        transitions: list[Transition],
        kind: AlertKind,
        item: _Taken,
        values: dict[str, float],
        tally: Tally,
        own: bool = True,
    ) -> None:
        for transition in transitions:
            alert = self._outputs.rule_alert(transition, kind, item.work, values, own=own)
            tally.alert(alert)
            item.admitted.outputs.append(self._outputs.alert(alert))


def _route_of(item: _Taken) -> int:
    return id(item.route)


def _newest_before(newest: float | None, times: list[float]) -> list[float]:
    """The asset's newest event time before each of ``times`` (the rules remember every
    sample); -inf before its first."""
    before = []
    latest = -math.inf if newest is None else newest
    for time_s in times:
        before.append(latest)
        latest = max(latest, time_s)
    return before


def _remember_last(item: _Taken, asset: str, state: PartitionState) -> None:
    """What the rules remember of a reading no rule watches: its newest value of each channel
    (the values, then the block's last row), as remembering every sample would leave it."""
    reading, memory = item.reading, state.rules
    if reading.values:
        values = reading.values
        if item.dropped:
            values = {c: v for c, v in values.items() if c not in item.dropped}
        memory.remember(asset, reading.kind, item.times[0], values)
    if reading.block is not None:
        last = {c: series[-1] for c, series in reading.block.channels.items() if c not in item.dropped}
        memory.remember(asset, reading.kind, item.times[-1], last)


def _same_channels(items: list[_Taken]) -> tuple[str, ...] | None:
    """The channels every sample of ``items`` has, when each has the same ones, in the same order."""
    sets = {
        tuple(c for c in names if c not in item.dropped)
        for item in items
        for names, _ in channel_sets(item.reading)
    }
    return sets.pop() if len(sets) == 1 else None


def _columns(item: _Taken, channels: Sequence[str], dtype: type[np.floating]) -> np.ndarray:
    """``channels`` of the reading's samples, one row per sample."""
    reading, parts = item.reading, []
    if reading.values:
        parts.append(np.asarray([[reading.values[c] for c in channels]], dtype=dtype))
    if reading.block is not None:
        block = reading.block.channels
        parts.append(np.column_stack([np.asarray(block[c], dtype=dtype) for c in channels]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _rows(items: list[_Taken], channels: Sequence[str]) -> list[list[float]] | np.ndarray:
    """The model's channels of every sample of ``items``, one row per sample."""
    if all(item.reading.block is None for item in items):
        return [[item.reading.values[c] for c in channels] for item in items if item.reading.values]
    return np.concatenate([_columns(item, channels, np.float32) for item in items])
