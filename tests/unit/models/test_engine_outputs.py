"""What the engine hands back: float32 CPU outputs, one per item, converted only when needed."""

from __future__ import annotations

import torch
from torch import nn

from models.engine import InferenceEngine
from tests.operator_calls import OperatorCalls


class _Doubles(nn.Module):
    """Answers in float64, as a model trained elsewhere may."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2).double()


class _KeepsOutput(nn.Module):
    """Answers in float32 with a tensor made before the call: no operator call of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = torch.randn(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.answer


def _engine(module: nn.Module) -> InferenceEngine:
    return InferenceEngine(module, device="cpu", channels_last=False)


def test_outputs_come_back_as_float32_one_per_item() -> None:
    items = _engine(_Doubles()).run_items(torch.arange(6.0).reshape(3, 2))
    assert [item.dtype for item in items] == [torch.float32] * 3
    assert [item.tolist() for item in items] == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]


def test_float32_outputs_are_split_into_items_without_an_operator_call() -> None:
    module = _KeepsOutput()
    engine = _engine(module)
    batch = torch.ones(4, 3)
    with OperatorCalls() as calls:
        items = engine.run_items(batch)
    assert calls.releasing_the_gil() == []
    assert [item.tolist() for item in items] == module.answer.tolist()


def test_the_splitting_run_gives_the_same_items() -> None:
    module = _KeepsOutput()
    got = _engine(module).run_splitting(torch.ones(4, 3))
    assert len(got) == 4
    for item, row in zip(got, module.answer, strict=True):
        assert isinstance(item, torch.Tensor)
        torch.testing.assert_close(item, row)
