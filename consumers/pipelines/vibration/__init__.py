"""Vibration spectra: per-axis FFT blocks from condition-monitoring sensors → 1-D CNN autoencoder → results and alerts.

Settings: ``pipelines.vibration`` (``schemas.vibration.VibrationSettings``); input topic
``vigil.vibration``; model task ``spectrum_autoencoder`` (``models/vibration/serving.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from consumers.pipelines.contract import DemoLane, DemoOptions, PinError, Pipeline, PipelineKind
from consumers.runtime.observer import RuntimeObserver
from schemas.settings import VigilSettings
from schemas.vibration import VibrationSettings, VibrationSpectrum

DEMO_MODEL, DEMO_VERSION = "demo-vibration", "1"
DEMO_FANS = ("fan-1", "fan-2", "fan-3", "fan-4")
DEMO_FAULTY_FAN = "fan-3"
DEMO_PERIOD_S = 0.5


def _build(settings: VigilSettings, observer: RuntimeObserver) -> Pipeline:
    from consumers.pipelines.vibration.stage import VibrationStage

    section = PIPELINE.settings(settings)
    return Pipeline(
        {section.input.name: VibrationSpectrum}, VibrationStage(settings, section, observer=observer)
    )


def _prepare_demo(settings: VigilSettings, options: DemoOptions, say: Callable[[str], None]) -> VigilSettings:
    """Serve the demo's fan model, trained once on generated spectra into the kind's registry
    when the configuration leaves the default model."""
    from models.registry import versions
    from models.vibration.serving import SpectrumTraining, synthetic_spectra, train_spectrum_autoencoder

    section = PIPELINE.settings(settings)
    if section.model == DEMO_MODEL and section.model_version is None:
        section = section.model_copy(update={"model_version": DEMO_VERSION})
        if DEMO_VERSION not in versions(section.registry, DEMO_MODEL):
            say("training the demo fan-vibration autoencoder on generated spectra (once)")
            train_spectrum_autoencoder(
                synthetic_spectra(400, seed=3),
                ["x", "y", "z"],
                section.registry,
                DEMO_MODEL,
                DEMO_VERSION,
                SpectrumTraining(epochs=25),
            )
    return PIPELINE.with_settings(settings, section)


class _Fans:
    """Four fans, a spectrum each every half second; one's bearing fails from a quarter to past half the demo."""

    def __init__(self, settings: VigilSettings, options: DemoOptions) -> None:
        self.topic = PIPELINE.settings(settings).input.name
        self._sent = 0
        self._seed = 0

    def due(self, elapsed_s: float, duration_s: float) -> list[tuple[str, bytes, bytes]]:
        from models.vibration.serving import synthetic_spectra

        records = []
        now = datetime.now(UTC)
        while self._sent * DEMO_PERIOD_S <= elapsed_s:
            self._sent += 1
            for fan in DEMO_FANS:
                faulty = fan == DEMO_FAULTY_FAN and 0.25 * duration_s <= elapsed_s < 0.55 * duration_s
                self._seed += 1
                [spectrum] = synthetic_spectra(1, fault=1.0 if faulty else 0.0, seed=self._seed)
                message = VibrationSpectrum(
                    asset_id=fan,
                    sensor_id=f"{fan}-acc",
                    measured_at=now,
                    sample_rate_hz=2_000.0,
                    axes={axis: values.tolist() for axis, values in zip("xyz", spectrum, strict=True)},
                    site="plant-1",
                )
                records.append((self.topic, fan.encode(), message.to_json_bytes()))
        return records


def _pin(settings: VigilSettings, model: str | None, version: str) -> tuple[VigilSettings, dict[str, str]]:
    """The vibration section with its model pinned (``PipelineKind.pin``)."""
    from models.registry import resolve_version

    section = PIPELINE.settings(settings)
    if model not in (None, section.model):
        raise PinError(f"the vibration pipeline serves {section.model!r}, not {model!r}")
    served = {section.model: resolve_version(section.registry, section.model, version)}
    pinned = section.model_copy(update={"model_version": served[section.model], "reload_interval_s": 0})
    return PIPELINE.with_settings(settings, pinned), served


PIPELINE: PipelineKind[VibrationSettings] = PipelineKind(
    name="vibration",
    summary="vibration spectra: a 1-D CNN autoencoder per machine family (settings: pipelines.vibration)",
    build=_build,
    messages=(VibrationSpectrum,),
    model_tasks=("spectrum_autoencoder",),
    section=VibrationSettings,
    topics=lambda settings: [PIPELINE.settings(settings).input],
    serving=lambda settings: PIPELINE.settings(settings),
    input_topic=lambda settings: PIPELINE.settings(settings).input.name,
    pin=_pin,
    demo=DemoLane(_prepare_demo, _Fans),
)
