"""Decoding benchmark: one sensor reading's bytes to a checked message, per record.

Vigil validates each record once, with pydantic's ``model_validate_json`` on the record's
bytes (the schemas are pydantic models, the source of truth). Measured beside it, same
records, same process, torch not involved:
- pydantic through a ``str`` (what Vigil did before);
- orjson's parse, then pydantic's validation of the dict (lax: JSON strings as datetimes);
- msgspec decoding into a ``Struct`` that mirrors ``SensorReading``'s checks (id patterns,
  lengths, aware datetimes, finite floats checked after), which a second schema would cost;
- msgspec into a ``Struct`` without the patterns, and both libraries untyped: what the checks
  themselves cost, lower bounds nobody could ship.
The mirror must accept every record and refuse the same bad ones as pydantic, or the run
fails. Encoding a result: ``to_json_bytes`` (bytes from the serializer) against
``model_dump_json().encode()``. Each figure is the median of ``--repeats`` passes, with the
fastest and slowest.

Usage: python bench/decoding.py [--records N] [--repeats R]  (``make bench-decoding``)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import orjson

from bench.common import Figure, MeasurementError, report
from consumers.ops.simulate import synthetic_readings
from schemas.common import CHANNEL_PATTERN
from schemas.messages import SensorReading

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID)]
Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=CHANNEL_PATTERN)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Aware = Annotated[datetime, msgspec.Meta(tz=True)]


class _Block(msgspec.Struct, forbid_unknown_fields=True):
    sample_rate_hz: float
    channels: dict[Channel, list[float]]


class MirrorReading(msgspec.Struct, forbid_unknown_fields=True):
    """``SensorReading``'s checks restated for msgspec (finite values are checked after)."""

    asset_id: Ident
    sensor_id: Ident
    kind: Kind
    event_time: Aware
    schema_version: Literal[1] = 1
    values: dict[Channel, float] | None = None
    units: dict[Channel, Annotated[str, msgspec.Meta(max_length=32)]] = {}
    block: _Block | None = None
    site: Ident | None = None
    attributes: dict[str, str] = {}


class LooseReading(msgspec.Struct):
    """The same fields without the patterns and bounds."""

    asset_id: str
    sensor_id: str
    kind: str
    event_time: datetime
    schema_version: int = 1
    values: dict[str, float] | None = None
    units: dict[str, str] = {}
    block: dict[str, Any] | None = None
    site: str | None = None
    attributes: dict[str, str] = {}


MIRROR = msgspec.json.Decoder(MirrorReading)
LOOSE = msgspec.json.Decoder(LooseReading)


def mirror(value: bytes) -> MirrorReading:
    """Decode with the mirror, finite values included."""
    reading = MIRROR.decode(value)
    if reading.values and not all(math.isfinite(v) for v in reading.values.values()):
        raise ValueError("values must be finite")
    if reading.values is None and reading.block is None:
        raise ValueError("a reading needs `values` or a sample `block`")
    return reading


BAD = [
    b'{"schema_version":1,"asset_id":"has space","sensor_id":"s","kind":"k","event_time":"2026-01-01T00:00:00Z","values":{"a":1.0}}',
    b'{"schema_version":1,"asset_id":"a","sensor_id":"s","kind":"k","event_time":"2026-01-01T00:00:00","values":{"a":1.0}}',
    b'{"schema_version":1,"asset_id":"a","sensor_id":"s","kind":"K","event_time":"2026-01-01T00:00:00Z","values":{"a":1.0}}',
    b'{"schema_version":1,"asset_id":"a","sensor_id":"s","kind":"k","event_time":"2026-01-01T00:00:00Z","values":{"a":1.0},"x":1}',
    b'{"schema_version":1,"asset_id":"a","sensor_id":"s","kind":"k","event_time":"2026-01-01T00:00:00Z"}',
]


def refuses(decode: Callable[[bytes], Any], value: bytes) -> bool:
    try:
        decode(value)
    except (ValueError, msgspec.ValidationError):  # pydantic's ValidationError is a ValueError
        return True
    return False


def per_record_us(decode: Callable[[bytes], Any], values: list[bytes], repeats: int) -> list[float]:
    """Microseconds per record of each pass over ``values``."""
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for value in values:
            decode(value)
        passes.append((time.perf_counter() - started) / len(values) * 1e6)
    return passes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    readings = list(synthetic_readings(args.records, assets=64))
    values = [r.to_json_bytes() for r in readings]
    for value in values[:500]:
        if SensorReading.model_validate_json(value).asset_id != mirror(value).asset_id:
            raise MeasurementError("the msgspec mirror reads a record differently from pydantic")
    for value in BAD:
        if not (refuses(SensorReading.model_validate_json, value) and refuses(mirror, value)):
            raise MeasurementError(f"pydantic and the mirror disagree on {value!r}")
    decoders: dict[str, Callable[[bytes], Any]] = {
        "pydantic model_validate_json(bytes) (Vigil)": SensorReading.model_validate_json,
        "pydantic model_validate_json(str) (before)": lambda v: SensorReading.model_validate_json(v.decode()),
        "orjson.loads + pydantic model_validate (lax)": lambda v: SensorReading.model_validate(
            orjson.loads(v), strict=False
        ),
        "msgspec Struct, the same checks": mirror,
        "msgspec Struct, no patterns or bounds": LOOSE.decode,
        "msgspec untyped (no checks)": msgspec.json.decode,
        "orjson untyped (no checks)": orjson.loads,
    }
    sample = readings[0]
    encoders: dict[str, Callable[[bytes], Any]] = {
        "encode: to_json_bytes (Vigil)": lambda _: sample.to_json_bytes(),
        "encode: model_dump_json().encode() (before)": lambda _: sample.model_dump_json(
            exclude_none=True
        ).encode(),
    }
    measured = {
        name: per_record_us(fn, values, args.repeats) for name, fn in {**decoders, **encoders}.items()
    }
    decode = statistics.median(measured["pydantic model_validate_json(bytes) (Vigil)"])
    encode = statistics.median(measured["encode: to_json_bytes (Vigil)"])
    figures = []
    for name, passes in measured.items():
        median = statistics.median(passes)
        ratio = (
            f"{median / encode:.2f}x Vigil's encode"
            if name in encoders
            else f"{median / decode:.2f}x Vigil's decode"
        )
        figures.append(Figure(name, median, "us/record", f"{min(passes):.2f}-{max(passes):.2f}; {ratio}"))
    report("decoding", figures, {"records": args.records, "repeats": args.repeats, "passes": measured})


if __name__ == "__main__":
    main()
