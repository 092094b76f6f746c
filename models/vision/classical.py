"""A classical baseline for every vision evaluation: hand-made texture features with a linear
classifier, or with nearest-normal distances for anomaly scoring.

Features of an image (grayscale, letterboxed to 128 px): histograms of intensity, of gradient
magnitude and of local contrast over the image's own pixels (the padding left out), their
means and spreads, and their extreme quantiles. What a learned model must beat to be worth its weights.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from models.vision.dataset import LabelledImage
from models.vision.preprocess import decode, letterbox_geometry, resize
from schemas.model_card import ImageInputSpec

BINS = 24
SIZE = 128
_SPEC = ImageInputSpec(height=SIZE, width=SIZE, channels=1, mean=[0.0], std=[1.0], resize="letterbox")


def texture_features(data: bytes) -> torch.Tensor:
    """(3 * BINS + 18,) texture features of one image's bytes; see the module docstring."""
    image = decode(data, _SPEC)
    _, new_h, new_w, top, left = letterbox_geometry(image.shape[-2], image.shape[-1], _SPEC)
    pixels = resize(image, _SPEC)[0, top : top + new_h, left : left + new_w].float() / 255
    gy, gx = torch.gradient(pixels)
    gradient = (gx**2 + gy**2).sqrt()
    local_mean = F.avg_pool2d(pixels[None, None], 5, stride=1, padding=2)[0, 0]
    local_sq = F.avg_pool2d(pixels[None, None] ** 2, 5, stride=1, padding=2)[0, 0]
    contrast = (local_sq - local_mean**2).clamp(min=0).sqrt()
    parts = []
    for values, top_value in ((pixels, 1.0), (gradient, 0.5), (contrast, 0.25)):
        histogram = torch.histc(values.clamp(max=top_value), bins=BINS, min=0, max=top_value)
        # defects are local: the extremes say more than the histogram of the whole surface
        extremes = torch.quantile(values.flatten(), torch.tensor([0.001, 0.01, 0.99, 0.999]))
        parts += [
            histogram / histogram.sum().clamp(min=1),
            torch.stack([values.mean(), values.std()]),
            extremes,
        ]
    return torch.cat(parts)


def features_of(items: list[LabelledImage]) -> torch.Tensor:
    """(N, D) texture features of ``items``."""
    return torch.stack([texture_features(i.path.read_bytes()) for i in items])


def fit_linear(
    features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float = 1e-3
) -> torch.nn.Module:
    """Class-balanced multinomial logistic regression (L-BFGS) on standardised features."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    linear = torch.nn.Linear(features.shape[1], classes)
    counts = torch.bincount(labels, minlength=classes).float().clamp(min=1)
    weight = counts.sum() / counts / classes
    standard = (features - mean) / std
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(linear(standard), labels, weight=weight) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return torch.nn.Sequential(_Standardise(mean, std), linear).eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def nearest_normal_distance(normal: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Each query's distance to its nearest normal feature vector (standardised on the normals)."""
    mean, std = normal.mean(dim=0), normal.std(dim=0).clamp(min=1e-6)
    return torch.cdist((queries - mean) / std, (normal - mean) / std).amin(dim=1)
