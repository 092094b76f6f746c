"""Image bytes → the model's input tensor, exactly as the model card's input spec says.

Steps (the same on CPU and GPU): decode (grayscale or RGB by ``channels``), crop the
region of interest, resize (antialiased bilinear) on uint8, scale to [0, 1], normalise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as F

from schemas.model_card import ImageInputSpec

Roi = tuple[int, int, int, int]
"""x, y, width, height in pixels."""


class CorruptImageError(ValueError):
    """The bytes are not a decodable JPEG or PNG."""


class RoiOutsideImageError(ValueError):
    """The region of interest does not fit the image."""


def _mode(spec: ImageInputSpec) -> ImageReadMode:
    return ImageReadMode.GRAY if spec.channels == 1 else ImageReadMode.RGB


def decode(data: bytes, spec: ImageInputSpec) -> torch.Tensor:
    """Decode JPEG/PNG bytes to a uint8 (C, H, W) tensor on the CPU."""
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=_mode(spec))
    except RuntimeError as error:
        raise CorruptImageError(f"cannot decode image ({len(data)} bytes): {error}") from error


def crop(image: torch.Tensor, roi: Roi | None) -> torch.Tensor:
    """The region of interest of ``image`` (the whole image when ``roi`` is None)."""
    if roi is None:
        return image
    x, y, width, height = roi
    _, full_h, full_w = image.shape
    if x + width > full_w or y + height > full_h:
        raise RoiOutsideImageError(f"roi {roi} does not fit a {full_w}x{full_h} image")
    return image[:, y : y + height, x : x + width]


def to_model_input(image: torch.Tensor, spec: ImageInputSpec) -> torch.Tensor:
    """Resize, scale and normalise a uint8 (C, H, W) image to a float32 (C, H, W) tensor."""
    if spec.resize == "stretch":
        image = F.resize(image, [spec.height, spec.width], antialias=True)
    else:
        image = F.resize(image, min(spec.height, spec.width), antialias=True)
        image = F.center_crop(image, [spec.height, spec.width])
    scaled = F.to_dtype(image, torch.float32, scale=True)
    return F.normalize(scaled, mean=list(spec.mean), std=list(spec.std))


def preprocess(data: bytes, spec: ImageInputSpec, roi: Roi | None = None) -> torch.Tensor:
    """Bytes to model input on the CPU."""
    return to_model_input(crop(decode(data, spec), roi), spec)


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG file."""
    return data[:3] == b"\xff\xd8\xff"


def preprocess_on_device(
    images: Sequence[bytes], spec: ImageInputSpec, rois: Sequence[Roi | None], device: torch.device
) -> list[torch.Tensor | Exception]:
    """Batched GPU decode of JPEGs (nvJPEG), other formats on the CPU; then the same steps on ``device``."""
    decoded: list[torch.Tensor | Exception] = [CorruptImageError("not decoded")] * len(images)
    jpegs = [i for i, data in enumerate(images) if is_jpeg(data)]
    if jpegs:
        try:
            tensors = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in jpegs]
            for i, image in zip(jpegs, decode_jpeg(tensors, mode=_mode(spec), device=device), strict=True):
                decoded[i] = image
        except RuntimeError:  # one bad JPEG fails the batched call: decode them one by one
            for i in jpegs:
                decoded[i] = _decode_one(images[i], spec, device)
    for i, data in enumerate(images):
        if not is_jpeg(data):
            decoded[i] = _decode_one(data, spec, device)
    results: list[torch.Tensor | Exception] = []
    for image, roi in zip(decoded, rois, strict=True):
        if isinstance(image, Exception):
            results.append(image)
            continue
        try:
            results.append(to_model_input(crop(image, roi), spec))
        except RoiOutsideImageError as error:
            results.append(error)
    return results


def _decode_one(data: bytes, spec: ImageInputSpec, device: torch.device) -> torch.Tensor | Exception:
    try:
        return decode(data, spec).to(device)
    except CorruptImageError as error:
        return error
