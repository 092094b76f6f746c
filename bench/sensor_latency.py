"""Sensor alert latency at shares of capacity, with the default sensor model and settings.

The model is the default GRU autoencoder (``SensorTraining()``'s window, stride, size),
trained briefly on generated machines (latency does not depend on its weights); the
pipeline runs ``pipelines.sensors`` as shipped. Figures, on the broker's clock (input
CreateTime set by the load generator, in a process of its own → result LogAppendTime):
- capacity: events/s working off a backlog, each configuration in every round;
- p50/p95/p99/max at ``--shares`` of the default's measured capacity, median over
  ``--rounds`` rounds in rotated order, each run with its result count (one result per
  asset every stride of readings: thousands a run);
- against the same with batches of at most 32 windows (smaller batches, sooner results).

Usage: python bench/sensor_latency.py [--seconds 20] [--rounds 3] [--shares 0.5,0.25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, pin_torch_threads, report, spread
from bench.sensors import latencies_at, percentile, pipeline_rate, publish, readings
from models.engine import default_torch_threads
from models.sensors.synthetic import normal_machines
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.settings import SensorModelBinding, SensorSettings, VigilSettings

MODEL = "default-gru"
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default (batches of up to 256)": {},
    "batches of up to 32": {"max_batch_size": 32},
}
BACKLOG = 100_000


def configured(bootstrap: str, registry: Path, batching: dict[str, Any]) -> VigilSettings:
    """Bench topics, and the default sensor section serving the default model."""
    sensors = SensorSettings(
        registry=str(registry), models=[SensorModelBinding(assets="*", model=MODEL)], max_past_s=None
    )
    sensors = sensors.model_copy(update={"batching": sensors.batching.model_copy(update=batching)})
    return bench_settings(bootstrap).model_copy(update={"sensors": sensors})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="of offered load per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shares", default="0.5,0.25", help="of the default's capacity")
    args = parser.parse_args()
    threads = pin_torch_threads(default_torch_threads())
    shares = [float(s) for s in args.shares.split(",")]
    registry = Path(tempfile.mkdtemp(prefix="vigil-bench-latency-")) / "registry"
    training = SensorTraining(epochs=1, normal_fraction=1.0)
    train_sensor_model(normal_machines(4, 400), registry, MODEL, "1", training, progress=False)
    names = list(CONFIGURATIONS)
    capacity: dict[str, list[float]] = {name: [] for name in names}
    runs: dict[tuple[str, float], list[tuple[float, float, float, float, int]]] = {}
    with bench_broker() as broker:
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                settings = configured(broker.bootstrap, registry, CONFIGURATIONS[name])
                publish(settings, readings(BACKLOG, 1_000, datetime.now(UTC) - timedelta(hours=1)))
                capacity[name].append(pipeline_rate(settings, BACKLOG)[0])
            for share in shares:
                offered = statistics.median(capacity[names[0]]) * share
                assets = max(1, int(offered * args.seconds / 160))
                for name in order:
                    settings = configured(broker.bootstrap, registry, CONFIGURATIONS[name])
                    latency = latencies_at(settings, offered, args.seconds, assets)
                    runs.setdefault((name, share), []).append(
                        (
                            percentile(latency, 50),
                            percentile(latency, 95),
                            percentile(latency, 99),
                            max(latency) * 1000,
                            len(latency),
                        )
                    )
    figures = [
        Figure(f"capacity, {name}", statistics.median(rates), "events/s", spread(rates))
        for name, rates in capacity.items()
    ]
    for (name, share), measured in runs.items():
        for k, label in enumerate(("p50", "p95", "p99", "max")):
            values = [m[k] for m in measured]
            figures.append(
                Figure(
                    f"latency {label} at {share:.0%} of capacity, {name}",
                    statistics.median(values),
                    "ms",
                    f"runs {', '.join(f'{v:.0f}' for v in values)}; "
                    f"{min(m[4] for m in measured):,} results or more a run",
                )
            )
    report("sensor-latency", figures, {"threads": threads, "seconds": args.seconds, "rounds": args.rounds})


if __name__ == "__main__":
    main()
