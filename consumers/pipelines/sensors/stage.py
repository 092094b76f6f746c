"""The sensor stage: readings → per-asset windows and rules → micro-batched RNN → results and alerts.

Per poll batch of a partition, in the runtime's thread, ``admission`` runs the steps: each
reading's event-time and channel checks and its asset's route to a model lane and value rules,
then per asset its samples through its rules and into its window, and the partition's stale
check. A bad reading is a failure with its dead-letter reason; a late or duplicate sample a
``late``/``duplicate`` result.
Windows made ready go to their lane's micro-batcher, and the reading's outcome waits for
their scores: ``collect`` joins them and builds the window results and model alerts in
window order.

State is per input partition (``PartitionState``): dropped when the partition goes, restored
when it comes. The first record fetched after an assignment starts a restore off this thread
(``restore``): the partition's recent history, as far back as its windows and rules look, is
replayed through the same steps, outputs discarded (``rebuild``). Meanwhile the partition is
reported by ``restoring`` (the runtime pauses it) and its fetched readings wait; they are
admitted once the state is installed here.

A binding to a registry alias follows its promotions (``ModelReloader``): the new version's
lane is loaded and warmed up off this thread, then swapped in here, between batches; windows
already queued finish on the old lane, which then closes. A new version must take the same
window and channels (the windows held are shaped by them), or it is refused and the old
one kept; the alert state carries over, under the new version's rules.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from consumers.pipelines.model_stage import ModelStage
from consumers.pipelines.reload import Binding, warn_if_unpinned
from consumers.pipelines.sensors.admission import Admission
from consumers.pipelines.sensors.changelog import fingerprint, handoff_outputs, read_handoff
from consumers.pipelines.sensors.history import read_back
from consumers.pipelines.sensors.lanes import SensorLane
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.pipelines.sensors.partition import PartitionState
from consumers.pipelines.sensors.rebuild import rebuild
from consumers.pipelines.sensors.restore import PartitionRestorer, Restore, RestoreCancelled, history_span_s
from consumers.pipelines.sensors.routing import Router
from consumers.pipelines.sensors.tally import STAGE, Tally
from consumers.pipelines.sensors.windows import WindowItem
from consumers.runtime.kafka_clients import make_reader
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Output, Settled, Work
from models.alert_policy import AlertPolicy
from models.registry import LoadedModel, ModelLoader, registry_loader
from schemas.model_card import SeriesInputSpec
from schemas.settings import VigilSettings

log = logging.getLogger(__name__)
PartitionKey = tuple[str, int]


@dataclass
class _Pending:
    """A reading whose windows are being scored: its outputs so far and the scores it waits for."""

    work: Work
    outputs: list[Output]
    waiting: int
    failure: Failure | None = None


class SensorStage(ModelStage[WindowItem, SensorLane[WindowItem]]):
    """``ProcessingStage`` for ``SensorReading`` inputs; see the module docstring."""

    def __init__(
        self,
        settings: VigilSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        super().__init__(STAGE, observer)
        self.settings = settings
        sensors = settings.sensors
        load = loader or registry_loader(sensors.registry)
        self._lanes = [
            SensorLane[WindowItem](
                load(binding.model, binding.model_version),
                sensors,
                self._scored.deliver,
                self.observer,
                binding.batching,
            )
            for binding in sensors.models
        ]
        for binding, lane in zip(sensors.models, self._lanes, strict=True):
            warn_if_unpinned(sensors.registry, binding.model, binding.model_version, lane.ref.version)
        self._outputs = SensorOutputs(settings)
        self._router: Router[SensorLane[WindowItem]] = Router(sensors.models, self._lanes, sensors.rules)
        self._admission = Admission(sensors, self._router, self._outputs)
        self.counts: Counter[str] = Counter()
        """Events counted rather than dead-lettered: late, duplicate, dropped_channel, replayed."""
        self._tally = Tally(self.observer, self.counts)
        self._partitions: dict[PartitionKey, PartitionState] = {}
        self._held: set[PartitionKey] = set()
        self._fresh: set[PartitionKey] = set()
        self._restoring: dict[PartitionKey, Restore] = {}
        self._restorer = PartitionRestorer(self._restore)
        self._changelog_partitions: int | None = None
        self._done_below: dict[PartitionKey, int] = {}
        """Per partition taken over through the changelog: records below this offset were
        processed by the old owner (its outputs acknowledged); they complete with none."""
        self._pending: dict[tuple[str, int, int], _Pending] = {}
        self.observer.on_state(STAGE, self.memory_bytes, self.assets)
        self._start_reloader(
            sensors.registry,
            sensors.reload_interval_s,
            lambda: [
                Binding(str(i), b.model, b.model_version, lane.ref.version)
                for i, (b, lane) in enumerate(zip(sensors.models, list(self._lanes), strict=True))
            ],
            self._build_lane,
            load,
        )

    @property
    def lanes(self) -> list[SensorLane[WindowItem]]:
        """The lanes serving now, one per model binding."""
        return self.serving_lanes()

    def serving_lanes(self) -> list[SensorLane[WindowItem]]:
        """The lanes serving now, one per model binding."""
        return list(self._lanes)

    # -- hot reload ------------------------------------------------------------------------

    def _build_lane(self, binding: Binding, model: LoadedModel) -> SensorLane[WindowItem]:
        """The lane of a new version of ``binding``'s model (the reloader's thread)."""
        old = self._lanes[int(binding.key)].spec
        new = model.card.input
        if not isinstance(new, SeriesInputSpec) or (new.window, new.channels) != (old.window, old.channels):
            raise ValueError(
                "it takes other windows or channels than the version served; that needs a restart"
            )
        sensors = self.settings.sensors
        batching = sensors.models[int(binding.key)].batching
        return SensorLane[WindowItem](model, sensors, self._scored.deliver, self.observer, batching)

    def _install(self, binding: Binding, lane: SensorLane[WindowItem]) -> SensorLane[WindowItem]:
        index = int(binding.key)
        old, self._lanes[index] = self._lanes[index], lane
        self._router.rebind(old, lane)
        for state in self._partitions.values():
            policy = state.model_policies.get(old.ref.name)
            if policy is not None:
                policy.rules = list(lane.rules)
        return old

    # -- ProcessingStage -------------------------------------------------------------------

    def _admit(self, work: Sequence[Work]) -> None:
        """Admit the readings, a partition's at a time; outcomes of readings that completed a
        window wait for its score."""
        by_partition: dict[PartitionKey, list[Work]] = {}
        for item in work:
            by_partition.setdefault((item.record.topic, item.record.partition), []).append(item)
        for key, readings in by_partition.items():
            if key in self._fresh:
                self._fresh.discard(key)
                if self.settings.sensors.rebuild_history_s != 0:
                    self._restoring[key] = self._restorer.start(key, readings[0].record.offset)
            restoring = self._restoring.get(key)
            if restoring is not None:
                restoring.held += readings
            else:
                self._admit_partition(key, readings)

    def _admit_partition(self, key: PartitionKey, readings: Sequence[Work]) -> None:
        """Admit a partition's readings (counted in flight); outcomes wait for window scores."""
        done_below = self._done_below.get(key)
        if done_below is not None:
            readings = self._complete_below(key, done_below, readings)
        if readings:
            for item, admitted in zip(
                readings, self._admission.admit(readings, self._state(key), self._tally), strict=True
            ):
                record = item.record
                if isinstance(admitted, Failure):
                    self._finish(Outcome(record, failure=admitted))
                elif not admitted.windows:
                    self._finish(Outcome(record, tuple(admitted.outputs)))
                else:
                    self._pending[(record.topic, record.partition, record.offset)] = _Pending(
                        item, admitted.outputs, len(admitted.windows)
                    )
                    for ready in admitted.windows:
                        ready.lane.batcher.put(ready)

    def _complete_below(self, key: PartitionKey, done_below: int, readings: Sequence[Work]) -> Sequence[Work]:
        """Complete, with no outputs, the readings the old owner already processed; the rest."""
        done = [item for item in readings if item.record.offset < done_below]
        for item in done:
            self._finish(Outcome(item.record))
        self.counts["done_by_previous_owner"] += len(done)
        if len(done) < len(readings):
            del self._done_below[key]  # past it: the partition is live
        return readings[len(done) :]

    def _before_collect(self) -> None:
        self._install_restored()

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Partitions whose state is being restored: (records read back, records to read)."""
        return {key: (job.read, job.total) for key, job in self._restoring.items()}

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """The changelog records that hand each settled partition's state over (``changelog``)."""
        keys = [
            key
            for key in settled
            if key in self._partitions and key not in self._restoring and key not in self._done_below
        ]
        partitions = self._changelog() if keys else None
        if partitions is None:
            return []
        topic, shaped_by = self.settings.topics.sensor_state.name, self._shaped_by()
        outputs: list[Output] = []
        for key in keys:
            outputs += handoff_outputs(topic, partitions, key, settled[key], self._partitions[key], shaped_by)
        return outputs

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Drop the state of partitions no longer held (a restore under way is cancelled, its
        waiting readings abandoned: the runtime forgot them); mark new ones for a restore."""
        for key in self._held - held:
            self._partitions.pop(key, None)
            self._done_below.pop(key, None)
            self._fresh.discard(key)
            job = self._restoring.pop(key, None)
            if job is not None:
                job.cancelled = True
                self.abandon(len(job.held))
        self._fresh |= held - self._held
        self._held = set(held)

    def close(self) -> None:
        """Stop restoring, finish queued batches and stop the lanes."""
        self._restorer.close()
        super().close()

    def partition_state(self, key: PartitionKey) -> PartitionState | None:
        """The state held for partition ``key`` (None when not held)."""
        return self._partitions.get(key)

    def install_state(self, key: PartitionKey, state: PartitionState) -> None:
        """Hold ``state`` for partition ``key`` as if restored (benches and tools)."""
        self._partitions[key] = state

    def memory_bytes(self) -> int:
        """Bytes held by every asset window of every partition."""
        return sum(state.memory_bytes() for state in list(self._partitions.values()))

    def assets(self) -> int:
        """Assets with window state."""
        return sum(len(state.windows) for state in list(self._partitions.values()))

    # -- state -----------------------------------------------------------------------------

    def _state(self, key: PartitionKey) -> PartitionState:
        state = self._partitions.get(key)
        if state is None:
            state = self._partitions[key] = self._new_state()
        return state

    def _new_state(self) -> PartitionState:
        return PartitionState(
            model_policies={lane.ref.name: AlertPolicy(lane.rules) for lane in self._lanes},
            rule_policies={
                rule.name: AlertPolicy([rule.policy_rule()]) for rule in self.settings.sensors.rules
            },
        )

    def _changelog(self) -> int | None:
        """The changelog's partition count (looked up once); None, with a warning, when it does
        not exist: partitions then move by reading the input back."""
        if self._changelog_partitions is None:
            topic = self.settings.topics.sensor_state.name
            reader = make_reader(self.settings.kafka)
            try:
                self._changelog_partitions = len(reader.partitions_for_topic(topic) or ())
            finally:
                reader.close()
            if not self._changelog_partitions:
                log.warning("the sensor state topic %s does not exist (vigil topics create makes it)", topic)
        return self._changelog_partitions or None

    def _shaped_by(self) -> str:
        """What a handed-over state must have been shaped by to be installed here."""
        lanes = [(lane.ref, lane.spec, lane.rules) for lane in list(self._lanes)]
        return fingerprint([lanes, self.settings.sensors.model_dump(mode="json")])

    def _restore(self, job: Restore) -> PartitionState:
        """A partition's state: handed over through the changelog when one is there for exactly
        this offset, else rebuilt from the input's recent history (the restorer's thread)."""
        taken = self.restore_from_changelog(job)
        if taken is not None:
            job.source = "changelog"
            state, job.done_below = taken
            return state
        return self.restore_from_history(job)

    def restore_from_changelog(self, job: Restore) -> tuple[PartitionState, int] | None:
        """A partition's state and the offset below which its records were processed, handed
        over through the changelog for ``job``'s offset; None when none is there (any thread)."""
        try:
            partitions = self._changelog()
            if partitions is None:
                return None
            kafka, topic = self.settings.kafka, self.settings.topics.sensor_state.name
            handoff = read_handoff(kafka, topic, partitions, job.key, progress=job.report)
            return handoff.state_at(job.until_offset, self._shaped_by(), self._new_state())
        except RestoreCancelled:
            raise
        except Exception as error:  # the changelog is a shortcut: the input is the truth
            log.warning(
                "reading %s/%d's handed-over state failed, reading the input back: %r", *job.key, error
            )
            return None

    def restore_from_history(self, job: Restore) -> PartitionState:
        """A partition's state rebuilt from its recent history (the restorer's thread)."""
        sensors = self.settings.sensors
        span_s = sensors.rebuild_history_s
        if span_s is None:
            specs = [(lane.spec, lane.rules) for lane in self._lanes]
            span_s = history_span_s(specs, sensors.rules, sensors.lateness_s)
        history = read_back(self.settings.kafka, *job.key, job.until_offset, span_s, progress=job.report)
        state = self._new_state()
        job.replayed = rebuild(
            state, history, self._admission, self._outputs, self.settings.runtime.max_message_bytes
        )
        return state

    def _install_restored(self) -> None:
        """Install the states restored since the last call and admit the readings that waited."""
        for job in self._restorer.finished():
            if self._restoring.get(job.key) is not job or job.state is None:
                continue  # the partition went and came back: a newer restore is under way
            del self._restoring[job.key]
            self._partitions[job.key] = job.state
            if job.done_below > job.until_offset:
                self._done_below[job.key] = job.done_below
            self.counts["replayed"] += job.replayed
            self.counts[f"restored_from_{job.source}"] += 1
            self.observer.on_restored(STAGE, job.source)
            log.info(
                "restored %s/%d from the %s at offset %d (%d records replayed, %d waited)",
                *job.key,
                job.source,
                job.until_offset,
                job.replayed,
                len(job.held),
            )
            self._admit_partition(job.key, job.held)

    # -- outcomes --------------------------------------------------------------------------

    def _scored_item(self, item: WindowItem, result: torch.Tensor | BaseException) -> Outcome | None:
        """The reading's outcome once the last of its windows is scored; None before."""
        record = item.work.record
        key = (record.topic, record.partition, record.offset)
        pending = self._pending[key]
        current = self._partitions.get((record.topic, record.partition)) is item.state
        if isinstance(result, BaseException):
            pending.failure = Failure.from_exception("inference_failed", STAGE, result)
        elif current and pending.failure is None:
            try:
                pending.outputs.extend(self._outputs.scored_window(item, result, self._tally))
            except Exception as error:  # a result that cannot be built fails its reading alone
                log.exception("building the outcome of %s failed", record)
                pending.failure = Failure.from_exception("processing_error", STAGE, error)
        pending.waiting -= 1
        if pending.waiting:
            return None
        del self._pending[key]
        outputs = tuple(pending.outputs) if pending.failure is None else ()
        return Outcome(record, outputs, pending.failure)
