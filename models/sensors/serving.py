"""Serving modules for the sensor tasks, registered with the model registry."""

from __future__ import annotations

import torch
from torch import nn

from models.engine import static_graph
from models.registry import register_builder
from models.sensors.networks import build_sensor_model
from schemas.model_card import ModelCard, SeriesInputSpec


def sensor_module(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """A sensor model whose sizes are read off its weights."""
    assert isinstance(card.input, SeriesInputSpec)
    first = next(k for k in state if k.endswith("weight_hh_l0"))
    hidden = state[first].shape[1]
    layers = sum(1 for k in state if k.startswith(first.split(".")[0]) and "weight_hh_l" in k)
    model = build_sensor_model(card.task, len(card.input.channels), hidden, layers)
    if card.task == "sensor_autoencoder" and "score_steps" not in state:
        state = {**state, "score_steps": torch.tensor(card.input.window)}  # made before recent-step scoring
    model.load_state_dict(state)
    return static_graph(model)


for task in ("sensor_autoencoder", "sensor_forecast", "sensor_rul"):
    register_builder(task, sensor_module)
