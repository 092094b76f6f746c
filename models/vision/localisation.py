"""How well an anomaly scorer says where: against the defect masks a data set ships (a PNG
beside each JPEG, white = defect, as the magnetic tiles have).

- Pixel AUROC: the anomaly map, upsampled to the model input, against the mask brought to
  the same geometry (letterboxed like the image), over every pixel of every scored image (a
  normal image's mask is empty).
- Region hits: the share of defect images whose alert region (the box in the output, around
  the connected cells above the threshold that reach the peak) covers at least one mask
  pixel, overall and per defect class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from models.vision.anomaly import PatchCoreScorer
from models.vision.dataset import LabelledImage
from models.vision.preprocess import decode_and_resize, normalise
from schemas.model_card import ImageInputSpec


def mask_path(image: Path) -> Path | None:
    """The mask shipped beside ``image`` (same stem, ``.png``), if any."""
    candidate = image.with_suffix(".png")
    return candidate if candidate != image and candidate.is_file() else None


def ranked_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AUROC by ranks (ties count half), for millions of scores."""
    order = scores.argsort()
    ordered, hits = scores[order], positive[order]
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    n_pos = float(hits.sum())
    n_neg = len(hits) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[hits].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class Localisation:
    """Pixel AUROC and region hits of the images with masks."""

    pixel_auroc: float
    hits: dict[str, tuple[int, int]] = field(default_factory=dict)
    """By defect class: (images whose region covers the mask, images with a non-empty mask)."""

    @property
    def region_hit_rate(self) -> float:
        """Defect images whose alert region covers their mask, over those with a mask."""
        hit, total = (sum(v) for v in zip(*self.hits.values(), strict=True)) if self.hits else (0, 0)
        return hit / total if total else float("nan")


def _mask(item: LabelledImage, normal: int, spec: ImageInputSpec) -> torch.Tensor | None:
    path = mask_path(item.path)
    if path is None:
        return torch.zeros(spec.height, spec.width, dtype=torch.bool) if item.label == normal else None
    one = spec.model_copy(update={"channels": 1, "mean": [0.0], "std": [1.0]})
    return decode_and_resize(path.read_bytes(), one)[0] > 127


def localise(
    anomaly_map: Callable[[torch.Tensor], torch.Tensor],
    scorer: PatchCoreScorer,
    items: list[LabelledImage],
    spec: ImageInputSpec,
    labels: list[str],
    normal: int,
    batch: int = 8,
) -> tuple[torch.Tensor, Localisation | None]:
    """The scorer's outputs for ``items`` and, where masks ship, how well it locates defects
    (one pass: each anomaly map serves both). ``anomaly_map`` computes the maps of a batch (the
    scorer's own, or the graph that serves it)."""
    outputs, pixel_scores, pixel_truth = [], [], []
    hits: dict[str, list[int]] = {}
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        pixels = torch.stack([decode_and_resize(i.path.read_bytes(), spec) for i in chunk])
        with torch.inference_mode():
            maps = anomaly_map(normalise(pixels, spec))
            located = scorer.locate(maps)
        outputs.append(located.float())
        upsampled = F.interpolate(maps.unsqueeze(1), size=(spec.height, spec.width), mode="bilinear")[:, 0]
        for item, heat, output in zip(chunk, upsampled, located, strict=True):
            mask = _mask(item, normal, spec)
            if mask is None:
                continue
            pixel_scores.append(heat.flatten().half())
            pixel_truth.append(mask.flatten())
            if item.label == normal or not mask.any():
                continue
            x0, y0 = int(output[3] * spec.width), int(output[4] * spec.height)
            x1, y1 = (
                max(x0 + 1, round(float(output[5]) * spec.width)),
                max(y0 + 1, round(float(output[6]) * spec.height)),
            )
            tally = hits.setdefault(labels[item.label], [0, 0])
            tally[0] += bool(mask[y0:y1, x0:x1].any())
            tally[1] += 1
    scores = torch.cat(outputs) if outputs else torch.empty(0, 7)
    if not hits:
        return scores, None
    auroc = ranked_auroc(torch.cat(pixel_scores).float(), torch.cat(pixel_truth))
    return scores, Localisation(auroc, {label: (h, t) for label, (h, t) in hits.items()})
