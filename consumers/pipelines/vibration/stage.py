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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from consumers.pipelines.batcher import Deliver
from consumers.pipelines.lane import ModelLane
from consumers.pipelines.model_stage import ModelStage
from consumers.pipelines.outputs import PipelineOutputs, ScoredItem
from consumers.pipelines.reload import Binding, warn_if_unpinned
from consumers.runtime.observer import RuntimeObserver
from consumers.runtime.records import Failure, Outcome, Rejected, Work
from models.alert_policy import AlertPolicy, AlertShape
from models.registry import LoadedModel, ModelLoader, registry_loader
from models.vibration.serving import normalised
from schemas.common import Evidence
from schemas.model_card import TensorInputSpec
from schemas.settings import VigilSettings
from schemas.vibration import VibrationSettings, VibrationSpectrum

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

    def scored(self, work: Work, spectrum: VibrationSpectrum, output: torch.Tensor) -> ScoredItem:
        """What one spectrum scored: the mean error, and each axis's share of it."""
        record = work.record
        errors = output.tolist()  # float32 from the engine already
        total = sum(errors)
        share = {
            axis: (e / total if total > 0 else 0.0) for axis, e in zip(self.spec.names, errors, strict=True)
        }
        top = ", ".join(f"{axis} {s:.0%}" for axis, s in sorted(share.items(), key=lambda kv: -kv[1]))
        return ScoredItem(
            record,
            spectrum.asset_id,
            self.ref,
            {"anomaly": total / len(errors)},
            Evidence(topic=record.topic, partition=record.partition, offset=record.offset),
            spectrum.measured_at,
            work.received_at,
            "sensor_anomaly",
            site=spectrum.site,
            explanation=share,
            message=lambda t: f"vibration anomaly {t.state} on {t.source_id}; axes: {top}",
        )


class VibrationStage(ModelStage[_Spectrum, SpectrumLane]):
    """``ProcessingStage`` for ``VibrationSpectrum`` inputs; see the module docstring."""

    def __init__(
        self,
        settings: VigilSettings,
        section: VibrationSettings,
        loader: ModelLoader | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        super().__init__(STAGE, observer)
        load = loader or registry_loader(section.registry)
        self.lane = SpectrumLane(
            section, load(section.model, section.model_version), self._scored.deliver, self.observer
        )
        warn_if_unpinned(section.registry, section.model, section.model_version, self.lane.ref.version)
        self._outputs = PipelineOutputs(settings, STAGE)
        self._start_reloader(
            section.registry,
            section.reload_interval_s,
            lambda: [Binding(STAGE, section.model, section.model_version, self.lane.ref.version)],
            lambda _, model: SpectrumLane(section, model, self._scored.deliver, self.observer),
            load,
        )

    def serving_lanes(self) -> list[SpectrumLane]:
        """The one lane serving now."""
        return [self.lane]

    def _install(self, binding: Binding, lane: SpectrumLane) -> SpectrumLane:
        old, self.lane = self.lane, lane
        lane.policy.continue_from(old.policy)
        return old

    def _admit(self, work: Sequence[Work]) -> None:
        """Queue each spectrum for its model; one that does not fit fails at once."""
        for item in work:
            spectrum = item.message
            assert isinstance(spectrum, VibrationSpectrum)
            try:
                values = self.lane.values(spectrum)
            except SpectrumRefused as error:
                self._finish(Outcome(item.record, failure=error.failure(STAGE)))
                continue
            self.lane.batcher.put(_Spectrum(item, values, self.lane))

    def _scored_item(self, item: _Spectrum, result: torch.Tensor | BaseException) -> Outcome:
        record = item.work.record
        if isinstance(result, BaseException):
            return Outcome(record, failure=Failure.from_exception("inference_failed", STAGE, result))
        spectrum = item.work.message
        assert isinstance(spectrum, VibrationSpectrum)
        scored = item.lane.scored(item.work, spectrum, result)
        return Outcome(record, tuple(self._outputs.scored(scored, item.lane.policy, self.observer)))
