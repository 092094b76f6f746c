"""Visual anomaly detection from normal images only: PatchCore (Roth et al., 2022) on
pretrained multi-scale features.

Fit: the locally averaged feature of every patch of the normal images, from two levels of an
ImageNet backbone (the coarser upsampled onto the finer grid), forms a memory bank thinned by
greedy k-center selection. Score: each patch's distance to its nearest normal patch is the
anomaly map; the image score is the map's maximum. The output also says where: the peak and
the bounding box of the connected region around it that lies above the threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from models.vision.backbones import FeatureTrunk

LOCATION_COLUMNS = ("peak_x", "peak_y", "box_x0", "box_y0", "box_x1", "box_y1")
"""After the score, the anomaly output's columns: fractions of the model input's width and height."""


class PatchCoreScorer(nn.Module):
    """(N, 7): anomaly score, then ``LOCATION_COLUMNS``; see the module docstring."""

    memory: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, trunk: FeatureTrunk, memory: torch.Tensor, threshold: float = float("inf")) -> None:
        super().__init__()
        self.trunk = trunk
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.register_buffer("memory", memory)
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) patch features on the finest level's grid."""
        maps = [self.pool(m) for m in self.trunk(x)]
        size = maps[0].shape[-2:]
        return torch.cat(
            [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]],
            dim=1,
        )

    def anomaly_map(self, x: torch.Tensor, block: int = 4096) -> torch.Tensor:
        """(N, h, w) distance of each patch to its nearest normal patch."""
        features = self.patch_features(x).float()
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, d)
        memory = self.memory.float()
        nearest = torch.cat([torch.cdist(q, memory).amin(dim=1) for q in queries.split(block)])
        return nearest.reshape(n, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.locate(self.anomaly_map(x))

    def static_stem(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The part a graph compiler may take (the anomaly maps) and the dynamic rest
        (``locate``: its region grows for as many steps as the frame needs)."""
        return AnomalyMaps(self), self.locate

    def locate(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, 7) outputs of anomaly maps: the score, then ``LOCATION_COLUMNS``."""
        _, h, w = maps.shape
        scores, flat_peak = maps.flatten(1).max(dim=1)
        peak_y, peak_x = flat_peak // w, flat_peak % w
        region = connected_region(maps, torch.minimum(scores, self.threshold), peak_y, peak_x)
        rows, cols = region.any(dim=2), region.any(dim=1)
        y0, y1 = _first(rows), h - _first(rows.flip(1))
        x0, x1 = _first(cols), w - _first(cols.flip(1))
        location = torch.stack(
            [(peak_x + 0.5) / w, (peak_y + 0.5) / h, x0 / w, y0 / h, x1 / w, y1 / h], dim=1
        )
        return torch.cat([scores.unsqueeze(1), location.to(scores.dtype)], dim=1)


class AnomalyMaps(nn.Module):
    """A scorer's anomaly maps (N, h, w) in one graph: no loop and no branch on the batch, so
    a compiler may take it whole. Squared distances come from one product with the memory
    bank; ``PatchCoreScorer.anomaly_map`` gives the same in blocks, for fitting and evaluation."""

    def __init__(self, scorer: PatchCoreScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.scorer.patch_features(x).float()
        n, _, h, w = features.shape
        queries = features.flatten(2).transpose(1, 2)
        memory = self.scorer.memory.float()
        squared = queries.pow(2).sum(dim=2, keepdim=True) - 2 * queries @ memory.T + memory.pow(2).sum(dim=1)
        return squared.amin(dim=2).clamp_min(0).sqrt().reshape(n, h, w)


def _first(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True of each row (rows are never all False here)."""
    return mask.float().argmax(dim=1)


def connected_region(
    maps: torch.Tensor, level: torch.Tensor, peak_y: torch.Tensor, peak_x: torch.Tensor
) -> torch.Tensor:
    """(N, h, w) mask of the 8-connected cells at or above ``level`` that reach the peak."""
    above = maps >= level.reshape(-1, 1, 1)
    region = torch.zeros_like(above)
    region[torch.arange(len(maps)), peak_y, peak_x] = True
    for _ in range(maps.shape[1] * maps.shape[2]):
        grown = F.max_pool2d(region.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1).bool() & above
        if torch.equal(grown, region):
            break
        region = grown
    return region


def greedy_coreset(
    features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0
) -> torch.Tensor:
    """Indices of ``size`` rows chosen by greedy k-center selection on a random projection.

    Each new centre costs one matrix-vector product over all rows (squared distances from the
    precomputed norms), no per-centre ``cdist`` and no N x D temporary.
    """
    if size >= len(features):
        return torch.arange(len(features))
    generator = torch.Generator().manual_seed(seed)
    dim = min(projection_dim, features.shape[1])
    projection = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    projected = (features.float() @ projection).contiguous()
    norms = projected.pow(2).sum(dim=1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(projected), (1,), generator=generator))
    nearest = norms - 2 * (projected @ projected[chosen[0]]) + norms[chosen[0]]
    for k in range(1, size):
        index = int(nearest.argmax())
        chosen[k] = index
        distance = norms - 2 * (projected @ projected[index]) + norms[index]
        torch.minimum(nearest, distance, out=nearest)
    return chosen


def fit_patchcore(
    normal_batches: list[torch.Tensor], trunk: FeatureTrunk, memory_size: int, seed: int = 0
) -> PatchCoreScorer:
    """A scorer whose memory bank is the coreset of the patches of ``normal_batches``."""
    scorer = PatchCoreScorer(trunk.eval(), torch.empty(0, 1)).eval()
    with torch.inference_mode():
        patches = torch.cat(
            [scorer.patch_features(b).permute(0, 2, 3, 1).flatten(0, 2) for b in normal_batches]
        )
    keep = greedy_coreset(patches, memory_size, seed=seed)
    scorer.memory = patches[keep].clone()
    return scorer
