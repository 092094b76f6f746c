"""JSON Schema export for every message, the model card and the settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from schemas.messages import MESSAGE_TYPES
from schemas.model_card import ModelCard
from schemas.settings import VigilSettings


def exported_models(extra: Sequence[type[BaseModel]] = ()) -> dict[str, type[BaseModel]]:
    """Every model that gets a schema file, by name; ``extra``: those of added pipeline kinds."""
    added = {model.__name__: model for model in extra}
    return {**MESSAGE_TYPES, **added, "ModelCard": ModelCard, "VigilSettings": VigilSettings}


def export_json_schemas(directory: str | Path, extra: Sequence[type[BaseModel]] = ()) -> list[Path]:
    """Write ``<Name>.schema.json`` for each model into ``directory``; return the paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in exported_models(extra).items():
        path = target / f"{name}.schema.json"
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://vigil.dev/schemas/{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
