from __future__ import annotations

import os
import signal

import pytest
import torch

from consumers.pipelines.vision.decoder import IsolatedDecoder
from models.vision.preprocess import CorruptImageError, RoiOutsideImageError, preprocess
from models.vision.synthetic import encode, product_image
from schemas.model_card import ImageInputSpec
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
