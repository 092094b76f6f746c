"""Image folders: one sub-folder per class, JPEG or PNG files.

Every file is screened as serving screens a frame before it is used (``screen``): its header
must pass the same checks as ``vision.decode``'s defaults, and it must decode. A file that does
not is named with its reason in a warning and left out, and the run goes on; a summary says
how many were refused.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from models.vision.image_header import ImageRefused, check_header
from models.vision.preprocess import CorruptImageError, decode, decode_and_resize, preprocess
from schemas.model_card import ImageInputSpec
from schemas.settings import DecodeSettings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HOLDOUT_FILE = "holdout.txt"
OFFLINE_DECODING = DecodeSettings()
"""The header limits offline readers apply: serving's defaults (``vision.decode``)."""


@dataclass(frozen=True)
class LabelledImage:
    """An image file and the index of its class."""

    path: Path
    label: int


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder``; a PNG that shares its stem with a JPEG is that JPEG's mask and is skipped."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    jpeg_stems = {p.stem for p in files if p.suffix.lower() in (".jpg", ".jpeg")}
    return [p for p in files if not (p.suffix.lower() == ".png" and p.stem in jpeg_stems)]


def screen(path: Path, decoding: DecodeSettings = OFFLINE_DECODING) -> str | None:
    """Why the image at ``path`` cannot be used (None when it can): its header is refused as
    serving refuses it (before a native decoder sees a pixel), or it does not decode."""
    try:
        data = path.read_bytes()
        header = check_header(data, decoding.formats, decoding.max_pixels, decoding.max_pixels_per_byte)
        decode(data, ImageInputSpec(height=1, width=1, channels=3, mean=[0.0] * 3, std=[1.0] * 3), header)
    except ImageRefused as refusal:
        return f"{refusal.reason}: {refusal}"
    except CorruptImageError as error:
        return f"corrupt_image: {error}"
    except OSError as error:
        return f"unreadable: {error}"
    return None


def image_folder(root: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[LabelledImage]]:
    """Classes (sorted sub-folder names, or ``classes``) and every usable image with its label;
    refused files are named in warnings and left out (``screen``)."""
    base = Path(root)
    names = classes or sorted(p.name for p in base.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{base} has no class sub-folders")
    found = [LabelledImage(path, k) for k, name in enumerate(names) for path in list_images(base / name)]
    items = []
    for item in found:
        reason = screen(item.path)
        if reason is None:
            items.append(item)
        else:
            log.warning("refused %s: %s", item.path, reason)
    if len(items) < len(found):
        log.warning(
            "refused %d of %d image files under %s (named above); going on without them",
            len(found) - len(items),
            len(found),
            base,
        )
    if not items:
        raise ValueError(f"no usable JPEG or PNG images under {base}")
    return names, items


def split(
    items: list[LabelledImage], holdout: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """A stratified train / held-out split."""
    rng = random.Random(seed)
    train, held = [], []
    for label in sorted({i.label for i in items}):
        members = [i for i in items if i.label == label]
        rng.shuffle(members)
        cut = round(len(members) * holdout)
        held += members[:cut]
        train += members[cut:]
    return train, held


def load_batch(items: list[LabelledImage], spec: ImageInputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed images (N, C, H, W) and labels (N,)."""
    images = torch.stack([preprocess(i.path.read_bytes(), spec) for i in items])
    return images, torch.tensor([i.label for i in items])


def load_pixels(items: list[LabelledImage], spec: ImageInputSpec) -> torch.Tensor:
    """Decoded and resized uint8 images (N, C, H, W): a quarter of the float tensor's memory,
    for training sets that are normalised a batch at a time."""
    return torch.stack([decode_and_resize(i.path.read_bytes(), spec) for i in items])


def write_holdout(folder: Path, root: Path, items: list[LabelledImage]) -> None:
    """Record, in a registry entry's folder, which images of ``root`` it never trained on."""
    (folder / HOLDOUT_FILE).write_text("".join(f"{i.path.relative_to(root)}\n" for i in items))


def read_holdout(folder: Path) -> set[str]:
    """The hold-out images recorded by ``write_holdout`` (paths relative to the data folder)."""
    path = folder / HOLDOUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} records no hold-out images; evaluate with --split all")
    return set(path.read_text().splitlines())
