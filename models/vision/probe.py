"""The linear probe: multinomial logistic regression on a frozen backbone's pooled features.

Fitted to convergence (L-BFGS, full batch: the features of a few thousand images fit in
memory), each class weighted by the inverse of its count so rare defects count as much as
the normal class, and its L2 strength chosen by stratified k-fold cross-validation: the
strongest (the simplest model) whose mean macro-F1 is within one standard error of the best
(a difference inside the folds' spread is not evidence). The folds' out-of-fold
probabilities are what the chosen model does on images it never saw: they set the alert
thresholds and report the validation figures.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from models.vision.evaluation import ClassificationReport

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)
"""L2 strengths tried (per weight, on standardised features), weakest first."""


@dataclass(frozen=True)
class Probe:
    """A fitted probe: standardisation, then ``features @ weight.T + bias`` (logits)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of raw (unstandardised) features."""
        return ((features - self.mean) / self.std) @ self.weight.T + self.bias


@dataclass(frozen=True)
class ProbeSelection:
    """The chosen probe (fitted on every image), its strength, the folds' macro-F1 by
    strength, and the out-of-fold probabilities at the chosen strength."""

    probe: Probe
    strength: float
    fold_macro_f1: dict[float, list[float]]
    out_of_fold: torch.Tensor

    @property
    def macro_f1(self) -> tuple[float, float]:
        """Mean and standard deviation over the folds of the chosen strength."""
        scores = self.fold_macro_f1[self.strength]
        return statistics.fmean(scores), statistics.pstdev(scores)


def fit_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, strength: float) -> Probe:
    """Class-weighted multinomial logistic regression with L2 ``strength``, to convergence."""
    features = features.double()
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-4)
    z = (features - mean) / std
    counts = torch.bincount(labels, minlength=classes).double()
    weights = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), 0.0)
    weight = torch.zeros(classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, labels, weight=weights)
        loss = loss + strength * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)  # type: ignore[arg-type]
    return Probe(mean.float(), std.float(), weight.detach().float(), bias.detach().float())


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Indices of ``folds`` parts, each class dealt round-robin after a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        for k, index in enumerate(members.tolist()):
            parts[k % folds].append(index)
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


def select_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    folds: int = 5,
    seed: int = 0,
    strengths: tuple[float, ...] = STRENGTHS,
) -> ProbeSelection:
    """Choose the L2 strength by k-fold cross-validation (see the module docstring), then fit
    on every image."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    parts = stratified_folds(labels, folds, seed)
    scores: dict[float, list[float]] = {}
    out_of_fold: dict[float, torch.Tensor] = {}
    for strength in strengths:
        probabilities = torch.zeros(len(labels), len(classes))
        for part in parts:
            if not len(part):
                continue
            rest = torch.ones(len(labels), dtype=torch.bool)
            rest[part] = False
            probe = fit_probe(features[rest], labels[rest], len(classes), strength)
            probabilities[part] = probe.logits(features[part]).softmax(dim=1)
        out_of_fold[strength] = probabilities
        scores[strength] = [
            ClassificationReport.of(classes, labels[part], probabilities[part].argmax(dim=1)).macro_f1
            for part in parts
            if len(part)
        ]
    best = max(strengths, key=lambda s: statistics.fmean(scores[s]))
    error = statistics.pstdev(scores[best]) / math.sqrt(len(scores[best]))
    chosen = max(
        s for s in strengths if statistics.fmean(scores[s]) >= statistics.fmean(scores[best]) - error
    )
    return ProbeSelection(
        fit_probe(features, labels, len(classes), chosen), chosen, scores, out_of_fold[chosen]
    )
