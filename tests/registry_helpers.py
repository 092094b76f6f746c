"""Registry entries for tests of aliases and reloads: copies of a trained entry under new versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.registry import CARD_FILE, entry_folder


def copy_entry(source: Path, target: Path, name: str, version: str, *, from_version: str = "1") -> Path:
    """``name`` ``from_version`` of registry ``source`` as ``name`` ``version`` of ``target``."""
    folder = target / name / version
    shutil.copytree(entry_folder(source, name, from_version), folder)
    card = json.loads((folder / CARD_FILE).read_text())
    (folder / CARD_FILE).write_text(json.dumps({**card, "version": version}))
    return folder


def corrupt_weights(folder: Path) -> None:
    """Change an entry's weights behind its card's back (the sha256 check must refuse them)."""
    card = json.loads((folder / CARD_FILE).read_text())
    weights = folder / card["weights_file"]
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
