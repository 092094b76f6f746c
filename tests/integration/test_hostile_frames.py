"""Hostile frame references on a real broker: each costs its own frame a precise dead letter, never
the process, its neighbours in the batch, or the partition's progress; nothing outside the
allow-list is read (an HTTP listener and the dead letters prove it)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.ops.topics import create_topics
from consumers.pipelines.vision.stage import VisionStage
from consumers.runtime.dead_letters import original_value
from consumers.runtime.loop import StreamRuntime
from models.vision.synthetic import encode, product_image
from schemas.messages import DeadLetter, FrameRef, InferenceResult
from schemas.settings import VigilSettings
from tests.frame_server import FrameServer, frame_server
from tests.hostile_images import animated_gif, png_declaring
from tests.integration.runtime_harness import running
from tests.kafka_helpers import (
    committed_offsets,
    end_offsets,
    produce,
    read_until_quiet,
    unique_settings,
    wait_for,
)
from tests.vision_fixtures import VisionModels

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 28, 8, tzinfo=UTC)


@pytest.fixture
def hostile_server() -> Iterator[str]:
    with frame_server() as base:
        yield base


def frame(n: int, uri: str, **extra: object) -> bytes:
    message = FrameRef(
        frame_id=f"f-{n}",
        camera_id="cam-1",
        site="plant-a",
        uri=uri,
        captured_at=T0 + timedelta(seconds=n),
        **extra,
    )  # type: ignore[arg-type]
    return message.to_json_bytes()


def hostile_settings(bootstrap: str, models: VisionModels, frames: Path, http_base: str) -> VigilSettings:
    settings = unique_settings(
        bootstrap, partitions=1
    )  # one partition: the hostile frames are the good ones' neighbours
    vision = settings.vision.model_copy(
        update={
            "registry": str(models.registry),
            "model": models.classifier,
            "fetch": settings.vision.fetch.model_copy(
                update={
                    "allowed_prefixes": [f"file://{frames}/", f"{http_base}/frames/"],
                    "deadline_s": 3.0,
                    "timeout_s": 1.0,
                    "max_retries": 2,
                    "retry_initial_s": 0.05,
                    "workers": 3,
                }
            ),
            "batching": settings.vision.batching.model_copy(update={"max_batch_size": 8, "max_wait_ms": 200}),
        }
    )
    return settings.model_copy(update={"vision": vision})


def run_until_committed(settings: VigilSettings) -> None:
    """Run the vision pipeline in this process until every input offset is committed."""
    ends = end_offsets(settings.kafka.bootstrap_servers, settings.topics.frames.name)
    stage = VisionStage(settings)
    runtime = StreamRuntime(settings, {settings.topics.frames.name: FrameRef}, stage)
    with running(runtime):
        wait_for(
            lambda: committed_offsets(settings.kafka.bootstrap_servers, settings.kafka.group_id) == ends,
            120,
            what="every frame committed",
        )
        # crashed, hung and refused frames included: every worker's shared-memory slot is back
        assert [decoder.slots.held() for decoder in stage._decoders] == [0] * len(stage._decoders)


@pytest.mark.slow
def test_hostile_frames_cost_only_themselves(
    kafka_bootstrap: str, vision_models: VisionModels, tmp_path: Path, hostile_server: str
) -> None:
    frames = tmp_path / "frames"
    (frames / "cam-s").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.png").write_bytes(encode(product_image("crack", 64, seed=99)))
    settings = hostile_settings(kafka_bootstrap, vision_models, frames, hostile_server)
    create_topics(settings)

    good_paths = []
    for n in range(6):
        path = frames / f"good-{n}.png"
        path.write_bytes(encode(product_image("ok" if n % 2 else "crack", 64, seed=500 + n)))
        good_paths.append(path)
    (frames / "cam-s" / "a.png").write_bytes(encode(product_image("ok", 64, seed=600)))
    (frames / "truncated.png").write_bytes(png_declaring(100, 100))  # crashes libpng in-process
    (frames / "bomb.png").write_bytes(png_declaring(60_000, 60_000))
    (frames / "animated.gif").write_bytes(animated_gif())
    (frames / "empty.png").write_bytes(b"")
    os.mkfifo(frames / "fifo.png")

    hostile = {
        "truncated": ("corrupt_image", frame(10, f"file://{frames}/truncated.png")),
        "bomb": ("image_too_large", frame(11, f"file://{frames}/bomb.png")),
        "animated": ("unsupported_image", frame(12, f"file://{frames}/animated.gif")),
        "empty": ("empty_object", frame(13, f"file://{frames}/empty.png")),
        "fifo": ("unreadable_object", frame(14, f"file://{frames}/fifo.png")),
        "down": ("fetch_failed", frame(15, f"{hostile_server}/frames/down.png")),
        "trickle": ("fetch_failed", frame(16, f"{hostile_server}/frames/trickle.png")),
        "redirect": ("disallowed_uri", frame(17, f"{hostile_server}/frames/escape.png")),
        "model-path": (
            "schema_violation",
            json.dumps(
                {**json.loads(frame(18, f"file://{good_paths[0]}")), "model": "../../tmp/evil"}
            ).encode(),
        ),
        "huge-record": ("oversize", b'{"frame_id": "' + b"x" * 7_000_000 + b'"}'),
    }
    first_run = [frame(n, f"file://{path}") for n, path in enumerate(good_paths[:3])]
    first_run.append(frame(3, f"file://{frames}/cam-s/a.png"))
    first_run += [value for _, value in hostile.values()]
    first_run += [frame(4 + n, f"file://{path}") for n, path in enumerate(good_paths[3:])]
    produce(
        kafka_bootstrap,
        settings.topics.frames.name,
        [(b"cam-1", value) for value in first_run],
        max_request_size=8_388_608,
    )
    run_until_committed(settings)

    # The allowed sub-folder is swapped for a symlink out of the store after its first use;
    # the restarted service resumes from its commits and refuses the read.
    (frames / "cam-s" / "a.png").unlink()
    (frames / "cam-s").rmdir()
    os.symlink(outside, frames / "cam-s")
    produce(
        kafka_bootstrap,
        settings.topics.frames.name,
        [
            (b"cam-1", frame(30, f"file://{frames}/cam-s/a.png")),
            (b"cam-1", frame(31, f"file://{good_paths[0]}")),
        ],
    )
    run_until_committed(settings)

    letters = [
        DeadLetter.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.dlq.name)
    ]
    results = [
        InferenceResult.from_json_bytes(r.value)
        for r in read_until_quiet(kafka_bootstrap, settings.topics.inferences.name)
    ]
    offset_of = {value: offset for offset, value in enumerate(first_run)}
    reasons = {d.origin_offset: d.reason for d in letters}
    for name, (reason, value) in hostile.items():
        assert reasons.get(offset_of[value]) == reason, name
    assert reasons[len(first_run)] == "disallowed_uri"  # the swapped symlink, after the restart
    huge = next(d for d in letters if d.reason == "oversize")
    assert huge.original_truncated and huge.original_size > 7_000_000 and huge.original_sha256
    assert (original_value(huge) or b"").startswith(b'{"frame_id": "xxx')

    # Every good frame has its result, neighbours of the hostile ones included; every input one outcome.
    scored = sorted(r.evidence.offset for r in results)
    good_offsets = sorted(
        offset_of[v] for v in first_run if v not in {value for _, value in hostile.values()}
    )
    assert scored == [*good_offsets, len(first_run) + 1]
    assert sorted([*scored, *reasons]) == list(range(len(first_run) + 2))

    # Nothing outside the allow-list was read: not over HTTP, not through the symlink.
    assert "/private/key" not in FrameServer.requests and "/frames/../private/key" not in FrameServer.requests
    assert FrameServer.requests.count("/frames/down.png") == 3  # one try and two retries, then fetch_failed
    outside_sha = hashlib.sha256((outside / "a.png").read_bytes()).hexdigest()
    assert all(r.evidence.frame_sha256 != outside_sha for r in results)
