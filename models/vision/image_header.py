"""What an image declares about itself, read from its header before a single pixel is decoded.

Pillow parses headers in Python (no native decoder runs), so a hostile file is judged by
what it claims: its format, its dimensions and its frame count. ``check_header`` refuses an
image whose format is not accepted, that has more than one frame, that is larger than the
pixel budget, or whose declared size cannot match the bytes it came in.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError


class ImageRefused(ValueError):
    """An image refused from its header; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """The facts an image file declares about itself."""

    format: str
    width: int
    height: int
    frames: int


def read_header(data: bytes) -> ImageHeader:
    """Format, size and frame count from the header; ``corrupt_image`` when there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                frames = int(getattr(image, "n_frames", 1))
                return ImageHeader(str(image.format), image.width, image.height, frames)
    except Image.DecompressionBombError as error:
        raise ImageRefused("image_too_large", f"image header declares too many pixels: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRefused(
            "corrupt_image", f"not a readable image header ({len(data)} bytes): {error}"
        ) from error


def check_header(
    data: bytes, formats: Collection[str], max_pixels: int, max_pixels_per_byte: float
) -> ImageHeader:
    """The header of ``data`` if the image may be decoded; raises ``ImageRefused`` otherwise."""
    header = read_header(data)
    if header.format not in formats:
        raise ImageRefused(
            "unsupported_image", f"{header.format} images are not accepted (accepted: {', '.join(formats)})"
        )
    if header.frames > 1:
        raise ImageRefused(
            "unsupported_image",
            f"{header.format} with {header.frames} frames: Vigil scores single frames, one per reference",
        )
    pixels = header.width * header.height
    if pixels <= 0:
        raise ImageRefused("corrupt_image", f"image declares {header.width}x{header.height} pixels")
    if pixels > max_pixels:
        raise ImageRefused(
            "image_too_large", f"{header.width}x{header.height} is more than {max_pixels} pixels"
        )
    if pixels > len(data) * max_pixels_per_byte:
        raise ImageRefused(
            "corrupt_image",
            f"header declares {header.width}x{header.height} but the file has only {len(data)} bytes",
        )
    return header
