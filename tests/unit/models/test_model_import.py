"""Bringing your own model: layouts, logits or probabilities, width and label-order checks, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from consumers.ops.cli import EXIT_DATA, main
from models.registry import load_model
from models.vision.architectures import SmallCnn
from models.vision.importing import ImportRefused, ImportRequest, import_model
from schemas.model_card import ImageInputSpec
from tests.vision_fixtures import VisionModels

LABELS = ["ok", "crack", "spot", "scratch"]
SPEC = ImageInputSpec(
    height=64, width=64, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], resize="letterbox"
)


def seed_checkpoint(path: Path, classes: int = 4) -> nn.Module:
    """The seed article's layout: a torchvision ResNet-50 as ``backbone.*`` and ``fc.*``."""
    torch.manual_seed(0)
    trunk = tvm.resnet50(weights=None)
    trunk.fc = nn.Identity()  # type: ignore[assignment]
    fc = nn.Linear(2048, classes)
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    torch.save(state | {f"fc.{k}": v for k, v in fc.state_dict().items()}, path)
    return nn.Sequential(trunk, fc).eval()


def test_seed_layout_state_dict_becomes_a_resnet50_with_linear_head(tmp_path: Path) -> None:
    original = seed_checkpoint(tmp_path / "model.pth")
    card, notes = import_model(
        ImportRequest(tmp_path / "model.pth", "seed", "1", LABELS, SPEC, "ok"), tmp_path / "reg"
    )
    assert card.architecture == "resnet50_linear_head" and card.output == "logits"
    assert (
        card.weights_file == "weights.safetensors" and (tmp_path / "reg/seed/1/weights.safetensors").is_file()
    )
    assert set(card.thresholds) == {"crack", "spot", "scratch"}
    served = load_model(tmp_path / "reg", "seed").module
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(served(x), original(x).softmax(dim=1))
    assert any("resnet50_linear_head" in note for note in notes)


def test_output_width_must_match_the_labels(tmp_path: Path) -> None:
    seed_checkpoint(tmp_path / "model.pth", classes=4)
    with pytest.raises(ImportRefused, match="fits no known layout"):
        import_model(ImportRequest(tmp_path / "model.pth", "seed", "1", LABELS[:3], SPEC), tmp_path / "reg")
    scripted = torch.jit.script(SmallCnn(5).eval())
    scripted.save(str(tmp_path / "five.pt"))
    with pytest.raises(ImportRefused, match=r"\(4, 4\)"):
        import_model(ImportRequest(tmp_path / "five.pt", "five", "1", LABELS, SPEC), tmp_path / "reg")


def test_a_named_architecture_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "odd.pt")
    with pytest.raises(ImportRefused, match=r"missing .*unexpected \['conv.weight'\]"):
        import_model(
            ImportRequest(tmp_path / "odd.pt", "odd", "1", LABELS, SPEC, architecture="resnet18"),
            tmp_path / "reg",
        )


class _Probabilities(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCnn(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(dim=1)


def test_torchscript_logits_are_served_as_probabilities_and_probabilities_as_they_are(tmp_path: Path) -> None:
    torch.manual_seed(1)
    logits_model = torch.jit.script(SmallCnn(4).eval())
    logits_model.save(str(tmp_path / "logits.pt"))
    prob_model = torch.jit.script(_Probabilities().eval())
    prob_model.save(str(tmp_path / "probs.pt"))
    registry = tmp_path / "reg"
    logits_card, _ = import_model(ImportRequest(tmp_path / "logits.pt", "lg", "1", LABELS, SPEC), registry)
    probs_card, _ = import_model(ImportRequest(tmp_path / "probs.pt", "pr", "1", LABELS, SPEC), registry)
    assert (logits_card.output, probs_card.output) == ("logits", "probabilities")
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(load_model(registry, "lg").module(x), logits_model(x).softmax(dim=1))
        torch.testing.assert_close(load_model(registry, "pr").module(x), prob_model(x))
    with pytest.raises(ImportRefused, match="look like logits"):
        import_model(
            ImportRequest(tmp_path / "logits.pt", "lg", "2", LABELS, SPEC, output="probabilities"), registry
        )


def test_labels_in_the_wrong_order_are_caught_on_labelled_images(
    tmp_path: Path, vision_models: VisionModels
) -> None:
    trained = load_model(vision_models.registry, vision_models.classifier)
    spec = trained.card.input
    assert isinstance(spec, ImageInputSpec)
    # the trained classifier exported by its owner as TorchScript (probabilities)
    traced = torch.jit.trace(trained.module, torch.randn(1, 3, spec.height, spec.width))
    traced.save(str(tmp_path / "tiles.pt"))
    good = ImportRequest(
        tmp_path / "tiles.pt", "tiles", "1", trained.card.labels, spec, "ok", check_data=vision_models.images
    )
    _, notes = import_model(good, tmp_path / "reg")
    assert any("accuracy" in note for note in notes)
    swapped = [trained.card.labels[1], trained.card.labels[0], *trained.card.labels[2:]]
    with pytest.raises(ImportRefused, match="label order"):
        import_model(
            ImportRequest(
                tmp_path / "tiles.pt", "tiles", "2", swapped, spec, "ok", check_data=vision_models.images
            ),
            tmp_path / "reg",
        )


def test_cli_imports_lists_and_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.ops import model_commands

    monkeypatch.setattr(model_commands.console, "width", 200)
    seed_checkpoint(tmp_path / "model.pth")
    registry = str(tmp_path / "reg")
    argv = ["models", "import", str(tmp_path / "model.pth"), "--name", "seed", "--labels", ",".join(LABELS)]
    assert main([*argv, "--normal-label", "ok", "--size", "64", "--registry", registry]) == 0
    assert "resnet50_linear_head" in capsys.readouterr().out
    assert main(["models", "list", "--registry", registry]) == 0
    listed = capsys.readouterr().out
    assert "seed" in listed and "defect_classification" in listed
    assert main(["models", "show", "seed", "--registry", registry]) == 0
    shown = capsys.readouterr().out
    assert '"output": "logits"' in shown and "sha256 matches the card" in shown
    weights = tmp_path / "reg/seed/1/weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["models", "show", "seed", "--registry", registry]) == 1
    capsys.readouterr()
    again = [*argv, "--size", "64", "--normalisation", "0.5/0.5", "--registry", registry]
    assert main(again) == EXIT_DATA  # refused: the registry holds that version already
    assert "error" in capsys.readouterr().err
