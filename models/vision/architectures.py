"""Vision architectures by name. Weights always come from local files; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn

from models.vision.backbones import FeatureTrunk
from schemas.model_card import BackboneInfo

TORCHVISION_CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "mobilenet_v3_small": tvm.mobilenet_v3_small,
    "mobilenet_v3_large": tvm.mobilenet_v3_large,
    "efficientnet_b0": tvm.efficientnet_b0,
}


class BackboneWithLinearHead(nn.Module):
    """The common transfer-learning classifier: a ResNet-50 trunk and a new linear head.

    State-dict keys are ``backbone.*`` (torchvision ResNet-50 without ``fc``) and ``head.*``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        trunk = tvm.resnet50(weights=None)
        features = trunk.fc.in_features
        trunk.fc = nn.Identity()
        self.backbone = trunk
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class SmallCnn(nn.Module):
    """A four-stage CNN that trains in seconds on a CPU: the demo's and the tests' classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 24) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out in (width, width * 2, width * 4, width * 4):
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax(dim=(2, 3)))


class BackboneClassifier(nn.Module):
    """Logits from a pretrained trunk's top feature map (stride 32), average- and max-pooled (a
    small defect moves the maximum where it barely moves the mean), standardised with the
    training set's statistics, then one linear layer."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, trunk: FeatureTrunk, num_classes: int) -> None:
        super().__init__()
        if trunk.levels != (5,):
            raise ValueError(f"a backbone classifier reads the top level (5) only, not {trunk.levels}")
        self.trunk = trunk
        width = 2 * trunk.channels[-1]
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.head = nn.Linear(width, num_classes)

    def pooled(self, top: torch.Tensor) -> torch.Tensor:
        """(N, width) standardised features of the top feature map."""
        features = torch.cat([top.mean(dim=(2, 3)), top.amax(dim=(2, 3))], dim=1).float()
        return (features - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.trunk(x)[-1]))


BACKBONE_LINEAR = "backbone_linear"
SIMPLE_ARCHITECTURES = ("small_cnn", "resnet50_linear_head", *TORCHVISION_CLASSIFIERS)


def build_classifier(
    architecture: str, num_classes: int, backbone_info: BackboneInfo | None = None
) -> nn.Module:
    """An untrained classifier (logits) of ``architecture`` with ``num_classes`` outputs.

    ``backbone_linear`` needs ``backbone_info`` (which backbone and feature levels).
    """
    if architecture == BACKBONE_LINEAR:
        if backbone_info is None:
            raise ValueError("a backbone_linear classifier needs the card's backbone section")
        return BackboneClassifier(FeatureTrunk(backbone_info.name, tuple(backbone_info.levels)), num_classes)
    if architecture == "resnet50_linear_head":
        return BackboneWithLinearHead(num_classes)
    if architecture == "small_cnn":
        return SmallCnn(num_classes)
    if architecture not in TORCHVISION_CLASSIFIERS:
        known = ", ".join([BACKBONE_LINEAR, *SIMPLE_ARCHITECTURES])
        raise ValueError(f"unknown architecture {architecture!r}; known: {known}")
    return TORCHVISION_CLASSIFIERS[architecture](weights=None, num_classes=num_classes)
