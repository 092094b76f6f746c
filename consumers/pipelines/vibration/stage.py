"""The vibration stage: spectrum → checked against the model's axes and bins → micro-batched
1-D CNN autoencoder → result and alerts.

Each spectrum is scored alone (no windows), so the stage keeps no partition state beyond
the alert policy's N-of-M memory per asset, which starts afresh after a rebalance. A
spectrum the model cannot take (an axis it needs is missing, another number of bins) is a
dead letter with the reason; an axis it does not know is ``unknown_channel``.

Bound to a registry alias, the model follows its promotions (``ModelReloader``): the new
version's lane is built off this thread and swapped in between batches; spectra already
queued finish on the old lane (each carries its lane), and the alert state carries over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from consumers.pipelines.batcher import Deliver
from consumers.pipelines.lane import ModelLane, ScoredItems
from consumers.pipelines.outputs import PipelineOutputs, ScoredItem
from consumers.pipelines.reload import Binding, BuiltLanes, ModelReloader, retire, warn_if_unpinned
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Output, Rejected, Settled, Work
from models.alert_policy import AlertPolicy, AlertShape
from models.registry import LoadedModel, ModelLoader, registry_loader
from models.vibration.serving import normalised
from schemas.common import Evidence
from schemas.model_card import TensorInputSpec
from schemas.settings import VigilSettings
from schemas.vibration import VibrationSettings, VibrationSpectrum

log = logging.getLogger(__name__)
STAGE = "vibration"
VIBRATION_ALERTS = AlertShape(n=2, m=3)
"""The default: two of an asset's last three spectra past the card threshold."""


class SpectrumRefused(Rejected):
    """The spectrum does not fit the model; ``reason`` is its dead-letter reason."""


@dataclass(frozen=True, slots=True)
class _Spectrum:
    work: Work
    values: np.ndarray
    """(axes, bins) in the model's axis order."""
    lane: SpectrumLane
    """The lane that scores it (a hot reload may have replaced the stage's since)."""


class SpectrumLane(ModelLane[_Spectrum]):
    """One spectrum model: engine, micro-batcher and alert policy."""

    def __init__(
        self,
        section: VibrationSettings,
        model: LoadedModel,
        deliver: Deliver[_Spectrum, torch.Tensor],
        observer: RuntimeObserver,
    ) -> None:
        spec = model.card.input
        if not isinstance(spec, TensorInputSpec) or len(spec.shape) != 2:
            raise ValueError(f"model {model.card.name} does not take (axes, bins) spectra")
        self.spec = spec
        super().__init__(STAGE, model, section, deliver, observer, torch.zeros(*spec.shape), VIBRATION_ALERTS)
        self.policy = AlertPolicy(self.rules)

    def values(self, spectrum: VibrationSpectrum) -> np.ndarray:
        """The spectrum as the model's (axes, bins) item; ``SpectrumRefused`` when it does not fit."""
        axes, bins = self.spec.names, self.spec.shape[1]
        if unknown := sorted(set(spectrum.axes) - set(axes)):
            raise SpectrumRefused(
                "unknown_channel", f"model {self.ref.name} knows no axis {', '.join(unknown)}"
            )
        if missing := [axis for axis in axes if axis not in spectrum.axes]:
            raise SpectrumRefused("invalid_value", f"model {self.ref.name} needs axis {', '.join(missing)}")
        if spectrum.bins != bins:
            raise SpectrumRefused(
                "invalid_value", f"model {self.ref.name} takes {bins} bins, got {spectrum.bins}"
            )
        return np.asarray([spectrum.axes[axis] for axis in axes], dtype=np.float32)

    def prepare(self, batch: Sequence[_Spectrum]) -> torch.Tensor:
        """The batch, ``log1p``-normalised, on the device."""
        return self.engine.prepare(normalised(np.stack([item.values for item in batch]), self.spec))


