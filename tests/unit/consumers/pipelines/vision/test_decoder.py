from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from consumers.pipelines.vision.decoder import IsolatedDecoder
from consumers.pipelines.vision.fetch import FetchError
from models.vision.image_header import ImageRefused
from models.vision.preprocess import (
    CorruptImageError,
    RoiOutsideImageError,
    decode_and_resize,
    normalise,
    preprocess,
    stack_inputs,
)
from models.vision.synthetic import encode, product_image
from schemas.model_card import ImageInputSpec
from schemas.settings import DecodeSettings, FetchSettings
from tests.hostile_images import png_declaring

SPEC = ImageInputSpec(height=32, width=32, channels=1, mean=[0.5], std=[0.25])


@pytest.fixture
def decoder() -> IsolatedDecoder:
    decoder = IsolatedDecoder(timeout_s=30)
    yield decoder
    decoder.close()


def test_the_child_gives_exactly_what_preprocess_gives(decoder: IsolatedDecoder) -> None:
    data = encode(product_image("crack", 48, seed=3))
    assert torch.equal(decoder.preprocess(data, SPEC, None), preprocess(data, SPEC))
    assert torch.equal(decoder.preprocess(data, SPEC, (4, 4, 20, 20)), preprocess(data, SPEC, (4, 4, 20, 20)))
    with pytest.raises(RoiOutsideImageError):
        decoder.preprocess(data, SPEC, (40, 40, 20, 20))
    with pytest.raises(CorruptImageError):
        decoder.preprocess(b"\x89PNG\r\n\x1a\n not really", SPEC, None)


def test_the_child_gives_the_uint8_image_the_lane_normalises_per_batch(decoder: IsolatedDecoder) -> None:
    data = encode(product_image("spot", 48, seed=4))
    pixels = decoder.decode(data, SPEC, None)
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, decode_and_resize(data, SPEC))
    pixels[0, 0, 0] = 7  # the tensor owns its buffer: writable, and no other frame shares it
    assert torch.equal(
        normalise(torch.stack([decoder.decode(data, SPEC, None)]), SPEC)[0], preprocess(data, SPEC)
    )


def test_a_decoder_that_died_between_images_is_replaced_before_the_next(decoder: IsolatedDecoder) -> None:
    good = encode(product_image("ok", 48, seed=4))
    decoder.preprocess(good, SPEC, None)
    child = decoder._process
    os.kill(child.pid, signal.SIGSEGV)
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGSEGV
    assert torch.equal(decoder.preprocess(good, SPEC, None), preprocess(good, SPEC))  # not this image's fault
    assert decoder.restarts == 2


def test_a_truncated_png_fails_alone_whether_the_decoder_raises_or_crashes(decoder: IsolatedDecoder) -> None:
    """torchvision 0.29's libpng dies of SIGSEGV on a PNG with too little image data, in-process:
    here it costs that image alone ("the image decoder crashed"), and the next one decodes."""
    with pytest.raises(CorruptImageError):
        decoder.preprocess(png_declaring(100, 100), SPEC, None)
    good = encode(product_image("ok", 48, seed=6))
    assert torch.equal(decoder.preprocess(good, SPEC, None), preprocess(good, SPEC))


def test_a_hung_decoder_is_killed_at_its_timeout(decoder: IsolatedDecoder) -> None:
    good = encode(product_image("ok", 48, seed=5))
    decoder.preprocess(good, SPEC, None)
    os.kill(decoder._process.pid, signal.SIGSTOP)  # the child stops answering, as a hung decoder would
    decoder.timeout_s = 0.5
    with pytest.raises(CorruptImageError, match=r"did not finish within 0\.5s"):
        decoder.preprocess(good, SPEC, None)
    decoder.timeout_s = 30
    assert torch.equal(decoder.preprocess(good, SPEC, None), preprocess(good, SPEC))


@pytest.mark.slow
def test_a_script_without_a_main_guard_fails_at_start_with_the_fix_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from consumers.pipelines.vision.decoder import IsolatedDecoder\nIsolatedDecoder(30).start()\n"
    )
    root = Path(__file__).resolve().parents[5]
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode != 0
    assert "DecoderUnavailableError" in run.stderr and "if __name__ == '__main__':" in run.stderr


RGB = ImageInputSpec(height=24, width=24, channels=3, mean=[0.5] * 3, std=[0.25] * 3)


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    (tmp_path / "good.jpg").write_bytes(encode(product_image("crack", 48, seed=3), "jpeg"))
    (tmp_path / "truncated.png").write_bytes(png_declaring(100, 100))
    (tmp_path / "bomb.png").write_bytes(png_declaring(60_000, 60_000))
    return tmp_path


@pytest.fixture
def worker(frames: Path) -> IsolatedDecoder:
    fetch = FetchSettings(allowed_prefixes=[f"file://{frames}/"], deadline_s=2.0)
    worker = IsolatedDecoder(timeout_s=30, fetch=fetch, decode=DecodeSettings())
    yield worker
    worker.close()


def test_a_whole_frame_is_fetched_hashed_checked_and_decoded_in_the_child(
    worker: IsolatedDecoder, frames: Path
) -> None:
    data = (frames / "good.jpg").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    done = worker.frame(f"file://{frames}/good.jpg", digest, RGB, None)
    assert torch.equal(done.pixels, preprocess(data, RGB))
    assert (done.sha256, done.height, done.width) == (digest, 48, 48)
    unchecked = worker.frame(f"file://{frames}/good.jpg", None, RGB, (8, 8, 16, 16))
    assert unchecked.sha256 == digest and torch.equal(unchecked.pixels, preprocess(data, RGB, (8, 8, 16, 16)))
    assert not torch.equal(unchecked.pixels, done.pixels)  # the first frame's copy is its own
    laid = worker.frame(f"file://{frames}/good.jpg", None, RGB, None, channels_last=True).pixels
    assert torch.equal(laid, done.pixels) and laid.permute(1, 2, 0).is_contiguous()  # the engine's layout
    batch = stack_inputs([laid, laid], channels_last=True)
    assert batch.is_contiguous(memory_format=torch.channels_last) and torch.equal(batch[1], done.pixels)


