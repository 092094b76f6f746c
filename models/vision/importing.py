"""Bringing your own vision model into the registry: a ``.pt``/``.pth`` state dict or a
TorchScript file, with its labels, input size and normalisation.

A state dict is matched against the layouts Vigil knows (trying each, strictly, unless the
architecture is named) and stored as safetensors; the common transfer-learning layout
``backbone.*`` + ``fc.*`` maps onto Vigil's ResNet-50 with a linear head. A TorchScript file
is stored as it is. Either way a forward pass checks the output width against the labels,
the output is recorded as logits or probabilities (served scores are always probabilities),
the card is written, and the entry is loaded back and must score like the file did.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from models.registry import load_model, save_model
from models.vision.architectures import SIMPLE_ARCHITECTURES, build_classifier
from models.vision.dataset import image_folder, load_batch
from models.vision.evaluation import ClassificationReport
from schemas.model_card import ImageInputSpec, ModelCard, TrainingSummary

Output = Literal["logits", "probabilities"]

# Key renames of known foreign layouts onto Vigil's modules, by architecture.
_LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "resnet50_linear_head": [(r"^fc\.", "head."), (r"^module\.", "")],
}


class ImportRefused(ValueError):
    """The file and what was said about it do not make a servable model."""


@dataclass(frozen=True)
class ImportRequest:
    """What the user says about the model being imported."""

    source: Path
    name: str
    version: str
    labels: list[str]
    spec: ImageInputSpec
    normal_label: str | None = None
    architecture: str | None = None
    output: Output | None = None
    check_data: Path | None = None


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` or ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth`` state dict (also inside a ``state_dict`` or ``model`` key);
    loaded with ``weights_only``, so a pickle cannot run code."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ImportRefused(f"{path} is neither TorchScript nor a state dict of tensors")
    return dict(loaded)


def _renamed(state: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _LAYOUTS.get(architecture, []):
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def fit_state_dict(
    state: dict[str, torch.Tensor], num_classes: int, architecture: str | None
) -> tuple[str, nn.Module]:
    """The architecture the state dict loads into strictly, and the loaded module (logits).

    With ``architecture`` only that one is tried, and a misfit names the missing and
    unexpected keys; otherwise every known layout is tried in turn.
    """
    candidates = [architecture] if architecture else list(SIMPLE_ARCHITECTURES)
    misfits = []
    for candidate in candidates:
        model = build_classifier(candidate, num_classes)
        renamed = _renamed(state, candidate)
        own = model.state_dict()
        missing = [k for k in own if k not in renamed]
        unexpected = [k for k in renamed if k not in own]
        mismatched = [
            f"{k} {tuple(v.shape)}" for k, v in renamed.items() if k in own and own[k].shape != v.shape
        ]
        if not missing and not unexpected and not mismatched:
            model.load_state_dict(renamed)
            return candidate, model.eval()
        misfits.append(
            f"{candidate}: missing {missing[:4]}, unexpected {unexpected[:4]}"
            + (f", wrong shape {mismatched[:4]}" if mismatched else "")
        )
    raise ImportRefused(
        "the state dict fits no known layout with "
        f"{num_classes} classes ({'; '.join(misfits) if architecture else misfits[0] + '; ...'}). "
        "Name the architecture with --architecture, or export the model with torch.jit.script"
    )


def detect_output(outputs: torch.Tensor) -> Output:
    """Probabilities when every row is non-negative and sums to one; logits otherwise."""
    rows_sum_to_one = torch.allclose(outputs.sum(dim=1), torch.ones(len(outputs)), atol=1e-3)
    return "probabilities" if rows_sum_to_one and bool((outputs >= 0).all()) else "logits"


def _probe_inputs(spec: ImageInputSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, spec.channels, spec.height, spec.width, generator=generator)


def import_model(request: ImportRequest, registry: str | Path) -> tuple[ModelCard, list[str]]:
    """Import ``request.source`` into ``registry``; returns the card and notes for the user."""
    source = request.source
    if not source.is_file():
        raise ImportRefused(f"{source} does not exist")
    notes: list[str] = []
    scripted = is_torchscript(source)
    if scripted:
        module: nn.Module = torch.jit.load(str(source), map_location="cpu").eval()
        architecture = "torchscript"
    else:
        architecture, module = fit_state_dict(
            read_state_dict(source), len(request.labels), request.architecture
        )
        notes.append(f"state dict fits {architecture}; stored as safetensors")
    inputs = _probe_inputs(request.spec)
    try:
        with torch.inference_mode():
            outputs = module(inputs).float()
    except Exception as error:
        raise ImportRefused(
            f"a forward pass at {request.spec.height}x{request.spec.width}x{request.spec.channels} failed: {error}"
        ) from error
    if outputs.dim() != 2 or outputs.shape[1] != len(request.labels):
        raise ImportRefused(
            f"the model emits shape {tuple(outputs.shape)} for 4 images; {len(request.labels)} labels "
            f"need (4, {len(request.labels)})"
        )
    detected = detect_output(outputs) if scripted else "logits"
    if request.output is not None and request.output != detected:
        raise ImportRefused(
            f"said to emit {request.output}, but its outputs look like {detected} "
            f"(row sums {outputs.sum(dim=1).tolist()})"
        )
    notes.append(f"emits {detected}; served scores are probabilities")
    normal = request.normal_label
    if normal is not None and normal not in request.labels:
        raise ImportRefused(f"normal label {normal!r} is not among the labels {request.labels}")
    card = ModelCard(
        name=request.name,
        version=request.version,
        task="defect_classification",
        architecture=architecture,
        input=request.spec,
        labels=request.labels,
        normal_label=normal,
        thresholds={label: 0.5 for label in request.labels if label != normal},
        output=detected,
        weights_file="model.pt" if scripted else "weights.safetensors",
        training=TrainingSummary(dataset="", samples=0, notes=f"imported from {source.name}"),
        created_at=datetime.now(UTC),
    )
    save_model(registry, card, module)
    loaded = load_model(registry, request.name, request.version)
    _check_round_trip(module, loaded.module, inputs, detected)
    if request.check_data is not None:
        notes.append(check_labels(loaded.module, loaded.card, request.check_data))
    return loaded.card, notes


def _check_round_trip(original: nn.Module, served: nn.Module, inputs: torch.Tensor, output: Output) -> None:
    with torch.inference_mode():
        expected = original(inputs).float()
        if output == "logits":
            expected = expected.softmax(dim=1)
        actual = served(inputs).float()
    if not torch.allclose(expected, actual, atol=1e-5, rtol=1e-4):
        raise ImportRefused("the stored entry does not score like the imported file (please report this)")


def check_labels(module: Callable[[torch.Tensor], torch.Tensor], card: ModelCard, data: Path) -> str:
    """Score labelled images (one folder per label) with the card's preprocessing; refuse when
    the labels look out of order (most images of some class predicted as one other class)."""
    assert isinstance(card.input, ImageInputSpec)
    labels, items = image_folder(data, card.labels)
    with torch.inference_mode():
        predicted = torch.cat(
            [
                module(load_batch(items[k : k + 32], card.input)[0]).argmax(dim=1)
                for k in range(0, len(items), 32)
            ]
        )
    report = ClassificationReport.of(labels, torch.tensor([i.label for i in items]), predicted)
    swapped = [
        (labels[k], labels[int(row.argmax())])
        for k, row in enumerate(report.confusion)
        if row.sum() > 0 and int(row.argmax()) != k and row.max() > 0.5 * row.sum()
    ]
    if swapped:
        raise ImportRefused(
            f"on {data}, most images of {', '.join(f'{a!r} are predicted {b!r}' for a, b in swapped)}: "
            "check the label order, the normalisation and the input size"
        )
    return f"on {data}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f} with the card's preprocessing"
