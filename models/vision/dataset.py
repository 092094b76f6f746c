"""Image folders: one sub-folder per class, JPEG or PNG files."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from models.vision.preprocess import decode_and_resize, preprocess
from schemas.model_card import ImageInputSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HOLDOUT_FILE = "holdout.txt"


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


def image_folder(root: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[LabelledImage]]:
    """Classes (sorted sub-folder names, or ``classes``) and every image with its label."""
    base = Path(root)
    names = classes or sorted(p.name for p in base.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{base} has no class sub-folders")
    items = [LabelledImage(path, k) for k, name in enumerate(names) for path in list_images(base / name)]
    if not items:
        raise ValueError(f"no JPEG or PNG images under {base}")
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
