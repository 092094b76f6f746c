"""Which torch functions a piece of code calls from Python (each operator call gives the GIL up)."""

from __future__ import annotations

from typing import Any

from torch.overrides import TorchFunctionMode

KEEPS_THE_GIL = frozenset({"__get__", "__len__", "__getitem__", "numpy", "tolist"})
"""Attribute reads, length, basic indexing and the conversions out of torch: no operator call."""


class OperatorCalls(TorchFunctionMode):
    """Records the name of every torch function called while it is entered."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))

    def releasing_the_gil(self) -> list[str]:
        """The calls recorded that are operator calls."""
        return [name for name in self.names if name not in KEEPS_THE_GIL]
