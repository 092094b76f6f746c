"""``vigil models import | list | show | promote``: what is in the model registry, bringing your
own, and pointing an alias (``production``, ``staging``) at a version."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from consumers.ops.arguments import WRITE_VERSION, add_model_version, add_registry
from consumers.ops.output import console, show, show_document

NORMALISATIONS = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "lite": ([127 / 255] * 3, [128 / 255] * 3),
    "none": ([0.0] * 3, [1.0] * 3),
}


def add_model_commands(sub: Any, with_config: Callable[..., Any]) -> None:
    """Register ``vigil models``."""
    models = with_config(sub.add_parser("models", help="the model registry: import, list, show, promote"))
    actions = models.add_subparsers(dest="action", required=True)
    imp = with_config(actions.add_parser("import", help="a .pt/.pth state dict or a TorchScript file"))
    imp.add_argument("source", type=Path)
    imp.add_argument("--name", required=True, help="model name in the registry")
    add_model_version(imp, WRITE_VERSION, default="1")
    imp.add_argument("--labels", required=True, help="comma-separated, in the order of the model's outputs")
    imp.add_argument("--normal-label", default=None, help="the label that means no defect (no alert)")
    imp.add_argument("--size", default="224", help="input size: N or HxW")
    imp.add_argument("--channels", type=int, choices=[1, 3], default=3, help="image channels the model takes")
    imp.add_argument(
        "--normalisation",
        default="imagenet",
        help="imagenet, lite, none, or 'm1,m2,m3/s1,s2,s3' on [0, 1] pixels",
    )
    imp.add_argument(
        "--resize",
        choices=["stretch", "shorter_side_then_center_crop", "letterbox"],
        default="letterbox",
        help="how frames are brought to the model's input size",
    )
    imp.add_argument("--architecture", default=None, help="state dicts: the layout (default: try each)")
    imp.add_argument(
        "--model-output",
        choices=["logits", "probabilities"],
        default=None,
        help="default: detected from a forward pass",
    )
    imp.add_argument(
        "--check-data",
        type=Path,
        default=None,
        help="labelled images (a folder per label) to check label order",
    )
    add_registry(imp, "pipelines.vision.registry")
    imp.set_defaults(func=cmd_import)
    listing = with_config(actions.add_parser("list", help="every entry, newest version last"))
    add_registry(listing, "every pipeline's registry")
    listing.set_defaults(func=cmd_list)
    show = with_config(actions.add_parser("show", help="one entry's card, files and checks"))
    show.add_argument("name")
    add_model_version(show, default=None)
    add_registry(show, "the pipeline registry that holds the model")
    show.set_defaults(func=cmd_show)
    promote = with_config(
        actions.add_parser(
            "promote",
            help="point an alias at a version; pipelines bound to the alias switch without a restart",
        )
    )
    promote.add_argument("name", help="model name in the registry")
    promote.add_argument("version", help="the version the alias will name")
    promote.add_argument("--alias", default="production", help="the alias to move (default: production)")
    add_registry(promote, "the pipeline registry that holds the model")
    promote.set_defaults(func=cmd_promote)


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``256x512`` (height x width)."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise ValueError(f"size {text!r} is not N or HxW")


def parse_normalisation(text: str, channels: int) -> tuple[list[float], list[float]]:
    """A named normalisation or ``means/stds``, for ``channels`` channels."""
    if text in NORMALISATIONS:
        mean, std = NORMALISATIONS[text]
    else:
        try:
            means, stds = text.split("/")
            mean, std = [float(v) for v in means.split(",")], [float(v) for v in stds.split(",")]
        except ValueError:
            raise ValueError(
                f"normalisation {text!r}: use {', '.join(NORMALISATIONS)} or 'm,m,m/s,s,s'"
            ) from None
    if channels == 1:
        mean, std = mean[:1], std[:1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalisation {text!r} does not have {channels} means and stds")
    return mean, std


def cmd_import(args: argparse.Namespace) -> int:
    """Import a model and print what was found."""
    from consumers.ops.command_context import registry_for_task
    from models.vision.importing import ImportRequest, import_model
    from schemas.model_card import ImageInputSpec

    height, width = parse_size(args.size)
    mean, std = parse_normalisation(args.normalisation, args.channels)
    spec = ImageInputSpec(
        height=height, width=width, channels=args.channels, mean=mean, std=std, resize=args.resize
    )
    request = ImportRequest(
        source=args.source,
        name=args.name,
        version=args.version,
        labels=[label.strip() for label in args.labels.split(",") if label.strip()],
        spec=spec,
        normal_label=args.normal_label,
        architecture=args.architecture,
        output=args.model_output,
        check_data=args.check_data,
    )
    card, notes = import_model(request, registry_for_task(args, "defect_classification"))
    console.print(
        f"imported {card.name} {card.version} ({card.architecture}), weights sha256 {card.weights_sha256}"
    )
    for note in notes:
        console.print(f"  {note}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """One row per registry entry."""
    from consumers.ops.command_context import registries

    for registry in registries(args):
        show(_listing(registry))
    return 0


def _listing(registry: str) -> Table:
    """The table of one registry's entries."""
    from models.registry import aliases, list_entries

    table = Table(title=f"models in {registry}")
    columns = (
        "name",
        "version",
        "aliases",
        "task",
        "architecture",
        "backbone",
        "labels",
        "created",
        "key metric",
    )
    for column in columns:
        table.add_column(column, justify="right" if column == "labels" else "left")
    named: dict[str, dict[str, str]] = {}
    for card in list_entries(registry):
        if card.name not in named:
            named[card.name] = aliases(registry, card.name)
        metrics = card.training.metrics if card.training else {}
        key = next(
            (f"{k} {metrics[k]:.3f}" for k in ("holdout_macro_f1", "holdout_image_auroc") if k in metrics), ""
        )
        table.add_row(
            card.name,
            card.version,
            ", ".join(sorted(a for a, v in named[card.name].items() if v == card.version)),
            card.task,
            card.architecture,
            card.backbone.name if card.backbone else "",
            str(len(card.labels)),
            card.created_at.strftime("%Y-%m-%d %H:%M"),
            key,
        )
    return table


def cmd_show(args: argparse.Namespace) -> int:
    """The card of an entry, and whether its weights still match it."""
    from consumers.ops.command_context import registry_holding
    from models.registry import CARD_FILE, entry_folder, file_sha256, read_card

    registry = registry_holding(args, args.name)
    card = read_card(registry, args.name, args.version)
    folder = entry_folder(registry, args.name, card.version)
    show_document(json.loads((folder / CARD_FILE).read_text()))
    weights = folder / card.weights_file
    matches = weights.is_file() and file_sha256(weights) == card.weights_sha256
    console.print(f"folder {folder}")
    console.print(
        f"weights {weights.name}: {'sha256 matches the card' if matches else '[red]DOES NOT match the card[/red]'}"
    )
    return 0 if matches else 1


def cmd_promote(args: argparse.Namespace) -> int:
    """Point ``--alias`` of a model at a version."""
    from consumers.ops.command_context import registry_holding
    from models.registry import promote

    before = promote(registry_holding(args, args.name), args.name, args.version, args.alias)
    was = f" (was {before})" if before else ""
    console.print(f"{args.name} {args.alias} -> {args.version}{was}", highlight=False)
    return 0
