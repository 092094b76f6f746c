"""The model registry: one folder per model version, ``<root>/<name>/<version>/``.

Each folder holds ``card.json`` (a ``schemas.ModelCard``) and the weights named by the card:
``safetensors`` for the architectures Vigil builds, or a TorchScript file
(``architecture: torchscript``). The card records the weights' sha256, checked on load. A card
with a ``cpu_engine`` section also names its check images (uint8 pixels, safetensors, hashed
the same way): what an OpenVINO graph of the model is calibrated and checked on.
Nothing is ever downloaded.

Aliases (``production``, ``staging``, any name that is not a version) name a version of a
model; they live in ``<root>/<name>/aliases.json``, replaced whole on each promotion so a
reader never sees half a file. Wherever a version is asked for, an alias may stand; no
version at all means the ``production`` alias when the model has one, else the newest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from schemas.common import ModelRef
from schemas.model_card import ModelCard

CARD_FILE = "card.json"
ALIASES_FILE = "aliases.json"
DEFAULT_ALIAS = "production"

ModuleBuilder = Callable[[ModelCard, dict[str, torch.Tensor]], nn.Module]
_BUILDERS: dict[str, ModuleBuilder] = {}
BUILDER_ENTRY_POINTS = "vigil.model_builders"


def _discover_builders() -> None:
    """Import every ``models/<family>/serving.py`` and ``vigil.model_builders`` entry point: each
    registers the builders of its tasks. Done on first need, so whoever calls ``load_model``
    can load any entry without importing them first."""
    for serving in sorted(Path(__file__).parent.glob("*/serving.py")):
        importlib.import_module(f"{__package__}.{serving.parent.name}.serving")
    for point in entry_points(group=BUILDER_ENTRY_POINTS):
        point.load()


def known_tasks() -> list[str]:
    """Every task a builder is registered for."""
    _discover_builders()
    return sorted(_BUILDERS)


class ProbabilitiesFromLogits(nn.Module):
    """Serves a logits model as class probabilities (softmax over the last dimension)."""

    def __init__(self, logits_model: nn.Module) -> None:
        super().__init__()
        self.model = logits_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=-1)


def register_builder(task: str, builder: ModuleBuilder) -> None:
    """Teach the registry to build serving modules for ``task`` from a state dict."""
    _BUILDERS[task] = builder


@dataclass(frozen=True)
class LoadedModel:
    """A registry entry ready to serve: its card and its module (outputs align with card labels)."""

    card: ModelCard
    module: nn.Module
    path: Path
    checks: torch.Tensor | None = None
    """The card's check images as uint8 pixels (N, C, H, W), where it has a ``cpu_engine``."""

    @property
    def weights_sha256(self) -> str:
        """The verified hash of the weights file."""
        assert self.card.weights_sha256 is not None
        return self.card.weights_sha256

    @property
    def ref(self) -> ModelRef:
        """How results and alerts name this model: name, version and weights hash."""
        return ModelRef(name=self.card.name, version=self.card.version, weights_sha256=self.weights_sha256)


ModelLoader = Callable[[str, str | None], LoadedModel]
"""Loads a model by name and version or alias (see ``resolve_version``)."""