def test_a_frame_the_child_refuses_gets_the_stage_s_reason(worker: IsolatedDecoder, frames: Path) -> None:
    def reason(uri: str, sha256: str | None = None) -> str:
        with pytest.raises((FetchError, ImageRefused)) as caught:
            worker.frame(uri, sha256, RGB, None)
        return caught.value.reason  # type: ignore[union-attr]

    assert reason(f"file://{frames}/good.jpg", "0" * 64) == "checksum_mismatch"
    assert reason("file:///etc/passwd") == "disallowed_uri"
    assert reason(f"file://{frames}/none.jpg") == "missing_object"
    assert reason(f"file://{frames}/bomb.png") == "image_too_large"  # refused from its header
    with pytest.raises(RoiOutsideImageError):
        worker.frame(f"file://{frames}/good.jpg", None, RGB, (40, 40, 20, 20))
    assert worker.restarts == 1  # none of these cost the child


def test_a_child_that_dies_on_a_frame_costs_that_frame_and_its_region_serves_the_next(
    worker: IsolatedDecoder, frames: Path
) -> None:
    good = f"file://{frames}/good.jpg"
    expected = preprocess((frames / "good.jpg").read_bytes(), RGB)
    worker.frame(good, None, RGB, None)
    region = worker.slots.region.name  # type: ignore[union-attr]
    with pytest.raises(CorruptImageError):
        worker.frame(f"file://{frames}/truncated.png", None, RGB, None)
    assert torch.equal(worker.frame(good, None, RGB, None).pixels, expected)
    child = worker._process
    os.kill(child.pid, signal.SIGKILL)  # and one killed between two frames
    child.join(timeout=10)
    assert torch.equal(worker.frame(good, None, RGB, None).pixels, expected)
    assert worker.slots.region.name == region and worker.restarts == 3  # type: ignore[union-attr]


def test_a_hung_child_is_killed_and_a_stop_abandons_the_frame(worker: IsolatedDecoder, frames: Path) -> None:
    good = f"file://{frames}/good.jpg"
    worker.frame(good, None, RGB, None)
    os.kill(worker._process.pid, signal.SIGSTOP)
    worker.timeout_s = 0.3
    with pytest.raises(CorruptImageError, match=r"fetching did not finish within 2\.3s"):
        worker.frame(good, None, RGB, None)
    worker.timeout_s = 30
    worker.start()  # a fresh child, stopped too: only the stage's stop ends the wait now
    os.kill(worker._process.pid, signal.SIGSTOP)
    threading.Timer(0.2, worker._stop.set).start()
    with pytest.raises(FetchError) as caught:
        worker.frame(good, None, RGB, None)
    assert caught.value.transient  # left uncommitted for the partition's next owner


def test_a_larger_input_gets_a_larger_region_once_no_slot_is_held_and_close_frees_it(
    worker: IsolatedDecoder, frames: Path
) -> None:
    good = f"file://{frames}/good.jpg"
    worker.frame(good, None, RGB, None).release()
    small = worker.slots.region.name  # type: ignore[union-attr]
    large = RGB.model_copy(update={"height": 64, "width": 64})
    done = worker.frame(good, None, large, None)
    assert done.pixels.shape == (3, 64, 64)
    assert torch.equal(done.pixels, preprocess((frames / "good.jpg").read_bytes(), large))
    bigger = worker.slots.region.name  # type: ignore[union-attr]
    assert bigger != small and not Path(f"/dev/shm/{small}").exists()
    worker.close()
    assert not Path(f"/dev/shm/{bigger}").exists()


def test_a_frame_holds_its_slot_until_released_and_a_failed_one_holds_none(frames: Path) -> None:
    fetch = FetchSettings(allowed_prefixes=[f"file://{frames}/"], deadline_s=2.0)
    worker = IsolatedDecoder(timeout_s=30, fetch=fetch, decode=DecodeSettings(), slots=2)
    good = f"file://{frames}/good.jpg"
    expected = preprocess((frames / "good.jpg").read_bytes(), RGB)
    try:
        first, second = worker.frame(good, None, RGB, None), worker.frame(good, None, RGB, None)
        assert worker.slots.held() == 2
        threading.Timer(0.3, worker._stop.set).start()
        with pytest.raises(FetchError) as caught:  # a third waits for a slot, until the stop
            worker.frame(good, None, RGB, None)
        assert caught.value.transient and worker.slots.held() == 2
        worker._stop.clear()
        first.release()
        first.release()  # a second release gives nothing back twice
        assert worker.slots.held() == 1
        third = worker.frame(good, None, RGB, None)  # reuses the first's slot
        assert torch.equal(third.pixels, expected) and torch.equal(second.pixels, expected)
        third.release()
        second.release()
        for uri in (
            f"file://{frames}/none.jpg",
            f"file://{frames}/bomb.png",
            f"file://{frames}/truncated.png",
        ):
            with pytest.raises((FetchError, ImageRefused, CorruptImageError)):
                worker.frame(uri, None, RGB, None)
        assert worker.slots.held() == 0
    finally:
        worker.close()
