"""Argument types of the command line: a value that does not parse is a usage error (exit 2,
argparse's message) before the command runs."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any


def moment(text: str) -> datetime:
    """An ISO 8601 time given on the command line (``Z`` for UTC accepted); a usage error else."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def at_least_one(text: str) -> int:
    """A count of at least one; a usage error else."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least one, not {count}")
    return count


def pipeline_names(text: str) -> list[str]:
    """Comma-separated pipeline kinds, each one Vigil knows; a usage error else."""
    from consumers.pipelines import pipeline_kinds

    names = [name.strip() for name in text.split(",") if name.strip()]
    kinds = pipeline_kinds()
    unknown = [name for name in names if name not in kinds]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'none'}: choose from {', '.join(kinds)}")
    return names


READ_VERSION = "model version (default: the production alias, else the newest)"
WRITE_VERSION = "model version to write"


def add_model_version(parser: argparse.ArgumentParser, help_text: str = READ_VERSION, **options: Any) -> None:
    """A command's ``--model-version`` (``--version`` still accepted there; the program's own
    ``--version`` is ``vigil --version``), into ``args.version``."""
    parser.add_argument("--model-version", "--version", dest="version", help=help_text, **options)


def add_registry(parser: argparse.ArgumentParser, default: str) -> None:
    """A command's ``--registry``: a folder instead of ``default`` (said in its help)."""
    parser.add_argument("--registry", default=None, help=f"registry folder (default: {default})")
