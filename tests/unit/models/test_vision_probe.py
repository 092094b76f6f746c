"""The linear probe: convex fit, k-fold selection of its L2 strength, out-of-fold scores."""

from __future__ import annotations

import torch

from models.vision.probe import STRENGTHS, fit_probe, select_probe, stratified_folds


def _blobs(per_class: tuple[int, ...], spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(per_class), 12, generator=generator) * 3
    features = torch.cat(
        [
            c + spread * torch.randn(n, 12, generator=generator)
            for c, n in zip(centres, per_class, strict=True)
        ]
    )
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(per_class)])
    return features, labels


def test_stratified_folds_deal_every_index_once_and_every_class_to_each_fold() -> None:
    labels = torch.tensor([0] * 20 + [1] * 5 + [2] * 7)
    parts = stratified_folds(labels, 5, seed=3)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(labels)))
    assert all(set(labels[p].tolist()) == {0, 1, 2} for p in parts)  # 5 of the rarest: one each
    assert [p.tolist() for p in parts] == [p.tolist() for p in stratified_folds(labels, 5, seed=3)]


def test_the_probe_separates_rare_classes_and_scores_each_image_out_of_fold() -> None:
    features, labels = _blobs((200, 12, 9), spread=1.0)
    selection = select_probe(features, labels, ["ok", "crack", "spot"], folds=4, seed=0)
    assert selection.strength in STRENGTHS and set(selection.fold_macro_f1) == set(STRENGTHS)
    mean, spread = selection.macro_f1
    assert mean > 0.9 and spread < 0.2
    assert selection.out_of_fold.shape == (221, 3)
    assert torch.allclose(selection.out_of_fold.sum(dim=1), torch.ones(221), atol=1e-5)
    predicted = selection.probe.logits(features).argmax(dim=1)
    assert (predicted == labels).float().mean() > 0.95
    for k in (1, 2):  # class weights: the rare classes are found, not folded into the large one
        assert (predicted[labels == k] == k).float().mean() > 0.8


def test_a_stronger_penalty_shrinks_the_weights_and_ties_prefer_it() -> None:
    features, labels = _blobs((60, 60), spread=0.3, seed=1)  # easy: every strength separates them
    weak, strong = (fit_probe(features, labels, 2, s).weight.norm() for s in (1e-4, 1e-1))
    assert strong < weak
    selection = select_probe(features, labels, ["a", "b"], folds=3)
    assert all(min(scores) == 1.0 for scores in selection.fold_macro_f1.values())
    assert selection.strength == max(STRENGTHS)  # equal scores: the simplest model
