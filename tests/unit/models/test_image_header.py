from __future__ import annotations

import pytest

from models.vision.image_header import ImageRefused, check_header
from models.vision.synthetic import encode, product_image
from tests.hostile_images import animated_gif, bmp, png_declaring

FORMATS = ("JPEG", "PNG")


def refusal(data: bytes, max_pixels: int = 40_000_000) -> str:
    with pytest.raises(ImageRefused) as caught:
        check_header(data, FORMATS, max_pixels, 4096.0)
    return caught.value.reason


def test_an_ordinary_image_passes_with_its_facts() -> None:
    header = check_header(encode(product_image("ok", 64), "jpeg"), FORMATS, 40_000_000, 4096.0)
    assert (header.format, header.width, header.height, header.frames) == ("JPEG", 64, 64, 1)


def test_a_tiny_file_declaring_a_giant_image_is_refused_before_decoding() -> None:
    bomb = png_declaring(60_000, 60_000)
    assert len(bomb) < 100
    assert refusal(bomb) == "image_too_large"
    # within the pixel budget, but 100 M pixels cannot come from 65 bytes
    assert refusal(png_declaring(10_000, 10_000), max_pixels=10**12) == "corrupt_image"


def test_images_over_the_pixel_budget_are_refused() -> None:
    assert refusal(encode(product_image("ok", 64)), max_pixels=64 * 63) == "image_too_large"


def test_animated_and_unaccepted_formats_are_refused() -> None:
    assert refusal(animated_gif()) == "unsupported_image"
    assert refusal(bmp()) == "unsupported_image"
    assert refusal(b"GIF89a") == "corrupt_image"
    assert refusal(b"not an image at all") == "corrupt_image"
