"""The demo's small models, trained once on generated data into the configured registry."""

from __future__ import annotations

import tempfile

from rich.console import Console

from consumers.ops.demo.world import MACHINE_PERIOD_S

DEMO_VISION_MODEL = "demo-defects"
DEMO_VISION_VERSION = "2"
"""Version 1 was a small CNN trained from scratch; 2 is the pretrained backbone default."""
DEMO_SENSOR_MODEL = "demo-machines"
DEMO_SENSOR_VERSION = "2"
"""Version 1 took its threshold from its own training windows; 2 calibrates it on held-out ones."""
DEMO_IMAGE_SIZE = 128


def ensure_demo_models(registry: str, console: Console) -> None:
    """Train the defect classifier and the machine autoencoder unless the registry has them."""
    from models.registry import versions

    if DEMO_VISION_VERSION not in versions(registry, DEMO_VISION_MODEL):
        from models.vision.synthetic import write_dataset
        from models.vision.training import ClassifierTraining, train_classifier

        console.print(
            "[bold]training the demo defect classifier (EfficientNet-Lite0 probe) on synthetic images (once)[/bold]"
        )
        with tempfile.TemporaryDirectory() as images:
            write_dataset(images, per_class=60, size=64, seed=11)  # as the world draws them
            train_classifier(
                images,
                registry,
                DEMO_VISION_MODEL,
                DEMO_VISION_VERSION,
                ClassifierTraining(size=DEMO_IMAGE_SIZE, scopes=("head",), epochs=30),
            )
    if DEMO_SENSOR_VERSION not in versions(registry, DEMO_SENSOR_MODEL):
        from models.sensors.synthetic import normal_machines
        from models.sensors.training import SensorTraining, train_sensor_model

        console.print("[bold]training the demo machine autoencoder on generated histories (once)[/bold]")
        train_sensor_model(
            normal_machines(4, 800, period_s=MACHINE_PERIOD_S),
            registry,
            DEMO_SENSOR_MODEL,
            DEMO_SENSOR_VERSION,
            SensorTraining(window=32, stride=8, epochs=8, hidden=16, normal_fraction=1.0),
        )
