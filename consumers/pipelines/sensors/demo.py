"""The sensor kind's part in ``vigil demo``: the plant's machines and the city district.

- the plant's machines: temperature and vibration at 10 Hz; ``press-2`` drifts towards
  failure (hotter, rougher) and is repaired, scored by the demo machine autoencoder (trained
  once on generated histories into the sensor registry);
- the city district: air-quality sensors once a second, watched by rules: ``aq-2`` sees a
  pollution episode, and one sensor goes silent;
- every five seconds a malformed record shows the dead-letter path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kafka.partitioner.default import murmur2

from consumers.pipelines.contract import DemoLane, DemoOptions
from consumers.pipelines.sensors.scenarios import POISON_SAMPLES, air_quality_readings, machine_readings
from schemas.messages import Alert, SensorReading
from schemas.settings import AlertRule, SensorModelBinding, SensorRule, VigilSettings

MACHINES = ("press-1", "press-2", "press-3", "press-4")
FAULTY_MACHINE = "press-2"
MACHINE_PERIOD_S = 0.1
AIR_SENSORS = tuple(f"aq-{n}" for n in range(1, 9))
POLLUTED_SENSOR = "aq-2"
POISON_EVERY_S = 5
DEMO_MODEL = "demo-machines"
DEMO_VERSION = "2"
"""Version 1 took its threshold from its own training windows; 2 calibrates it on held-out ones."""
PLANT, CITY = "plant machines", "city"


def prepare(settings: VigilSettings, options: DemoOptions, say: Callable[[str], None]) -> VigilSettings:
    """Serve the demo machine model and the city's rules, unless the configuration has its own."""
    from models.registry import read_card, versions

    sensors = settings.sensors
    if sensors.models or sensors.rules:
        return settings
    if DEMO_VERSION not in versions(sensors.registry, DEMO_MODEL):
        from models.sensors.synthetic import normal_machines
        from models.sensors.training import SensorTraining, train_sensor_model

        say("training the demo machine autoencoder on generated histories (once)")
        train_sensor_model(
            normal_machines(4, 800, period_s=MACHINE_PERIOD_S),
            sensors.registry,
            DEMO_MODEL,
            DEMO_VERSION,
            SensorTraining(window=32, stride=8, epochs=8, hidden=16, normal_fraction=1.0),
        )
    threshold = read_card(sensors.registry, DEMO_MODEL, DEMO_VERSION).thresholds["anomaly"]
    served = sensors.model_copy(
        update={
            "models": [
                SensorModelBinding(
                    assets="press-*", sensor_kind="machine", model=DEMO_MODEL, model_version=DEMO_VERSION
                )
            ],
            "alert_rules": [
                AlertRule(
                    name="press-anomaly",
                    label="anomaly",
                    hi=1.5 * threshold,
                    lo=0.75 * threshold,
                    n=2,
                    m=3,
                    cooldown_s=5,
                    severity="warning",
                )
            ],
            "rules": [
                SensorRule(
                    name="pm25-high",
                    kind="threshold",
                    sensor_kind="air_quality",
                    channel="pm25_ug_m3",
                    limit=35.0,
                    for_s=4.0,
                    severity="warning",
                ),
                SensorRule(
                    name="aq-silent", kind="stale", sensor_kind="air_quality", for_s=4.0, severity="info"
                ),
            ],
        }
    )
    return settings.model_copy(update={"sensors": served})


class SensorWorld:
    """The plant's machines and the city's air-quality sensors, scripted over the demo."""

    def __init__(self, settings: VigilSettings, options: DemoOptions) -> None:
        self.topic = settings.topics.sensors.name
        start, duration_s = options.start, options.duration_s
        ticks = int(duration_s / MACHINE_PERIOD_S) + 1
        fault = (int(ticks * 0.2), int(2 / MACHINE_PERIOD_S), int(ticks * 0.6))
        seconds = int(duration_s) + 1
        self.silent = silent_sensor(settings.topics.sensors.partitions)
        readings: list[SensorReading] = []
        for n, machine in enumerate(MACHINES):
            readings += machine_readings(
                machine,
                start,
                ticks,
                seed=100 + n,
                fault=fault if machine == FAULTY_MACHINE else None,
                period_s=MACHINE_PERIOD_S,
            )
        for n, sensor in enumerate(AIR_SENSORS):
            readings += air_quality_readings(
                sensor,
                start,
                seconds,
                period_s=1.0,
                seed=200 + n,
                episode=(int(seconds * 0.15), int(seconds * 0.55)) if sensor == POLLUTED_SENSOR else None,
                silent_from=int(seconds * 0.3) if sensor == self.silent else None,
            )
        self._pending = sorted(readings, key=lambda r: r.event_time)
        self._next = 0
        self._poisoned = 0

    def due(self, elapsed_s: float, duration_s: float) -> list[tuple[str, bytes, bytes]]:
        """Readings whose event time has come, and a malformed record every few seconds."""
        now = datetime.now(UTC)
        first = self._next
        while self._next < len(self._pending) and self._pending[self._next].event_time <= now:
            self._next += 1
        records = [
            (self.topic, reading.asset_id.encode(), reading.to_json_bytes())
            for reading in self._pending[first : self._next]
        ]
        while (self._poisoned + 1) * POISON_EVERY_S <= elapsed_s:
            records.append((self.topic, b"pump-1", POISON_SAMPLES[self._poisoned % len(POISON_SAMPLES)]))
            self._poisoned += 1
        return records


def partition_of(key: str, partitions: int) -> int:
    """The partition kafka-python's default partitioner gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def silent_sensor(partitions: int) -> str:
    """A sensor whose partition other sources share: stale sources are judged on its event-time clock."""
    keys = [*MACHINES, *AIR_SENSORS]
    for candidate in reversed(AIR_SENSORS):
        if candidate == POLLUTED_SENSOR:
            continue
        shared = [
            k
            for k in keys
            if k != candidate and partition_of(k, partitions) == partition_of(candidate, partitions)
        ]
        if shared:
            return candidate
    return AIR_SENSORS[-1]


def demo_start(now: datetime) -> datetime:
    """Whole seconds, so the machines' 10 Hz grid lines up with event time."""
    return now.replace(microsecond=0) + timedelta(seconds=1)


def place(alert: Alert) -> str:
    """The plant's machines, or the city."""
    return PLANT if alert.site == "plant-a" or alert.source_id.startswith("press") else CITY


DEMO = DemoLane(prepare, SensorWorld, places=(PLANT, CITY), place=place)
