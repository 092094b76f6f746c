"""What every command shares: the options all take, and the configuration and model
registries they name."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.settings import VigilSettings, load_settings

CONFIG_ENV = "VIGIL_CONFIG"
"""The configuration file when no ``--config`` is given."""


def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``p`` with the options every command takes: ``--config`` and ``--output``."""
    # SUPPRESS: a subcommand without the option keeps the value given before it
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"YAML configuration file (default: ${CONFIG_ENV}, else built-in defaults)",
    )
    p.add_argument(
        "--output",
        choices=["table", "json"],
        default=argparse.SUPPRESS,
        help="table (default) for people; json: each table as a JSON line on stdout, messages on stderr",
    )
    return p


def command_settings(args: argparse.Namespace) -> VigilSettings:
    """The configuration of ``--config``, with the cluster address resolved."""
    from consumers.ops.broker_session import resolve_cluster

    return resolve_cluster(load_settings(args.config))


def registry_of(args: argparse.Namespace, kind: str) -> str:
    """The model registry folder of pipeline ``kind``: ``--registry``, else the configuration's."""
    from consumers.pipelines import pipeline_kinds

    if args.registry:
        return str(args.registry)
    registry = pipeline_kinds()[kind].registry(load_settings(args.config))
    if registry is None:
        raise ValueError(f"pipeline {kind!r} serves no models")
    return registry


def registry_for_task(args: argparse.Namespace, task: str) -> str:
    """The registry folder of the pipeline kind that serves models of ``task``."""
    from consumers.pipelines import pipeline_kinds

    for name, kind in pipeline_kinds().items():
        if task in kind.model_tasks:
            return registry_of(args, name)
    raise ValueError(f"no pipeline serves {task} models")


def registries(args: argparse.Namespace) -> list[str]:
    """``--registry``, else every pipeline kind's registry folder, each once."""
    from consumers.pipelines import pipeline_kinds

    if args.registry:
        return [str(args.registry)]
    settings = load_settings(args.config)
    found = (kind.registry(settings) for kind in pipeline_kinds().values())
    return list(dict.fromkeys(registry for registry in found if registry is not None))


def registry_holding(args: argparse.Namespace, name: str) -> str:
    """The registry folder (of ``registries``) that holds model ``name``."""
    from models.registry import versions

    searched = registries(args)
    for registry in searched:
        if versions(registry, name):
            return registry
    raise KeyError(f"no model {name!r} in {', '.join(searched)}")
