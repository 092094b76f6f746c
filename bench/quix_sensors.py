"""The Quix Streams peer of Vigil's sensor pipeline, one message at a time: validate each reading
with the same pydantic model, put its sample into the asset's window (Vigil's own
``AssetWindow``), score every window it completes with the same registry model on its own
(batch of one, normalised as Vigil does), feed the asset's alert policy, and produce the same
window result record (``SensorOutputs.window_result``), at-least-once.

Runs in the peer's environment (``.venv-quix``, with torch pinned to Vigil's version), torch
on as many threads as Vigil's run (THREADS). Prints one JSON line: readings, windows scored, and the rate from the first
message processed to the last.

Usage: python bench/quix_sensors.py BOOTSTRAP INPUT OUTPUT COUNT REGISTRY MODEL THREADS
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.quix_app import peer_app
from consumers.pipelines.sensors.intake import at
from consumers.pipelines.sensors.lanes import SENSOR_ALERTS, WindowScores
from consumers.pipelines.sensors.outputs import SensorOutputs
from consumers.runtime.records import InboundRecord, Work
from models.alert_policy import AlertPolicy
from models.registry import load_model
from models.sensors.scoring import window_scores
from models.sensors.windowing import stagger, window_spec
from models.sensors.windows import AssetWindow
from schemas.messages import SensorReading
from schemas.model_card import SeriesInputSpec
from schemas.settings import VigilSettings


def main() -> None:
    bootstrap, source_topic, sink_topic, count, registry, name, threads = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    model = load_model(registry, name)
    spec = model.card.input
    assert isinstance(spec, SeriesInputSpec)
    module = model.module.eval()
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    outputs = SensorOutputs(VigilSettings())
    policy = AlertPolicy(SENSOR_ALERTS.card_rules(model.card))
    windows: dict[str, AssetWindow] = {}
    clock: dict[str, float] = {}
    scored, seen = [0], [0]
    app, source, sink = peer_app(bootstrap, source_topic, sink_topic)

    def process(value: bytes, key: bytes, timestamp: int, headers: object) -> list[bytes]:
        clock.setdefault("first", time.monotonic())
        reading = SensorReading.model_validate_json(value)
        work = Work(InboundRecord(source_topic, 0, 0, key, value), reading, datetime.now(UTC))
        window = windows.get(reading.asset_id)
        if window is None:
            window = windows[reading.asset_id] = AssetWindow(
                window_spec(spec, phase=stagger(reading.asset_id, spec.stride))
            )
        values = reading.values or {}
        added = window.add(reading.event_time.timestamp(), [values[c] for c in spec.channels])
        results = []
        for index, ready in enumerate(added.ready):
            with torch.inference_mode():
                out = module(torch.from_numpy((ready.values[None] - mean) / std)).numpy()
            label, by_label = window_scores(model.card, out)
            scores = WindowScores({k: float(v[0]) for k, v in by_label.items()}, label, {})
            policy.observe(reading.asset_id, {label: scores.scores[label]}, at(ready.end_s))
            [result] = outputs.window_result(
                work, index, reading.asset_id, model.ref, ready, scores, datetime.now(UTC)
            )
            results.append(result.value)
            scored[0] += 1
        clock["last"] = time.monotonic()
        seen[0] += 1
        if seen[0] == int(count):
            app.stop()  # Quix counts outputs, not inputs: stop once every reading is processed
        return results

    frame = app.dataframe(source).apply(process, metadata=True, expand=True)
    frame.to_topic(sink)
    app.run()
    elapsed = clock["last"] - clock["first"]
    print(json.dumps({"readings": int(count), "windows": scored[0], "rate": (int(count) - 1) / elapsed}))


if __name__ == "__main__":
    main()
