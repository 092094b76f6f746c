"""Training commands whose flags are the fields of a config dataclass: the defaults come from
the dataclass, and the config is built back from the flags of the same names, so the CLI and
the Python API train the same model."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def field_defaults(config: type) -> dict[str, Any]:
    """Each field's default, by name."""
    return {f.name: f.default for f in dataclasses.fields(config)}


def config_from(config: type[T], args: argparse.Namespace, **values: Any) -> T:
    """``config`` from the arguments of the same names, and ``values`` for the rest."""
    named = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return config(**(named | values))


def field_options(
    p: argparse.ArgumentParser, config: type, options: list[tuple[str, type, str]], **choices: list[str]
) -> None:
    """One ``--field-name`` flag per (field, type, help), its default the field's; ``choices``
    by field name."""
    defaults = field_defaults(config)
    for name, kind, text in options:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=defaults[name],
            choices=choices.get(name),
            help=text or None,
        )
