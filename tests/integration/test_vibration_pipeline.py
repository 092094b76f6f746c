"""Vibration spectra → the vibration pipeline on a real broker → results, alerts, dead letters.

The third kind of stream, run as users run any kind: declared once, built by name, its
topic created with the others.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.ops.topics import create_topics
from consumers.pipelines import build_pipeline, pipeline_kinds
from consumers.runtime.loop import StreamRuntime
from models.vibration.serving import SpectrumTraining, synthetic_spectra, train_spectrum_autoencoder
from schemas.messages import Alert, DeadLetter, InferenceResult
from schemas.settings import VigilSettings
from schemas.vibration import VibrationSpectrum
from tests.integration.runtime_harness import running
from tests.kafka_helpers import committed_offsets, produce, read_until_quiet, unique_settings, wait_for

pytestmark = pytest.mark.integration


def spectrum(asset: str, values: list[list[float]], at: datetime, axes: str = "xyz") -> bytes:
    message = VibrationSpectrum(
        asset_id=asset,
        sensor_id=f"{asset}-acc",
        measured_at=at,
        sample_rate_hz=2000.0,
        axes=dict(zip(axes, values, strict=True)),
    )
    return message.to_json_bytes()


def test_spectra_are_scored_a_failing_bearing_alerts_and_misfits_are_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    train_spectrum_autoencoder(
        synthetic_spectra(240, seed=1), ["x", "y", "z"], tmp_path, "fans", "1", SpectrumTraining(epochs=15)
    )
    base = unique_settings(kafka_bootstrap)
    kind = pipeline_kinds()["vibration"]
    section = kind.settings(base).model_copy(
        update={
            "registry": str(tmp_path),
            "model": "fans",
            "input": kind.settings(base).input.model_copy(update={"name": f"{base.topics.frames.name}.vib"}),
        }
    )
    settings: VigilSettings = kind.with_settings(base, section)
    create_topics(settings)
    topic = section.input.name
    start = datetime.now(UTC) - timedelta(minutes=5)
    healthy = synthetic_spectra(6, seed=21)
    failing = synthetic_spectra(4, fault=1.0, seed=22)
    records = [
        (b"fan-1", spectrum("fan-1", s.tolist(), start + timedelta(seconds=i))) for i, s in enumerate(healthy)
    ]
    records += [
        (b"fan-3", spectrum("fan-3", s.tolist(), start + timedelta(seconds=i))) for i, s in enumerate(failing)
    ]
    records += [
        (b"fan-2", spectrum("fan-2", synthetic_spectra(1, bins=64)[0].tolist(), start)),  # other bins
        (
            b"fan-2",
            spectrum("fan-2", synthetic_spectra(1, axes=2)[0].tolist(), start, axes="xw"),
        ),  # unknown axis
        (b"fan-2", json.dumps({"asset_id": "fan-2"}).encode()),
    ]
    produce(kafka_bootstrap, topic, records)

    pipeline = build_pipeline("vibration", settings)
    runtime = StreamRuntime(settings, pipeline.inputs, pipeline.stage)
    with running(runtime):
        wait_for(
            lambda: sum(committed_offsets(kafka_bootstrap, settings.kafka.group_id).values()) == len(records),
            120,
            what="every spectrum committed",
        )
    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    assert {r.pipeline for r in results} == {"vibration"} and len(results) == 10
    assert all(r.model is not None and r.model.name == "fans" for r in results)
    score = {r.source_id: r.score for r in results}
    assert score["fan-3"] > 3 * score["fan-1"]
    alerts = [
        Alert.from_json_bytes(r.value) for r in read_until_quiet(kafka_bootstrap, settings.topics.alerts.name)
    ]
    assert [(a.source_id, a.kind, a.state) for a in alerts] == [("fan-3", "sensor_anomaly", "firing")]
    assert set(alerts[0].explanation) == {"x", "y", "z"} and "fan-3" in alerts[0].message
    letters = [
        DeadLetter.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.dlq.name)
    ]
    assert sorted(d.reason for d in letters) == ["invalid_value", "schema_violation", "unknown_channel"]
    assert all(d.origin_topic == topic for d in letters)
