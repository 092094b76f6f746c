"""The CPU engine: OpenVINO graphs that serve only where they agree with torch, and the card's
check images they are calibrated and checked on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from torch import nn

from models import cpu_engine
from models.engine import CpuPlan, InferenceEngine, int8_gap, static_graph
from models.registry import LoadedModel, ProbabilitiesFromLogits, load_model, save_model
from models.vision.anomaly import PatchCoreScorer
from models.vision.architectures import SmallCnn
from models.vision.backbones import FeatureTrunk
from models.vision.serving import cpu_plan
from models.vision.training import check_images
from schemas.model_card import CpuEngineSpec, ImageInputSpec, ModelCard

SIZE = 32


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return static_graph(ProbabilitiesFromLogits(SmallCnn(3).eval()))


def _inputs(count: int = 8, size: int = SIZE) -> torch.Tensor:
    return torch.randn((count, 3, size, size), generator=torch.Generator().manual_seed(1))


def _served(module: nn.Module, plan: CpuPlan | None, example: torch.Tensor) -> InferenceEngine:
    engine = InferenceEngine(module, "cpu", trace=True, cpu_plan=plan)
    engine.warm_up(example, (1, 4))
    return engine


def test_openvino_is_installed_with_vigil() -> None:
    assert cpu_engine.openvino_available()


def test_an_fp32_graph_serves_the_torch_outputs_at_any_batch_size() -> None:
    model, x = _classifier(), _inputs()
    engine = _served(model, CpuPlan(("fp32",)), x[0])
    assert engine.engine_name() == "openvino-fp32"
    with torch.inference_mode():
        expected = model(x)
    for size in (1, 3, 8):  # 3 and 8: sizes the warm-up never ran
        got = engine.run(engine.prepare(x[:size]))
        assert got.dtype == torch.float32 and torch.allclose(got, expected[:size], atol=1e-5)
    items = engine.run_items(engine.prepare(x[:2]))
    assert torch.allclose(items[0], expected[0], atol=1e-5)  # its own copy, not OpenVINO's buffer


def test_int8_within_the_tolerance_serves_int8() -> None:
    model, x = _classifier(), _inputs()
    engine = _served(model, CpuPlan(("int8", "fp32"), tolerance=1.0, checks=x), x[0])
    assert engine.engine_name() == "openvino-int8" and engine.cpu_graph is not None
    got = engine.run(engine.prepare(x))
    assert got.shape == (8, 3) and torch.allclose(got.sum(dim=1), torch.ones(8), atol=1e-4)
    assert 0 <= engine.cpu_graph.gap <= 1.0


def test_int8_beyond_the_tolerance_is_refused_for_fp32_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, x = _classifier(), _inputs()
    with caplog.at_level(logging.WARNING, logger="models.cpu_engine"):
        engine = _served(model, CpuPlan(("int8", "fp32"), tolerance=1e-9, checks=x), x[0])
    assert engine.engine_name() == "openvino-fp32"
    assert "OpenVINO int8 refused" in caplog.text and "tolerance 1e-09" in caplog.text


def test_int8_without_check_images_is_not_tried() -> None:
    model, x = _classifier(), _inputs()
    assert _served(model, CpuPlan(("int8", "fp32")), x[0]).engine_name() == "openvino-fp32"


def test_a_graph_openvino_cannot_build_leaves_torch_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(cpu_engine, "compile_graph", refuse)
    model, x = _classifier(), _inputs()
    with caplog.at_level(logging.WARNING, logger="models.cpu_engine"):
        engine = _served(model, CpuPlan(("fp32",)), x[0])
    assert engine.engine_name() == "torchscript" and "unsupported operation" in caplog.text
    with torch.inference_mode():
        assert torch.allclose(engine.run(engine.prepare(x)), model(x), atol=1e-5)


def test_engines_of_the_same_weights_share_one_compiled_graph() -> None:
    model, x = _classifier(), _inputs()
    plan = CpuPlan(("fp32",), key="tiles/1/0a1b")
    first, again = _served(model, plan, x[0]), _served(_classifier(), plan, x[0])
    assert first.cpu_graph is not None and again.cpu_graph is first.cpu_graph
    other = _served(model, CpuPlan(("fp32",), key="tiles/2/2c3d"), x[0])
    assert other.cpu_graph is not None and other.cpu_graph is not first.cpu_graph
    with torch.inference_mode():
        assert torch.allclose(again.run(again.prepare(x)), model(x), atol=1e-5)


def test_a_module_without_a_static_graph_serves_on_torch() -> None:
    model = ProbabilitiesFromLogits(SmallCnn(3).eval())  # not marked static_graph
    engine = _served(model, CpuPlan(("fp32",)), _inputs()[0])
    assert engine.engine_name() == "torch" and int8_gap(model, _inputs()) is None


def test_a_gpu_engine_never_takes_a_cpu_plan() -> None:
    plan = CpuPlan(("fp32",))
    assert InferenceEngine(_classifier(), "cpu", compile=True, cpu_plan=plan)._cpu_plan is None
    assert InferenceEngine(_classifier(), "cpu", cpu_plan=plan)._cpu_plan is plan


def test_patchcore_serves_its_anomaly_maps_from_the_graph_and_grows_regions_in_torch() -> None:
    torch.manual_seed(0)
    trunk = FeatureTrunk("efficientnet_lite0", (4, 5)).eval()
    x, normal = _inputs(6, 64), _inputs(3, 64) + 0.5
    with torch.inference_mode():
        fitting = PatchCoreScorer(trunk, torch.empty(0, 1))
        memory = fitting.patch_features(normal).permute(0, 2, 3, 1).flatten(0, 2)
    scorer = PatchCoreScorer(trunk, memory.clone()).eval()
    with torch.inference_mode():
        expected_maps = scorer.anomaly_map(x)
        scorer.threshold.fill_(float(expected_maps.flatten().quantile(0.9)))
        expected = scorer(x)
    engine = _served(scorer, CpuPlan(("fp32",)), x[0])
    assert engine.engine_name() == "openvino-fp32"
    maps = engine.run_stem(engine.prepare(x))
    assert torch.allclose(maps, expected_maps, rtol=1e-3, atol=1e-3)
    got = engine.run(engine.prepare(x))
    assert torch.allclose(got[:, 0], expected[:, 0], rtol=1e-3, atol=1e-3)
    # the same peak and region wherever the peak is clear of the next cell by more than rounding
    top2 = expected_maps.flatten(1).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3 * top2[:, 0]
    assert bool(clear.any()) and torch.equal(got[clear, 1:], expected[clear, 1:])


def _card(precision: str | None = "int8") -> ModelCard:
    spec = ImageInputSpec(height=SIZE, width=SIZE, channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    return ModelCard(
        name="tiles",
        version="1",
        task="defect_classification",
        architecture="small_cnn",
        input=spec,
        labels=["ok", "crack", "spot"],
        output="logits",
        cpu_engine=CpuEngineSpec(precision=precision) if precision else None,  # type: ignore[arg-type]
        created_at=datetime.now(UTC),
    )


def _pixels(count: int = 4) -> torch.Tensor:
    return torch.randint(
        0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )


def test_the_check_images_are_kept_hashed_and_verified(tmp_path: Path) -> None:
    folder = save_model(tmp_path, _card(), SmallCnn(3), _pixels())
    loaded = load_model(tmp_path, "tiles")
    assert loaded.checks is not None and torch.equal(loaded.checks, _pixels())
    assert loaded.card.cpu_engine is not None and loaded.card.cpu_engine.checks_sha256
    (folder / "checks.safetensors").write_bytes((folder / "checks.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="check images of tiles/1 do not match the card's sha256"):
        load_model(tmp_path, "tiles")
    (folder / "checks.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="check images of tiles/1"):
        load_model(tmp_path, "tiles")


def test_a_cpu_engine_card_needs_check_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs check images"):
        save_model(tmp_path, _card(), SmallCnn(3))
    with pytest.raises(ValueError, match="needs check images"):
        save_model(tmp_path, _card(), SmallCnn(3), _pixels().float())


def test_the_engine_setting_and_the_card_make_the_plan(tmp_path: Path) -> None:
    save_model(tmp_path, _card("int8"), SmallCnn(3), _pixels())
    model = load_model(tmp_path, "tiles")
    plan = cpu_plan(model)
    assert plan is not None and plan.precisions == ("int8", "fp32") and plan.checks is not None
    assert plan.checks.dtype == torch.float32 and plan.checks.shape == (4, 3, SIZE, SIZE)
    assert torch.allclose(plan.checks, (_pixels().float() / 255 - 0.5) / 0.25, atol=1e-5)
    assert cpu_plan(model, "torch") is None
    plain = LoadedModel(_card(None), model.module, model.path)
    assert cpu_plan(plain) is None  # auto: only cards that ask for it
    forced = cpu_plan(plain, "openvino")
    assert forced is not None and forced.precisions == ("fp32",) and forced.checks is None


def test_check_images_cover_every_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 1)
    pixels = (
        torch.arange(len(labels), dtype=torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    )
    chosen = check_images(pixels, labels, seed=0, count=8)
    kept = chosen[:, 0, 0, 0].long()
    assert len(chosen) == 8 and set(labels[kept].tolist()) == {0, 1, 2}
    assert torch.equal(check_images(pixels, labels, seed=0, count=8), chosen)  # seeded
    assert len(check_images(pixels[:3], labels[:3], seed=0, count=8)) == 3
