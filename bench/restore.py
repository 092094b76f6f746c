"""Restoring one sensor partition's state: taken from the changelog hand-off against read back
from the input, the same state both ways, in the same run.

One partition holds ``--history-s`` of 1 Hz readings of ``--assets`` machines (a city's 600
assets over 6 partitions is 100 per partition), committed as a previous member would have,
with the README's ten-minute PM2.5-style threshold rule, so the read-back spans the rule's
``for_s`` plus a window. The state is built once by reading back and handed over to the
changelog; then the two restores run alternately, ``--rounds`` times each, timed on the
restorer's own call (what a member spends before the partition goes live).

    python bench/restore.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, bench_broker, bench_settings, median_figure, pin_torch_threads, report
from consumers.pipelines.sensors.restore import Restore
from consumers.pipelines.sensors.stage import SensorStage
from consumers.runtime.kafka_clients import make_producer
from consumers.runtime.records import Settled
from models.sensors.synthetic import normal_machines
from models.sensors.training import SensorTraining, train_sensor_model
from schemas.settings import SensorModelBinding, SensorRule, SensorSettings
from tests.faults.drill import committed_history


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--history-s", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = pin_torch_threads(1)

    with bench_broker() as broker, tempfile.TemporaryDirectory() as scratch:
        registry = Path(scratch) / "registry"
        training = SensorTraining(window=32, stride=8, epochs=4, hidden=16, normal_fraction=1.0)
        train_sensor_model(normal_machines(4, 600), registry, "machine-ae", "1", training)
        base = bench_settings(broker.bootstrap, sensors=1)
        sensors = SensorSettings(
            registry=str(registry),
            models=[
                SensorModelBinding(
                    assets="machine-*", sensor_kind="machine", model="machine-ae", model_version="1"
                )
            ],
            rules=[SensorRule(name="overheat", kind="threshold", channel="temp_c", limit=1e6, for_s=600.0)],
        )
        settings = base.model_copy(update={"sensors": sensors})
        ends = committed_history(settings, args.assets, args.history_s)
        [until] = ends.values()
        key = (settings.topics.sensors.name, 0)

        stage = SensorStage(settings)
        try:
            built = Restore(key, until)
            stage.install_state(key, stage.restore_from_history(built))  # the state to hand over
            producer = make_producer(settings.kafka)
            for output in stage.handoff({key: Settled(until, until)}):
                producer.send(output.topic, value=output.value, key=output.key, partition=output.partition)
            producer.flush(60)
            producer.close()

            timings: dict[str, list[float]] = {"changelog": [], "input": []}
            records: dict[str, int] = {}
            for round_ in range(args.rounds):
                ways = ["changelog", "input"] if round_ % 2 == 0 else ["input", "changelog"]
                for way in ways:
                    job = Restore(key, until)
                    started = time.perf_counter()
                    if way == "changelog":
                        taken = stage.restore_from_changelog(job)
                        assert taken is not None, "the hand-off was not installed"
                        state = taken[0]
                    else:
                        state = stage.restore_from_history(job)
                    timings[way].append((time.perf_counter() - started) * 1000)
                    records[way] = job.total
                    held = stage.partition_state(key)
                    assert held is not None and sorted(state.windows) == sorted(held.windows)
        finally:
            stage.close()

    figures = [
        median_figure(
            "restore from the changelog", timings["changelog"], "ms", f"{records['changelog']:,} records read"
        ),
        median_figure(
            "read back from the input (baseline)",
            timings["input"],
            "ms",
            f"{records['input']:,} records read",
        ),
        Figure(
            "speed-up",
            sorted(timings["input"])[len(timings["input"]) // 2]
            / sorted(timings["changelog"])[len(timings["changelog"]) // 2],
            "x",
            "medians",
        ),
    ]
    report(
        "restore",
        figures,
        {"arguments": vars(args), "torch_threads": threads, "timings_ms": timings, "records": records},
    )


if __name__ == "__main__":
    main()
