"""Unsupervised visual anomaly scoring from normal images only, in the spirit of PatchCore.

Fit: mid-level CNN features of every patch of the normal images form a memory bank,
thinned by greedy k-center (coreset) selection. Score: an image's score is the largest,
over its patches, of the distance from the patch to its nearest normal patch. The alert
threshold is a high quantile of the scores of held-out normal images.

Without downloadable ImageNet weights, the trunk is either the user's local weights or a
randomly initialised ResNet whose batch-norm statistics are calibrated on the normal images.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.vision.architectures import feature_trunk


class PatchCoreScorer(nn.Module):
    """Image anomaly score (N, 1) from the distance of patch features to the normal memory bank."""

    def __init__(self, trunk: nn.Module, memory: torch.Tensor, pool: int = 3) -> None:
        super().__init__()
        self.trunk = trunk
        self.pool = nn.AvgPool2d(pool, stride=1, padding=pool // 2)
        self.register_buffer("memory", memory)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h*w, D) locally averaged patch features."""
        features = self.pool(self.trunk(x))
        return features.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_features(x).float()
        memory: torch.Tensor = self.memory  # type: ignore[assignment]
        n, p, d = patches.shape
        distances = torch.cdist(patches.reshape(n * p, d), memory.float()).amin(dim=1)
        return distances.reshape(n, p).amax(dim=1, keepdim=True)


def calibrate_batchnorm(trunk: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set batch-norm running statistics to the cumulative statistics of ``batches``."""
    norms = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average over all calibration batches
    trunk.train()
    with torch.no_grad():
        for batch in batches:
            trunk(batch)
    trunk.eval()


def greedy_coreset(
    features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0, max_candidates: int = 40_000
) -> torch.Tensor:
    """Indices of ``size`` rows chosen by greedy k-center on a random projection.

    Each step reads every candidate once, so candidates are a random sample of at most
    ``max_candidates`` rows: the cost stays bounded however many normal images there are.
    """
    if size >= len(features):
        return torch.arange(len(features))
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randperm(len(features), generator=generator)[:max_candidates]
    projection = torch.randn(features.shape[1], projection_dim, generator=generator) / projection_dim**0.5
    projected = features[candidates] @ projection
    chosen = [int(torch.randint(len(candidates), (1,), generator=generator))]
    nearest = torch.cdist(projected, projected[chosen]).squeeze(1)
    for _ in range(size - 1):
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, torch.cdist(projected, projected[index : index + 1]).squeeze(1))
    return candidates[torch.tensor(chosen)]


def fit_patchcore(
    normal_batches: list[torch.Tensor],
    trunk_architecture: str = "resnet18",
    trunk_state: dict[str, torch.Tensor] | None = None,
    memory_size: int = 4000,
    seed: int = 0,
) -> PatchCoreScorer:
    """A scorer whose memory bank holds the (coreset of the) patches of ``normal_batches``."""
    torch.manual_seed(seed)
    trunk = feature_trunk(trunk_architecture)
    if trunk_state is not None:
        trunk.load_state_dict(trunk_state, strict=False)
        trunk.eval()
    else:
        calibrate_batchnorm(trunk, normal_batches)
    scorer = PatchCoreScorer(trunk, torch.empty(0, 1)).eval()
    with torch.inference_mode():
        patches = torch.cat([scorer.patch_features(b).flatten(0, 1) for b in normal_batches])
    keep = greedy_coreset(patches, memory_size, seed=seed)
    scorer.memory = patches[keep].clone()
    return scorer


def empty_patchcore(trunk_architecture: str, memory_shape: tuple[int, ...]) -> PatchCoreScorer:
    """A scorer of the right shapes, to load a saved state dict into."""
    return PatchCoreScorer(feature_trunk(trunk_architecture), torch.empty(memory_shape)).eval()
