from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from models.engine import InferenceEngine
from models.registry import load_model, save_model, versions
from models.vision.dataset import image_folder
from models.vision.evaluation import auroc
from models.vision.preprocess import CorruptImageError, RoiOutsideImageError, decode, preprocess
from models.vision.synthetic import encode, product_image
from schemas.model_card import ImageInputSpec
from tests.vision_fixtures import VisionModels

SPEC = ImageInputSpec(height=48, width=40, channels=3, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("roi", [None, (5, 7, 30, 20)])
def test_preprocessing_equals_a_plain_torchvision_pipeline(fmt: str, roi) -> None:
    data = encode(product_image("crack", 64, seed=3), fmt)
    reference = v2.Compose(
        [
            v2.Resize((SPEC.height, SPEC.width), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(SPEC.mean, SPEC.std),
        ]
    )
    image = decode(data, SPEC)
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    if roi is not None:
        x, y, w, h = roi
        image = image[:, y : y + h, x : x + w]
    torch.testing.assert_close(preprocess(data, SPEC, roi), reference(image))


def test_grayscale_and_colour_specs_decode_to_their_channels() -> None:
    data = encode(product_image("ok", 32, seed=1))
    gray = SPEC.model_copy(update={"channels": 1, "mean": [0.5], "std": [0.25]})
    assert preprocess(data, gray).shape == (1, 48, 40)
    assert preprocess(data, SPEC).shape == (3, 48, 40)


def test_corrupt_bytes_and_bad_roi_are_precise_errors() -> None:
    with pytest.raises(CorruptImageError):
        preprocess(b"\x89PNG\r\n\x1a\n truncated", SPEC)
    with pytest.raises(RoiOutsideImageError):
        preprocess(encode(product_image("ok", 32)), SPEC, (20, 20, 30, 30))


def test_trained_classifier_separates_defects(vision_models: VisionModels) -> None:
    model = load_model(vision_models.registry, vision_models.classifier)
    assert model.card.training is not None
    assert model.card.training.metrics["accuracy"] >= 0.8
    assert set(model.card.thresholds) == {"crack", "scratch", "spot"}


def test_anomaly_scorer_ranks_defects_above_normal_images(vision_models: VisionModels) -> None:
    model = load_model(vision_models.registry, vision_models.anomaly)
    assert model.card.training is not None and model.card.training.metrics["image_auroc"] >= 0.9
    spec = model.card.input
    assert isinstance(spec, ImageInputSpec)
    normal = torch.stack([preprocess(encode(product_image("ok", 64, seed=500 + i)), spec) for i in range(8)])
    defects = torch.stack(
        [
            preprocess(encode(product_image(k, 64, seed=600 + i)), spec)
            for i, k in enumerate(["crack", "spot"] * 4)
        ]
    )
    with torch.inference_mode():
        assert auroc(model.module(normal), model.module(defects)) >= 0.9


def direct_scores(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(images)


@pytest.mark.parametrize(
    "architecture", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "resnet50_linear_head"]
)
def test_each_architecture_round_trips_the_registry(
    tmp_path, architecture: str, vision_models: VisionModels
) -> None:
    from models.vision.architectures import Softmax, build_classifier

    torch.manual_seed(0)
    logits = build_classifier(architecture, 3).eval()
    card = load_model(vision_models.registry, vision_models.classifier).card.model_copy(
        update={
            "name": "arch",
            "version": architecture,
            "architecture": architecture,
            "labels": ["ok", "a", "b"],
            "thresholds": {"a": 0.5},
            "weights_sha256": None,
        }
    )
    save_model(tmp_path, card, logits)
    loaded = load_model(tmp_path, "arch", architecture)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(
        direct_scores(loaded.module, images), direct_scores(Softmax(logits).eval(), images)
    )
    if architecture == "resnet50_linear_head":
        keys = set(logits.state_dict())
        assert any(k.startswith("backbone.") for k in keys) and {"head.weight", "head.bias"} <= keys


def test_torchscript_entries_serve_the_scripted_module(tmp_path, vision_models: VisionModels) -> None:
    source = load_model(vision_models.registry, vision_models.classifier)
    card = source.card.model_copy(
        update={"version": "ts", "architecture": "torchscript", "weights_file": "model.pt"}
    )
    save_model(tmp_path, card, source.module)
    loaded = load_model(tmp_path, card.name, "ts")
    images = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(direct_scores(loaded.module, images), direct_scores(source.module, images))


def test_registry_refuses_changed_weights_and_lists_versions(tmp_path, vision_models: VisionModels) -> None:
    source = load_model(vision_models.registry, vision_models.classifier)
    for version in ("2", "10", "9"):
        save_model(tmp_path, source.card.model_copy(update={"version": version}), source.module.model)  # type: ignore[union-attr]
    assert versions(tmp_path, source.card.name) == ["2", "9", "10"]
    assert load_model(tmp_path, source.card.name).card.version == "10"
    weights = tmp_path / source.card.name / "9" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="sha256"):
        load_model(tmp_path, source.card.name, "9")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path, "nothing-here")


