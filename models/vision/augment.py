"""Augmentation for surface inspection: a defect is a defect whichever way up the part lies and
whatever the lighting, but its shape and texture must not change, so no crops, shears or blur."""

from __future__ import annotations

import torch


def surface_augment(
    pixels: torch.Tensor, generator: torch.Generator, brightness: float = 0.1, contrast: float = 0.1
) -> torch.Tensor:
    """Random horizontal and vertical flips and a mild brightness and contrast change per image,
    on a uint8 (N, C, H, W) batch; returns uint8."""
    n = len(pixels)
    out = pixels.float()
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    out[flip_h] = out[flip_h].flip(-1)
    out[flip_v] = out[flip_v].flip(-2)
    gain = 1 + contrast * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    shift = 255 * brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * gain + mean + shift).clamp(0, 255).round().to(torch.uint8)
