"""Synthetic product images: textured grey tiles, some with drawn defects (scratch, spot, crack)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from torchvision.io import encode_jpeg, encode_png

DEFECTS = ("scratch", "spot", "crack")
LABELS = ("ok", *DEFECTS)


def tile(size: int, generator: torch.Generator) -> torch.Tensor:
    """A defect-free tile: uneven lighting, low-frequency mottling and fine grain, float (H, W) in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angle = float(torch.rand(1, generator=generator)) * math.tau
    light = 0.55 + 0.08 * (x * math.cos(angle) + y * math.sin(angle))
    coarse = torch.rand(1, 1, 8, 8, generator=generator)
    mottling = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    )[0, 0]
    grain = torch.randn(size, size, generator=generator) * 0.03
    return (light + 0.08 * (mottling - 0.5) + grain).clamp(0, 1)


def _segment_mask(size: int, points: torch.Tensor, width: float) -> torch.Tensor:
    """Pixels within ``width`` of the polyline through ``points`` (K, 2) in pixel coordinates."""
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    grid = torch.stack([x, y], dim=-1).reshape(-1, 2)
    best = torch.full((grid.shape[0],), float("inf"))
    for a, b in itertools.pairwise(points):
        ab = b - a
        t = ((grid - a) @ ab / ab.dot(ab).clamp(min=1e-6)).clamp(0, 1)
        best = torch.minimum(best, (grid - (a + t[:, None] * ab)).norm(dim=1))
    return (best <= width).reshape(size, size)


def draw_defect(image: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``image`` with one defect of ``kind`` drawn at a random place."""
    size = image.shape[-1]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    out = image.clone()
    if kind == "scratch":
        start = rand(2) * size
        direction = rand(2) - 0.5
        end = (start + direction / direction.norm() * size * (0.3 + 0.4 * float(rand(1)))).clamp(0, size - 1)
        mask = _segment_mask(size, torch.stack([start, end]), 0.8)
        out[mask] = (out[mask] + 0.35).clamp(0, 1)
    elif kind == "spot":
        center = size * (0.15 + 0.7 * rand(2))
        radius = size * (0.04 + 0.05 * float(rand(1)))
        y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        distance = ((x - center[0]) ** 2 + (y - center[1]) ** 2).sqrt()
        out = out * (1 - 0.55 * torch.exp(-((distance / radius) ** 2)))
    elif kind == "crack":
        steps = 6
        start = size * (0.1 + 0.3 * rand(2))
        heading = rand(2) * 0.6 + 0.2
        points = [start]
        for _ in range(steps):
            heading = heading + (rand(2) - 0.5) * 0.5
            points.append((points[-1] + heading / heading.norm() * size / (steps + 2)).clamp(0, size - 1))
        mask = _segment_mask(size, torch.stack(points), 1.0)
        out[mask] = out[mask] * 0.25
    else:
        raise ValueError(f"unknown defect {kind!r}; known: {', '.join(DEFECTS)}")
    return out


def product_image(label: str, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A uint8 (1, H, W) image of class ``label`` (``ok`` or a defect)."""
    generator = torch.Generator().manual_seed(seed)
    image = tile(size, generator)
    if label != "ok":
        image = draw_defect(image, label, generator)
    return (image * 255).round().to(torch.uint8).unsqueeze(0)


def encode(image: torch.Tensor, fmt: str = "png") -> bytes:
    """PNG or JPEG bytes of a uint8 (C, H, W) image."""
    data = encode_png(image) if fmt == "png" else encode_jpeg(image, quality=92)
    return bytes(data.numpy().tobytes())


def write_dataset(
    root: str | Path,
    per_class: int,
    size: int = 128,
    labels: tuple[str, ...] = LABELS,
    fmt: str = "png",
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write ``<root>/<label>/<n>.<fmt>`` images; return the paths by label."""
    written: dict[str, list[Path]] = {}
    for k, label in enumerate(labels):
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            path = folder / f"{label}-{n:05d}.{fmt}"
            path.write_bytes(encode(product_image(label, size, seed=seed * 1_000_003 + k * 100_003 + n), fmt))
            written.setdefault(label, []).append(path)
    return written
