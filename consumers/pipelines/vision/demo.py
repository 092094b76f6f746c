"""The vision kind's part in ``vigil demo``: the press line's cameras.

Four cameras write product images to the demo's frame store (or serve real images) and
publish ``FrameRef``s once a second; ``cam-3`` turns out cracked parts from a quarter to past
half of the demo. The demo defect classifier (an EfficientNet-Lite0 probe) is trained once on
synthetic images into the vision registry.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import cycle

from consumers.pipelines.contract import DemoLane, DemoOptions
from schemas.messages import FrameRef
from schemas.settings import AlertRule, VigilSettings

CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")
FAULTY_CAMERA = "cam-3"
DEMO_MODEL = "demo-defects"
DEMO_VERSION = "2"
"""Version 1 was a small CNN trained from scratch; 2 is the pretrained backbone default."""
DEMO_IMAGE_SIZE = 128


def prepare(settings: VigilSettings, options: DemoOptions, say: Callable[[str], None]) -> VigilSettings:
    """Serve the demo classifier from the frame store, with its alert rules unless configured."""
    from models.registry import versions

    vision = settings.vision
    if DEMO_VERSION not in versions(vision.registry, DEMO_MODEL):
        from models.vision.synthetic import write_dataset
        from models.vision.training import ClassifierTraining, train_classifier

        say("training the demo defect classifier (EfficientNet-Lite0 probe) on synthetic images (once)")
        with tempfile.TemporaryDirectory() as images:
            write_dataset(images, per_class=60, size=64, seed=11)  # as the press line draws them
            train_classifier(
                images,
                vision.registry,
                DEMO_MODEL,
                DEMO_VERSION,
                ClassifierTraining(size=DEMO_IMAGE_SIZE, scopes=("head",), epochs=30),
            )
    rules = vision.alert_rules or [
        AlertRule(
            name=f"demo-{label}", label=label, hi=0.7, lo=0.4, n=2, m=3, cooldown_s=5, severity="critical"
        )
        for label in ("crack", "scratch", "spot")
    ]
    served = vision.model_copy(
        update={
            "model": DEMO_MODEL,
            "model_version": DEMO_VERSION,
            "alert_rules": rules,
            "fetch": vision.fetch.model_copy(update={"allowed_prefixes": [f"file://{options.store}/"]}),
        }
    )
    return settings.model_copy(update={"vision": served})


class PressLine:
    """Cameras that write product images to a frame store and describe them as ``FrameRef``s."""

    def __init__(self, settings: VigilSettings, options: DemoOptions) -> None:
        self.topic = settings.topics.frames.name
        self.store = options.store
        self._per_camera = max(1, options.frames_per_s // len(CAMERAS))
        real = options.real_images
        self._real = (
            cycle(sorted(p for p in real.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
            if real
            else None
        )
        self._count = 0
        self._ticks = 0

    def due(self, elapsed_s: float, duration_s: float) -> list[tuple[str, bytes, bytes]]:
        """One round of frames per second of the demo."""
        records = []
        while self._ticks <= elapsed_s:
            self._ticks += 1
            faulty = 0.25 * duration_s <= elapsed_s < 0.55 * duration_s
            for frame in self.tick(self._per_camera, faulty, datetime.now(UTC)):
                records.append((self.topic, frame.camera_id.encode(), frame.to_json_bytes()))
        return records

    def tick(self, per_camera: int, faulty: bool, now: datetime) -> list[FrameRef]:
        """One round of frames; the faulty camera makes cracked parts while ``faulty``."""
        from models.vision.synthetic import encode, product_image

        frames = []
        for camera in CAMERAS:
            for _ in range(per_camera):
                self._count += 1
                if self._real is not None:
                    path = next(self._real)
                else:
                    label = (
                        "crack"
                        if faulty and camera == FAULTY_CAMERA
                        else ("spot" if self._count % 41 == 0 else "ok")
                    )
                    path = self.store / camera / f"{self._count:07d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode(product_image(label, 64, seed=self._count)))
                frames.append(
                    FrameRef(
                        frame_id=f"{camera}-{self._count:07d}",
                        camera_id=camera,
                        site="plant-a",
                        line="press-line-1",
                        uri=f"file://{path}",
                        captured_at=now,
                    )
                )
        return frames


DEMO = DemoLane(prepare, PressLine, places=("plant cameras",), place=lambda alert: "plant cameras")
