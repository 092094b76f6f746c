from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumers.pipelines.sensors.intake import ReadingRejected, check_channels, check_event_time, expand
from schemas.messages import SampleBlock, SensorReading
from schemas.settings import SensorRule, SensorSettings

T0 = datetime(2026, 11, 28, 8, tzinfo=UTC)


def reading(**update: object) -> SensorReading:
    base = SensorReading(
        asset_id="m-1", sensor_id="s", kind="machine", event_time=T0, values={"t": 1.0, "v": 2.0}
    )
    return base.model_copy(update=update)


def test_a_block_expands_into_samples_at_its_rate() -> None:
    block = SampleBlock(sample_rate_hz=4.0, channels={"t": [1.0, 2.0, 3.0], "v": [4.0, 5.0, 6.0]})
    samples = expand(reading(values=None, block=block))
    assert [s.time_s - T0.timestamp() for s in samples] == [0.0, 0.25, 0.5]
    assert samples[2].values == {"t": 3.0, "v": 6.0}


@pytest.mark.parametrize(
    ("shift", "rejected"),
    [
        (timedelta(minutes=4), False),
        (timedelta(minutes=6), True),
        (-timedelta(days=6), False),
        (-timedelta(days=8), True),
    ],
)
def test_event_times_far_from_the_record_timestamp_are_rejected(shift: timedelta, rejected: bool) -> None:
    settings = SensorSettings()
    if rejected:
        with pytest.raises(ReadingRejected) as error:
            check_event_time(reading(event_time=T0 + shift), T0.timestamp(), settings)
        assert error.value.reason == "out_of_time_range"
    else:
        check_event_time(reading(event_time=T0 + shift), T0.timestamp(), settings)


def test_channels_of_a_model_scored_asset_are_checked() -> None:
    rules = [SensorRule(name="hum", kind="range", channel="humidity", high=90)]
    assert (
        check_channels(["t", "v", "humidity"], ["t", "v"], rules, "dead_letter") == ()
    )  # a rule knows humidity
    with pytest.raises(ReadingRejected, match="missing") as missing:
        check_channels(["t"], ["t", "v"], [], "dead_letter")
    assert missing.value.reason == "invalid_value"
    with pytest.raises(ReadingRejected) as unknown:
        check_channels(["t", "v", "x"], ["t", "v"], [], "dead_letter")
    assert unknown.value.reason == "unknown_channel"
    assert check_channels(["t", "v", "x"], ["t", "v"], [], "ignore") == ("x",)
    dropped = expand(reading(values={"t": 1.0, "v": 2.0, "x": 0.0}), without=("x",))
    assert dropped[0].values == {"t": 1.0, "v": 2.0}


@pytest.mark.parametrize(
    ("rate_hz", "samples", "start_shift_s", "rejected"),
    [
        (1000.0, 4096, 0.0, False),  # 4 s of vibration: fine
        (1e-6, 2, 0.0, True),  # the second sample lies ~11.6 days later: the clock would jump
        (0.001, 10, -86_400.0, True),  # spans 2.5 hours, more than max_block_span_s
        (1.0, 400, 0.0, True),  # starts now, ends 399 s later: beyond max_future_s (300 s)
        (1.0, 400, -200.0, False),  # started 200 s ago, ends 199 s from now
    ],
)
def test_a_block_is_judged_by_its_span_and_its_end(
    rate_hz: float, samples: int, start_shift_s: float, rejected: bool
) -> None:
    block = SampleBlock(sample_rate_hz=rate_hz, channels={"t": [1.0] * samples})
    r = reading(values=None, block=block, event_time=T0 + timedelta(seconds=start_shift_s))
    if rejected:
        with pytest.raises(ReadingRejected) as error:
            check_event_time(r, T0.timestamp(), SensorSettings())
        assert error.value.reason == "invalid_block"
    else:
        check_event_time(r, T0.timestamp(), SensorSettings())
