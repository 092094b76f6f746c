"""Image files crafted the way an attacker or a broken camera would make them."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, carrying only ``pixels``.

    With too little image data, torchvision's libpng decoder dies of SIGSEGV (seen with
    torchvision 0.29): the file is a crash, not an error.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(pixels))
        + _chunk(b"IEND", b"")
    )


def animated_gif(frames: int = 3, size: int = 32) -> bytes:
    """An animated GIF of ``frames`` frames."""
    images = [Image.new("L", (size, size), color=40 * k) for k in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def bmp(size: int = 32) -> bytes:
    """A small, valid BMP (a format Vigil does not accept by default)."""
    out = io.BytesIO()
    Image.new("L", (size, size), color=128).save(out, format="BMP")
    return out.getvalue()
