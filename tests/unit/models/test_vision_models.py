from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from models.engine import InferenceEngine
from models.registry import load_model, save_model, versions
from models.vision.anomaly import PatchCoreScorer
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
    metrics = model.card.training.metrics
    assert metrics["holdout_accuracy"] >= 0.8 > metrics["holdout_majority_accuracy"]
    assert metrics["holdout_macro_f1"] > metrics["holdout_majority_macro_f1"]
    assert set(model.card.thresholds) == {"crack", "scratch", "spot"} and model.card.normal_label == "ok"
    # one threshold from the false-alarm budget on validation, and what it buys on the hold-out
    assert len(set(model.card.thresholds.values())) == 1 and 0 < model.card.thresholds["crack"] <= 1
    assert metrics["holdout_defect_recall"] >= 0.8 and metrics["holdout_false_alarm_rate"] <= 0.2
    # the default: a pretrained EfficientNet-Lite0, its own normalisation, aspect kept
    assert model.card.architecture == "backbone_linear" and model.card.output == "logits"
    assert model.card.backbone is not None and model.card.backbone.name == "efficientnet_lite0"
    assert model.card.backbone.checkpoint.startswith("efficientnet-lite0-")
    assert isinstance(model.card.input, ImageInputSpec) and model.card.input.resize == "letterbox"
    assert model.card.input.mean == pytest.approx([127 / 255] * 3)


def test_anomaly_scorer_ranks_defects_above_normal_images(vision_models: VisionModels) -> None:
    model = load_model(vision_models.registry, vision_models.anomaly)
    assert model.card.training is not None and model.card.training.metrics["holdout_image_auroc"] >= 0.9
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
        assert auroc(model.module(normal)[:, 0], model.module(defects)[:, 0]) >= 0.9


def direct_scores(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(images)


@pytest.mark.parametrize(
    "architecture", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "resnet50_linear_head"]
)
def test_each_architecture_round_trips_the_registry(
    tmp_path, architecture: str, vision_models: VisionModels
) -> None:
    from models.registry import ProbabilitiesFromLogits
    from models.vision.architectures import build_classifier

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
            "cpu_engine": None,
        }
    )
    save_model(tmp_path, card, logits)
    loaded = load_model(tmp_path, "arch", architecture)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(
        direct_scores(loaded.module, images), direct_scores(ProbabilitiesFromLogits(logits).eval(), images)
    )
    if architecture == "resnet50_linear_head":
        keys = set(logits.state_dict())
        assert any(k.startswith("backbone.") for k in keys) and {"head.weight", "head.bias"} <= keys


def test_torchscript_entries_serve_the_scripted_module(tmp_path, vision_models: VisionModels) -> None:
    source = load_model(vision_models.registry, vision_models.classifier)
    card = source.card.model_copy(
        update={
            "version": "ts",
            "architecture": "torchscript",
            "weights_file": "model.pt",
            "output": "probabilities",
            "cpu_engine": None,
        }
    )
    save_model(tmp_path, card, torch.jit.trace(source.module, torch.randn(1, 3, 64, 64)))
    loaded = load_model(tmp_path, card.name, "ts")
    images = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(direct_scores(loaded.module, images), direct_scores(source.module, images))


def test_registry_refuses_changed_weights_and_lists_versions(tmp_path, vision_models: VisionModels) -> None:
    source = load_model(vision_models.registry, vision_models.classifier)
    for version in ("2", "10", "9"):
        save_model(
            tmp_path, source.card.model_copy(update={"version": version}), source.module.model, source.checks
        )
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


def test_a_false_alarm_budget_sets_the_lowest_threshold_that_keeps_to_it() -> None:
    from models.vision.evaluation import DefectAlerts
    from models.vision.training import budget_threshold, defect_thresholds

    normals = torch.arange(100, dtype=torch.float32) / 100  # 0.00 .. 0.99
    for budget, flagged in ((0.0, 0), (0.02, 2), (0.1, 10), (0.155, 15)):
        threshold = budget_threshold(normals, budget)
        assert int((normals >= threshold).sum()) == flagged
        assert int((normals >= threshold - 1e-6).sum()) > flagged  # the lowest such threshold
    with pytest.raises(ValueError):
        budget_threshold(normals, 1.0)
    labels = ["crack", "ok", "spot"]
    # columns: crack, ok, spot; rows 0-3 normal, 4-5 defects
    probabilities = torch.tensor(
        [
            [0.1, 0.8, 0.1],
            [0.3, 0.6, 0.1],
            [0.05, 0.9, 0.05],
            [0.2, 0.55, 0.25],
            [0.25, 0.7, 0.05],
            [0.1, 0.2, 0.7],
        ]
    )
    truth = torch.tensor([1, 1, 1, 1, 0, 2])
    thresholds = defect_thresholds(probabilities[:4], truth[:4], labels, normal=1, budget=0.25)
    # just above the second-strongest normal (0.25): one normal of four reaches it
    assert thresholds["crack"] == thresholds["spot"] == pytest.approx(0.25)
    alerts = DefectAlerts.of(probabilities, truth, labels, thresholds)
    assert (alerts.normals, alerts.normals_flagged, alerts.defects, alerts.defects_flagged) == (4, 1, 2, 1)
    assert alerts.false_alarm_rate == 0.25 and alerts.defect_recall == 0.5


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
    chosen = greedy_coreset(clusters, 3, projection_dim=8)
    assert len(set(chosen.tolist())) == 3
    centres = sorted(round(float(clusters[i].mean()) / 5) for i in chosen)
    assert centres == [0, 1, 2]  # one point from each cluster