def test_registry_names_are_identifiers_and_entries_stay_inside_the_root(
    tmp_path, vision_models: VisionModels
) -> None:
    import os
    import shutil

    for name in ("../etc", "a/b", "..", "a\\b", ".hidden"):
        with pytest.raises(ValueError, match="not a model name"):
            load_model(tmp_path, name)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(vision_models.registry / vision_models.classifier, elsewhere / vision_models.classifier)
    registry = tmp_path / "registry"
    registry.mkdir()
    os.symlink(
        elsewhere / vision_models.classifier, registry / "linked"
    )  # an entry leading out of the registry
    with pytest.raises(ValueError, match="outside the registry"):
        load_model(registry, "linked")


class _RefusesLargeBatches(nn.Module):
    """Behaves like a GPU model that runs out of memory above ``limit`` items."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit or x.isnan().any():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x.flatten(1).sum(dim=1, keepdim=True)


def test_out_of_memory_splits_the_batch_and_fails_only_the_item_that_cannot_run() -> None:
    engine = InferenceEngine(_RefusesLargeBatches(limit=2), device="cpu", channels_last=False)
    batch = torch.ones(7, 1, 2, 2)
    batch[5] = float("nan")
    results = engine.run_splitting(engine.prepare(batch))
    assert len(results) == 7
    assert isinstance(results[5], torch.cuda.OutOfMemoryError)
    assert all(torch.equal(r, torch.tensor([4.0])) for i, r in enumerate(results) if i != 5)


def test_auroc_known_values() -> None:
    assert auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4])) == 1.0
    assert auroc(torch.tensor([0.3, 0.4]), torch.tensor([0.1, 0.2])) == 0.0
    assert auroc(torch.tensor([0.5]), torch.tensor([0.5])) == 0.5


def test_image_folder_skips_masks(tmp_path) -> None:
    folder = tmp_path / "MT_Crack"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(product_image("crack", 16), "jpeg"))
    (folder / "a.png").write_bytes(encode(product_image("ok", 16)))
    (folder / "b.png").write_bytes(encode(product_image("ok", 16)))
    labels, items = image_folder(tmp_path)
    assert labels == ["MT_Crack"] and sorted(i.path.name for i in items) == ["a.jpg", "b.png"]


def test_greedy_coreset_spreads_over_the_candidates() -> None:
    from models.vision.anomaly import greedy_coreset

    clusters = torch.cat([torch.randn(500, 8) * 0.01 + c for c in (0.0, 5.0, 10.0)])
    chosen = greedy_coreset(clusters, 3, projection_dim=8, max_candidates=600)
    assert len(set(chosen.tolist())) == 3
    centres = sorted(round(float(clusters[i].mean()) / 5) for i in chosen)
    assert centres == [0, 1, 2]  # one point from each cluster
