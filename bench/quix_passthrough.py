"""The Quix Streams peer of Vigil's pass-through: consume readings, validate them with the same
pydantic model, produce the same result record (``result_for``), at-least-once.

Runs in its own environment (``make bench-peers`` makes ``.venv-quix``: Quix Streams pins
other pydantic and confluent-kafka versions than Vigil's). Prints one JSON line: the rate
from the first message processed to the last.

Usage: python bench/quix_passthrough.py BOOTSTRAP INPUT OUTPUT COUNT
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quix_app import peer_app
from consumers.pipelines.passthrough import result_for
from consumers.runtime.records import InboundRecord, Work
from schemas.messages import SensorReading


def main() -> None:
    bootstrap, input_topic, output_topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    app, source, sink = peer_app(bootstrap, input_topic, output_topic)
    clock: dict[str, float] = {}

    def process(value: bytes, key: bytes, timestamp: int, headers: object) -> bytes:
        clock.setdefault("first", time.monotonic())
        reading = SensorReading.model_validate_json(value)
        record = InboundRecord(input_topic, 0, 0, key, value)
        clock["last"] = time.monotonic()
        return result_for(Work(record, reading, datetime.now(UTC)), output_topic).value

    frame = app.dataframe(source)
    frame = frame.apply(process, metadata=True)
    frame.to_topic(sink)
    app.run(count=count, collect=False)
    elapsed = clock["last"] - clock["first"]
    print(json.dumps({"messages": count, "rate": (count - 1) / elapsed}))


if __name__ == "__main__":
    main()