def test_greedy_coreset_equals_the_textbook_k_center_selection() -> None:
    from models.vision.anomaly import greedy_coreset

    torch.manual_seed(0)
    points = torch.randn(400, 6)
    fast = greedy_coreset(points, 25, projection_dim=6, seed=3)
    # the textbook version on the same projection: one cdist per centre
    generator = torch.Generator().manual_seed(3)
    projection = torch.randn(6, 6, generator=generator) / 6**0.5
    projected = points @ projection
    chosen = [int(torch.randint(len(projected), (1,), generator=generator))]
    nearest = torch.cdist(projected, projected[chosen]).squeeze(1)
    for _ in range(24):
        chosen.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, torch.cdist(projected, projected[chosen[-1:]]).squeeze(1))
    assert fast.tolist() == chosen


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "shorter_side_then_center_crop"])
def test_points_of_the_model_input_map_back_to_the_image(resize: str) -> None:
    from models.vision.preprocess import resize as resize_image
    from models.vision.preprocess import to_image_point

    spec = SPEC.model_copy(update={"resize": resize, "channels": 1, "mean": [0.0], "std": [1.0]})
    height, width = 90, 150
    for x, y in ((30, 20), (120, 70), (75, 45)):
        image = torch.zeros(1, height, width, dtype=torch.uint8)
        image[0, y - 2 : y + 3, x - 2 : x + 3] = 255
        resized = resize_image(image, spec)[0].float()
        peak = int(resized.argmax())
        fy, fx = (peak // spec.width + 0.5) / spec.height, (peak % spec.width + 0.5) / spec.width
        back_x, back_y = to_image_point(fx, fy, height, width, spec)
        assert abs(back_x - x) <= 4 and abs(back_y - y) <= 4, (resize, x, y, back_x, back_y)


def test_connected_region_grows_from_the_peak_over_cells_above_the_level() -> None:
    from models.vision.anomaly import connected_region

    maps = torch.zeros(1, 6, 8)
    maps[0, 1:3, 1:4] = 2.0  # the peak's region
    maps[0, 1, 2] = 3.0
    maps[0, 5, 7] = 2.5  # above the level but not connected
    region = connected_region(maps, torch.tensor([1.0]), torch.tensor([1]), torch.tensor([2]))
    assert region[0].nonzero().tolist() == [[r, c] for r in (1, 2) for c in (1, 2, 3)]


def test_anomaly_output_locates_a_defect_drawn_at_a_known_place(vision_models: VisionModels) -> None:
    from models.vision.anomaly import LOCATION_COLUMNS
    from models.vision.synthetic import draw_defect

    model = load_model(vision_models.registry, vision_models.anomaly)
    spec = model.card.input
    assert isinstance(spec, ImageInputSpec)
    hits = 0
    for seed in range(6):
        image = product_image("ok", 64, seed=900 + seed)
        patch = draw_defect(image[:, :32, :32].clone(), "spot", torch.Generator().manual_seed(seed))
        image[:, :32, :32] = patch  # the defect lies in the top-left quarter
        with torch.inference_mode():
            output = model.module(preprocess(encode(image), spec).unsqueeze(0))[0]
        assert output.shape == (1 + len(LOCATION_COLUMNS),)
        peak_x, peak_y, x0, y0, x1, y1 = output[1:].tolist()
        assert 0 <= x0 <= peak_x <= x1 <= 1 and 0 <= y0 <= peak_y <= y1 <= 1
        hits += peak_x < 0.5 and peak_y < 0.5
    assert hits >= 5


def test_eval_prints_baselines_and_writes_plots(
    tmp_path, vision_models: VisionModels, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.ops import vision_commands
    from consumers.ops.cli import main

    monkeypatch.setattr(vision_commands.console, "width", 200)
    common = ["--data", str(vision_models.images), "--registry", str(vision_models.registry)]
    assert (
        main(["eval", "vision", "--name", vision_models.classifier, *common, "--plots", str(tmp_path / "c")])
        == 0
    )
    printed = capsys.readouterr().out
    for words in (
        "macro-F1",
        "majority class",
        "classical: texture",
        "precision",
        "confusion (rows: truth",
        "defect images alerted",
        "normal images alerted (false alarms)",
    ):
        assert words in printed
    assert (
        main(
            [
                "eval",
                "vision",
                "--name",
                vision_models.anomaly,
                *common,
                "--plots",
                str(tmp_path / "a"),
                "--heatmaps",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for words in (
        "image AUROC, all defects",
        "image AUROC, crack",
        "normal images flagged",
        "defect images flagged",
    ):
        assert words in printed
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == ["heatmap-01.png", "heatmap-02.png", "roc.png", "scores.png"]
    assert (tmp_path / "c" / "confusion.png").read_bytes().startswith(b"\x89PNG")
    assert all((tmp_path / "a" / name).read_bytes().startswith(b"\x89PNG") for name in written)


def test_training_warns_when_the_model_does_not_beat_the_majority_class(tmp_path) -> None:
    from models.vision.training import ClassifierTraining, train_classifier

    images = tmp_path / "images"
    seed = 0
    for label, count in (("ok", 40), ("crack", 8), ("spot", 8)):  # labels carry no information
        (images / label).mkdir(parents=True)
        for k in range(count):
            seed += 1
            (images / label / f"{k}.png").write_bytes(encode(product_image("ok", 32, seed=seed)))
    entry = train_classifier(
        images, tmp_path / "reg", "noise", "1", ClassifierTraining(size=32, scopes=("head",), epochs=3)
    )
    assert entry.warnings and "does NOT beat" in entry.warnings[0]
    assert entry.card.training is not None and "does NOT beat" in entry.card.training.notes


@pytest.mark.parametrize("stacked", [True, False])
@pytest.mark.parametrize("resize", ["letterbox", "stretch", "shorter_side_then_center_crop"])
def test_batched_preprocessing_equals_one_image_at_a_time(resize: str, stacked: bool) -> None:
    """``preprocess_on_device`` resizes same-size frames as one stack: each must come out as
    ``preprocess`` makes it alone, and a bad item fails alone."""
    from models.vision.preprocess import preprocess_on_device

    spec = ImageInputSpec(height=48, width=64, channels=3, mean=[0.5] * 3, std=[0.25] * 3, resize=resize)  # type: ignore[arg-type]
    rgb = [
        product_image(label, size, seed=n).expand(3, -1, -1).contiguous()
        for n, (label, size) in enumerate(
            [("ok", 96), ("crack", 96), ("spot", 80), ("ok", 96), ("scratch", 96)]
        )
    ]
    jpegs = [encode(image, "jpeg") for image in rgb]
    ready = preprocess(jpegs[4], spec)
    items: list[bytes | torch.Tensor] = [
        jpegs[0],
        jpegs[1],
        jpegs[2],
        jpegs[3],
        b"\xff\xd8\xff not a jpeg",
        ready,
    ]
    rois = [None, None, None, (10, 20, 40, 30), None, None]
    out = preprocess_on_device(items, spec, rois, torch.device("cpu"), stacked)
    for i in (0, 1, 2):
        assert torch.allclose(out[i], preprocess(jpegs[i], spec), atol=1e-5), f"frame {i}"  # type: ignore[arg-type]
    assert torch.allclose(out[3], preprocess(jpegs[3], spec, (10, 20, 40, 30)), atol=1e-5)  # type: ignore[arg-type]
    assert isinstance(out[4], CorruptImageError)
    assert torch.equal(out[5], ready)  # type: ignore[arg-type]
    outside = preprocess_on_device([jpegs[0]], spec, [(90, 90, 20, 20)], torch.device("cpu"))
    assert isinstance(outside[0], RoiOutsideImageError)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_preprocess_refuses_what_would_crash_a_decoder() -> None:
    from models.vision.preprocess import CorruptImageError, preprocess
    from schemas.model_card import ImageInputSpec

    spec = ImageInputSpec(height=8, width=8, channels=3, mean=[0.0] * 3, std=[1.0] * 3)
    for data in (bomb_png(60_000, 60_000), b"", b"\xff\xd8\xff truncated"):
        with pytest.raises(CorruptImageError):
            preprocess(data, spec)


def test_eval_goes_on_past_bad_files_and_names_them(
    tmp_path, vision_models: VisionModels, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from consumers.ops.cli import main

    data = tmp_path / "images"
    shutil.copytree(vision_models.images, data)
    crack = next(p for p in sorted(data.iterdir()) if p.is_dir())
    (crack / "bomb.png").write_bytes(bomb_png(60_000, 60_000))
    (crack / "empty.jpg").write_bytes(b"")
    (crack / "cut.jpg").write_bytes((crack / next(iter(sorted(os.listdir(crack))))).read_bytes()[:40])
    args = ["--data", str(data), "--registry", str(vision_models.registry), "--split", "all"]
    with caplog.at_level("WARNING"):
        assert main(["eval", "vision", "--name", vision_models.classifier, *args]) == 0
    for name, reason in (
        ("bomb.png", "image_too_large"),
        ("empty.jpg", "corrupt_image"),
        ("cut.jpg", "corrupt"),
    ):
        assert any(name in line and reason in line for line in caplog.text.splitlines()), (name, caplog.text)
    assert "refused 3 of" in caplog.text


def test_localisation_scores_pixels_and_regions_against_shipped_masks(
    tmp_path,
    vision_models: VisionModels,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.vision.evaluation import predict
    from models.vision.localisation import localise, ranked_auroc
    from models.vision.synthetic import draw_defect

    scores, truth = (
        torch.tensor([0.1, 0.4, 0.4, 0.9, 0.2, 0.4]),
        torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.bool),
    )
    assert ranked_auroc(scores, truth) == pytest.approx(auroc(scores[~truth], scores[truth]))
    for label in ("ok", "spot"):
        (tmp_path / label).mkdir()
    for seed in range(6):
        clean = product_image("ok", 64, seed=950 + seed)
        (tmp_path / "ok" / f"{seed}.jpg").write_bytes(
            encode(product_image("ok", 64, seed=970 + seed), "jpeg")
        )
        (tmp_path / "ok" / f"{seed}.png").write_bytes(encode(torch.zeros_like(clean)))  # an empty mask
        image = clean.clone()
        image[:, 8:40, 20:52] = draw_defect(
            image[:, 8:40, 20:52].clone(), "spot", torch.Generator().manual_seed(seed)
        )
        (tmp_path / "spot" / f"{seed}.jpg").write_bytes(encode(image, "jpeg"))
        mask = ((image.float() - clean.float()).abs() > 12).to(torch.uint8) * 255
        (tmp_path / "spot" / f"{seed}.png").write_bytes(encode(mask))
    labels, items = image_folder(tmp_path)
    assert labels == ["ok", "spot"] and len(items) == 12  # the masks are not images of their own
    model = load_model(vision_models.registry, vision_models.anomaly)
    spec = model.card.input
    assert isinstance(spec, ImageInputSpec)
    scorer: PatchCoreScorer = model.module  # type: ignore[assignment]
    outputs, located = localise(scorer.anomaly_map, scorer, items, spec, labels, normal=0)
    assert outputs.shape == (12, 7) and located is not None
    with torch.inference_mode():
        assert torch.allclose(outputs, predict(model.module, items, spec), atol=1e-4)  # the served outputs
    assert located.pixel_auroc > 0.8, located
    hit, total = located.hits["spot"]
    assert total == 6 and hit >= 4 and located.region_hit_rate == hit / total
    from consumers.ops import vision_commands
    from consumers.ops.cli import main

    monkeypatch.setattr(vision_commands.console, "width", 200)
    common = ["--registry", str(vision_models.registry), "--split", "all"]
    assert main(["eval", "vision", "--name", vision_models.anomaly, "--data", str(tmp_path), *common]) == 0
    printed = capsys.readouterr().out
    assert "pixel AUROC (against the masks)" in printed and f"({hit} of 6)" in printed


def test_normalise_is_the_card_s_formula_in_the_input_s_layout() -> None:
    from models.vision.preprocess import normalise

    spec = ImageInputSpec(
        height=8, width=8, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
    )
    pixels = torch.randint(
        0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = torch.tensor(spec.mean).reshape(3, 1, 1), torch.tensor(spec.std).reshape(3, 1, 1)
    expected = (pixels.double() / 255 - mean.double()) / std.double()
    got = normalise(pixels, spec)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.equal(normalise(pixels[0], spec), got[0])  # one image or a stack
    laid = normalise(pixels.contiguous(memory_format=torch.channels_last), spec)
    assert laid.is_contiguous(memory_format=torch.channels_last) and torch.equal(laid, got)
    with pytest.raises(TypeError, match="uint8"):
        normalise(got, spec)  # a float input would be scaled twice