class VibrationStage:
    """``ProcessingStage`` for ``VibrationSpectrum`` inputs; see the module docstring."""

    name = STAGE

    def __init__(
        self,
        settings: VigilSettings,
        section: VibrationSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.observer = observer or RuntimeObserver()
        load = loader or registry_loader(section.registry)
        self._scored: ScoredItems[_Spectrum] = ScoredItems()
        self.lane = SpectrumLane(
            section, load(section.model, section.model_version), self._scored.deliver, self.observer
        )
        warn_if_unpinned(section.registry, section.model, section.model_version, self.lane.ref.version)
        self._outputs = PipelineOutputs(settings, STAGE)
        self._done: list[Outcome] = []
        self._in_flight = 0
        self._built: BuiltLanes[SpectrumLane] = BuiltLanes()
        self.reloader: ModelReloader[SpectrumLane] = ModelReloader(
            STAGE,
            section.registry,
            section.reload_interval_s,
            lambda: [Binding(STAGE, section.model, section.model_version, self.lane.ref.version)],
            lambda _, model: SpectrumLane(section, model, self._scored.deliver, self.observer),
            self._built.put,
            load,
            self.observer,
        )
        self.reloader.start()

    def _swap_lane(self) -> None:
        """Install a lane the reloader built (the runtime's thread, between batches)."""
        for _, lane in self._built.take():
            old, self.lane = self.lane, lane
            lane.policy.continue_from(old.policy)
            retire(old.close, STAGE)

    def submit(self, work: Sequence[Work]) -> None:
        """Queue each spectrum for its model; one that does not fit fails at once."""
        self._swap_lane()
        for item in work:
            self._in_flight += 1
            spectrum = item.message
            assert isinstance(spectrum, VibrationSpectrum)
            try:
                values = self.lane.values(spectrum)
            except SpectrumRefused as error:
                self._done.append(Outcome(item.record, failure=error.failure(STAGE)))
                continue
            self.lane.batcher.put(_Spectrum(item, values, self.lane))

    def collect(self, timeout_s: float) -> list[Outcome]:
        """Outcomes finished since the last call (results and alerts are built here)."""
        for item, result in self._scored.drain(timeout_s):
            try:
                self._done.append(self._outcome(item, result))
            except Exception as error:  # a result that cannot be built fails its spectrum alone
                log.exception("building the outcome of %s failed", item.work.record)
                failure = Failure.from_exception("processing_error", STAGE, error)
                self._done.append(Outcome(item.work.record, failure=failure))
        done, self._done = self._done, []
        self._in_flight -= len(done)
        return done

    def in_flight(self) -> int:
        """Spectra submitted whose outcome has not been collected."""
        return self._in_flight

    def on_assignment(self, held: set[tuple[str, int]]) -> None:
        """Spectra are scored alone: no partition state to drop or restore."""

    def restoring(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Spectra are scored alone: nothing to restore."""
        return {}

    def handoff(self, settled: Mapping[tuple[str, int], Settled]) -> list[Output]:
        """Spectra are scored alone: no state to hand over."""
        return []

    def close(self) -> None:
        """Finish queued batches and stop the lane."""
        self.reloader.stop()
        self._swap_lane()
        self.lane.close()

    def _outcome(self, item: _Spectrum, result: torch.Tensor | BaseException) -> Outcome:
        record = item.work.record
        if isinstance(result, BaseException):
            return Outcome(record, failure=Failure.from_exception("inference_failed", STAGE, result))
        spectrum = item.work.message
        assert isinstance(spectrum, VibrationSpectrum)
        errors = result.tolist()  # float32 from the engine already
        total = sum(errors)
        lane = item.lane
        axes = lane.spec.names
        share = {axis: (e / total if total > 0 else 0.0) for axis, e in zip(axes, errors, strict=True)}
        top = ", ".join(f"{axis} {s:.0%}" for axis, s in sorted(share.items(), key=lambda kv: -kv[1]))
        scored = ScoredItem(
            record,
            spectrum.asset_id,
            lane.ref,
            {"anomaly": total / len(errors)},
            Evidence(topic=record.topic, partition=record.partition, offset=record.offset),
            spectrum.measured_at,
            item.work.received_at,
            "sensor_anomaly",
            site=spectrum.site,
            explanation=share,
            message=lambda t: f"vibration anomaly {t.state} on {t.source_id}; axes: {top}",
        )
        return Outcome(record, tuple(self._outputs.scored(scored, lane.policy, self.observer)))