def registry_loader(root: str | Path) -> ModelLoader:
    """A ``ModelLoader`` reading the registry at ``root``."""
    return lambda name, version: load_model(root, name, version)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    root: str | Path, card: ModelCard, module: nn.Module, checks: torch.Tensor | None = None
) -> Path:
    """Write ``module``'s weights and its card as ``<root>/<name>/<version>``; return the folder.
    A card with a ``cpu_engine`` section needs ``checks``: uint8 pixels (N, C, H, W)."""
    folder = _inside(root, card.name, card.version)
    if card.version in aliases(root, card.name):
        raise ValueError(f"{card.version!r} is an alias of {card.name!r}: a version must not be one")
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / card.weights_file
    if card.architecture == "torchscript":
        torch.jit.save(torch.jit.script(module), str(weights))
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(weights))
    final = card.model_copy(update={"weights_sha256": file_sha256(weights)})
    if card.cpu_engine is not None:
        if checks is None or checks.dtype != torch.uint8 or checks.dim() != 4 or not len(checks):
            raise ValueError("a card with a cpu_engine section needs check images: uint8 pixels (N, C, H, W)")
        path = folder / card.cpu_engine.checks_file
        save_file({"pixels": checks.contiguous().cpu()}, str(path))
        engine = card.cpu_engine.model_copy(update={"checks_sha256": file_sha256(path)})
        final = final.model_copy(update={"cpu_engine": engine})
    (folder / CARD_FILE).write_text(final.model_dump_json(indent=2))
    return folder


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _inside(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, refused unless every part is a plain name and the resolved folder stays
    inside the resolved root (a symlinked entry that leads out of the registry is refused too)."""
    base = Path(root).expanduser()
    for part in parts:
        if not _NAME.match(part) or ".." in part:
            raise ValueError(f"{part!r} is not a model name or version (letters, digits, '.', '_', '-')")
    folder = base.joinpath(*parts)
    if not folder.resolve().is_relative_to(base.resolve()):
        raise ValueError(f"registry entry {'/'.join(parts)} resolves outside the registry at {base}")
    return folder


def versions(root: str | Path, name: str) -> list[str]:
    """The versions of ``name`` in the registry, oldest first (numeric parts compare as numbers)."""
    folder = _inside(root, name)
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if (p / CARD_FILE).is_file()]
    return sorted(found, key=lambda v: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", v)])


def list_entries(root: str | Path) -> list[ModelCard]:
    """The card of every version of every model in the registry, by name then version."""
    base = Path(root).expanduser()
    if not base.is_dir():
        return []
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name))
    return [read_card(root, name, version) for name in names for version in versions(root, name)]


def aliases(root: str | Path, name: str) -> dict[str, str]:
    """The aliases of ``name`` and the versions they name."""
    path = _inside(root, name) / ALIASES_FILE
    if not path.is_file():
        return {}
    found = json.loads(path.read_text())
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ValueError(f"{path} is not a JSON object of alias to version")
    return found


def promote(root: str | Path, name: str, version: str, alias: str = DEFAULT_ALIAS) -> str | None:
    """Point ``alias`` of ``name`` at ``version`` (which must exist); the version it named before."""
    available = versions(root, name)
    if version not in available:
        raise FileNotFoundError(
            f"model {name!r} has no version {version!r}; available: {', '.join(available) or 'none'}"
        )
    _inside(root, name, alias)  # an alias is a plain name too
    if alias in available:
        raise ValueError(f"{alias!r} is a version of {name!r}: an alias must not be one")
    current = aliases(root, name)
    before = current.get(alias)
    current[alias] = version
    folder = _inside(root, name)
    staged = folder / f".{ALIASES_FILE}.{os.getpid()}"
    staged.write_text(json.dumps(current, indent=2, sort_keys=True))
    os.replace(staged, folder / ALIASES_FILE)
    return before


def resolve_version(root: str | Path, name: str, version: str | None = None) -> str:
    """The version ``version`` names: itself, the version of an alias, or (None) the
    ``production`` alias's version when set, else the newest."""
    available = versions(root, name)
    if not available:
        raise FileNotFoundError(
            f"model {name!r} is not in the registry at {Path(root).expanduser()}: train one "
            "(vigil train vision|sensor ... --name NAME), import one (vigil models import), or run "
            "vigil demo once, which leaves demo-defects and demo-machines in the default registry"
        )
    named = aliases(root, name)
    chosen = named.get(version or DEFAULT_ALIAS, version or available[-1])
    if chosen not in available:
        raise FileNotFoundError(
            f"model {name!r} has no version {chosen!r}; available: {', '.join(available)}"
            + (f"; aliases: {', '.join(sorted(named))}" if named else "")
        )
    return chosen


def entry_folder(root: str | Path, name: str, version: str | None = None) -> Path:
    """The folder of ``name`` at ``version`` (a version or an alias; see ``resolve_version``)."""
    return _inside(root, name, resolve_version(root, name, version))


def read_card(root: str | Path, name: str, version: str | None = None) -> ModelCard:
    """The card of ``name`` at ``version`` (see ``resolve_version``), without loading the weights."""
    return ModelCard.model_validate_json((entry_folder(root, name, version) / CARD_FILE).read_text())


def load_model(root: str | Path, name: str, version: str | None = None) -> LoadedModel:
    """Load ``name`` at ``version`` (see ``resolve_version``); the weights hash must match the card."""
    folder = entry_folder(root, name, version)
    chosen = folder.name
    card = ModelCard.model_validate_json((folder / CARD_FILE).read_text())
    weights, digest = _verified_file(
        folder, card.weights_file, card.weights_sha256, f"weights of {name}/{chosen}"
    )
    card = card.model_copy(update={"weights_sha256": digest})
    checks = None
    if card.cpu_engine is not None:
        spec = card.cpu_engine
        found, _ = _verified_file(
            folder, spec.checks_file, spec.checks_sha256, f"check images of {name}/{chosen}"
        )
        checks = load_file(str(found)).get("pixels")
        if checks is None or checks.dtype != torch.uint8 or checks.dim() != 4:
            raise ValueError(
                f"check images of {name}/{chosen} are not uint8 pixels (N, C, H, W) named 'pixels'"
            )
    if card.architecture == "torchscript":
        module: nn.Module = torch.jit.load(str(weights), map_location="cpu")
        if card.output == "logits":
            module = ProbabilitiesFromLogits(module)
    else:
        if card.task not in _BUILDERS:
            _discover_builders()
        if card.task not in _BUILDERS:
            raise ValueError(f"no builder for task {card.task!r}; known: {', '.join(sorted(_BUILDERS))}")
        module = _BUILDERS[card.task](card, load_file(str(weights)))
    return LoadedModel(card, module.eval(), folder, checks)


def _verified_file(folder: Path, name: str, sha256: str | None, what: str) -> tuple[Path, str]:
    """``folder/name`` and its sha256, refused when it lies outside ``folder`` or does not hash
    to ``sha256``."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what}: file {name!r} lies outside its entry")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} is missing")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{what} do not match the card's sha256 (file changed?)")
    return path, digest
