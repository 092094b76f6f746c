"""Vision architectures by name. Weights always come from local files; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn

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
        trunk.fc = nn.Identity()  # type: ignore[assignment]
        self.backbone = trunk
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Softmax(nn.Module):
    """Wraps a logits model so the served output is class probabilities."""

    def __init__(self, logits_model: nn.Module) -> None:
        super().__init__()
        self.model = logits_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)


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


def build_classifier(architecture: str, num_classes: int) -> nn.Module:
    """An untrained classifier (logits) of ``architecture`` with ``num_classes`` outputs."""
    if architecture == "resnet50_linear_head":
        return BackboneWithLinearHead(num_classes)
    if architecture == "small_cnn":
        return SmallCnn(num_classes)
    if architecture not in TORCHVISION_CLASSIFIERS:
        known = ", ".join([*TORCHVISION_CLASSIFIERS, "resnet50_linear_head", "small_cnn"])
        raise ValueError(f"unknown architecture {architecture!r}; known: {known}")
    return TORCHVISION_CLASSIFIERS[architecture](weights=None, num_classes=num_classes)


def feature_trunk(architecture: str) -> nn.Module:
    """The convolutional trunk of a ResNet, returning layer2 and layer3 feature maps."""
    if architecture not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"anomaly scoring supports resnet18/34/50 trunks, not {architecture!r}")
    return ResNetFeatures(TORCHVISION_CLASSIFIERS[architecture](weights=None))


class ResNetFeatures(nn.Module):
    """Mid-level ResNet features (layer2, and layer3 upsampled to layer2's grid), concatenated."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)  # type: ignore[arg-type]
        self.layer1: nn.Module = resnet.layer1  # type: ignore[assignment]
        self.layer2: nn.Module = resnet.layer2  # type: ignore[assignment]
        self.layer3: nn.Module = resnet.layer3  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.layer2(self.layer1(self.stem(x)))
        f3 = self.layer3(f2)
        f3 = nn.functional.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([f2, f3], dim=1)
