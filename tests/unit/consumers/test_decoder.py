from __future__ import annotations

import os
import signal

import pytest
import torch

from consumers.vision.decoder import IsolatedDecoder
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


def test_a_decoder_crash_costs_its_image_and_the_next_one_decodes(decoder: IsolatedDecoder) -> None:
    """A PNG with too little image data crashes torchvision's libpng decoder (SIGSEGV) in-process."""
    truncated = png_declaring(100, 100)
    with pytest.raises(CorruptImageError, match="crashed"):
        decoder.preprocess(truncated, SPEC, None)
    good = encode(product_image("ok", 48, seed=4))
    assert torch.equal(decoder.preprocess(good, SPEC, None), preprocess(good, SPEC))
    assert decoder.restarts == 2


def test_a_hung_decoder_is_killed_at_its_timeout(decoder: IsolatedDecoder) -> None:
    good = encode(product_image("ok", 48, seed=5))
    decoder.preprocess(good, SPEC, None)
    os.kill(decoder._process.pid, signal.SIGSTOP)  # the child stops answering, as a hung decoder would
    decoder.timeout_s = 0.5
    with pytest.raises(CorruptImageError, match=r"did not finish within 0\.5s"):
        decoder.preprocess(good, SPEC, None)
    decoder.timeout_s = 30
    assert torch.equal(decoder.preprocess(good, SPEC, None), preprocess(good, SPEC))
