"""The inference engine: device, precision, memory layout and batch execution of one model.

Knows tensors only (no Kafka, no messages). ``prepare`` moves a host batch to the device
(pinned memory, non-blocking copy) so the caller can prepare batch k+1 while batch k
computes; ``run`` executes under ``torch.inference_mode`` with bf16/fp16 autocast on GPU;
``run_splitting`` halves a batch that runs out of GPU memory and retries. On a GPU each engine
(each lane) queues its copies and kernels on a CUDA stream of its own, so lanes sharing a device
interleave on it rather than each waiting for the other's batch behind the default stream.

On the CPU, ``trace`` makes the model one TorchScript graph at warm-up: a batch then runs in
one call that holds Python's GIL once, where the eager module takes it back after every layer.
Beside a thread busy in Python (the consumer's), each of those takes waits out the
interpreter's 5 ms switch interval: an eager MobileNetV3-Small batch of 8 took 964 ms there
against 37 ms alone, and 49 ms traced. The trace is kept only where it gives the eager
outputs at every warm-up batch size; otherwise the model serves eagerly, with a warning.
Only modules marked ``static_graph`` are traced: a trace replays the operations its example
ran, so a loop or branch on the input's values (PatchCore's region growing) would be frozen
at the example's count, and no check on one example can show it.

For the reason the model is traced, a batch's outputs leave ``run`` and ``run_items``
without another operator call where none is needed: a no-op ``.float().cpu()``, an
``unbind`` or a ``reshape`` each gives the GIL up too, and beside a busy thread each cost
5-10 ms (a GRU window's whole run is 2 ms); attribute reads, basic indexing, ``.numpy()``
and ``.tolist()`` keep it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from models.cpu_engine import (
    CompiledGraph,
    CpuPrecision,
    cpu_graph,
    openvino_available,
)

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


STATIC_GRAPH = "vigil_static_graph"


def _silence_torchscript() -> None:
    """Silence TorchScript's own noise for good, and nothing else: its deprecation notices (the
    engine serves eagerly if TorchScript goes) and the tracer's warnings (a trace is kept only
    where it gives the eager outputs). A ``catch_warnings`` block around tracing would swap the
    filters of every thread while a lane is traced. Adding the same filter again moves it, so
    calling this before each trace keeps one copy."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)


def static_graph(module: nn.Module) -> nn.Module:
    """Mark ``module`` as traceable: its forward runs the same operations whatever its input's
    values (no loop or branch on them), so ``InferenceEngine`` may serve its trace."""
    setattr(module, STATIC_GRAPH, True)
    return module


def static_stem(module: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The part of ``module`` a graph compiler may take (its whole self when marked
    ``static_graph``) and what turns that part's output into the module's; None when it has none.
    A module with a dynamic tail says so with a ``static_stem()`` method."""
    if getattr(module, STATIC_GRAPH, False):
        return module, lambda out: out
    split = getattr(module, "static_stem", None)
    return split() if callable(split) else None


@dataclass(frozen=True)
class CpuPlan:
    """How a model may serve through OpenVINO on a CPU: the precisions to try in order, the
    int8 tolerance (share of the output range), and the check inputs (None: random inputs,
    enough to check an fp32 graph but not to calibrate int8)."""

    precisions: tuple[CpuPrecision, ...] = ("fp32",)
    tolerance: float = 0.05
    checks: torch.Tensor | None = None
    key: str | None = None
    """Names the weights (a registry entry and its hash): engines of the same weights in one
    process (a reload of the same version, a replay, a per-frame model) share one compiled
    graph instead of converting, compiling and checking it again."""


_COMPILED: collections.OrderedDict[tuple[object, ...], CompiledGraph | None] = collections.OrderedDict()
_COMPILED_LOCK = threading.Lock()
COMPILED_KEPT = 8
"""Compiled graphs (or refusals) kept for reuse, the least recently used dropped first."""


def int8_gap(module: nn.Module, checks: torch.Tensor) -> float | None:
    """How far ``module``'s int8 OpenVINO graph, calibrated on ``checks`` (model inputs), lands
    from torch on them (share of the output range, as ``CpuPlan``'s check measures it); None
    where it has no static graph, OpenVINO is missing or quantizing fails. Training writes the
    card's precision from it, so serving does not quantize at every load what it would refuse."""
    split = static_stem(module)
    if split is None or not openvino_available():
        return None
    _silence_torchscript()  # OpenVINO converts from a trace
    # no tolerance: any int8 graph that builds comes back, with its gap
    graph = cpu_graph(split[0], checks, torch.get_num_threads(), ("int8",), math.inf, type(module).__name__)
    return graph.gap if graph is not None else None


def single_torch_thread() -> None:
    """Thread-pool initializer: torch ops in this worker run on one thread, so decode workers
    do not oversubscribe the cores the model's own thread pool uses."""
    torch.set_num_threads(1)


def default_torch_threads(lanes: int = 1, processes: int = 1) -> int:
    """Torch's intra-op threads: one core left to each process's Python thread that feeds
    torch, the rest shared by ``lanes`` models running at once in each of ``processes``.

    On a 2-core machine a sensor model trains as fast on one thread as on two
    (1.18 s against 1.24 s for 20 epochs), and two threads spinning beside a busy consumer or
    another process slow everything down several times over.
    """
    processes = max(1, processes)
    return max(1, ((os.cpu_count() or 1) - processes) // (processes * max(1, lanes)))


def pick_device(device: Device | str = "auto") -> torch.device:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was pinned but no CUDA device is available")
    return torch.device(device)


def pick_dtype(device: torch.device, precision: Precision | str) -> torch.dtype | None:
    """The autocast dtype: bf16 (or fp16) on GPU for ``auto``; None means plain fp32."""
    if precision == "fp32" or device.type != "cuda":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class InferenceEngine:
    """Runs ``module`` on batches; see the module docstring."""

    def __init__(
        self,
        module: nn.Module,
        device: Device | str = "auto",
        precision: Precision | str = "auto",
        channels_last: bool = True,
        compile: bool = False,
        trace: bool = False,
        cpu_plan: CpuPlan | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.autocast_dtype = pick_dtype(self.device, precision)
        self.channels_last = channels_last
        module = module.eval().to(self.device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(module, dynamic=True) if compile else module
        )
        self._trace = (
            trace
            and getattr(module, STATIC_GRAPH, False)
            and not compile
            and self.device.type == "cpu"
            and self.autocast_dtype is None
        )
        self.traced = False
        """Whether batches run as one TorchScript graph (see the module docstring)."""
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        """This engine's own CUDA stream (see the module docstring)."""
        self._cpu_plan = (
            cpu_plan
            if cpu_plan is not None
            and self.device.type == "cpu"
            and not compile
            and self.autocast_dtype is None
            else None
        )
        self.cpu_graph: CompiledGraph | None = None
        """The OpenVINO graph serving batches, where one does (see the module docstring)."""
        self._split = static_stem(module)
        self._stem: Callable[[torch.Tensor], torch.Tensor] | None = self._split[0] if self._split else None

    def _on_stream(self) -> contextlib.AbstractContextManager[object]:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a host batch to the device without blocking the host (pinned memory on GPU),
        on the engine's stream, where ``run`` will use it."""
        if self.device.type == "cuda":
            if batch.device.type == "cpu":
                batch = batch.pin_memory()
            with self._on_stream():
                batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Outputs for a prepared batch, as float32 on the CPU."""
        with torch.inference_mode(), self._on_stream():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    out = self.module(batch)
            else:
                out = self.module(batch)
            if out.dtype is torch.float32 and out.device.type == "cpu":
                return out  # no conversion call: each one lets go of the GIL (module docstring)
            return out.float().cpu()

    def run_stem(self, batch: torch.Tensor) -> torch.Tensor:
        """The output of the module's static stem for a prepared batch (a PatchCore scorer's
        anomaly maps), from the graph that serves it."""
        if self._stem is None:
            raise ValueError("this model has no static stem")
        with torch.inference_mode():
            return self._stem(batch)

    def run_items(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """``run``'s outputs, one per item (views of one CPU tensor, made without a call into
        torch's operators: see the module docstring)."""
        out = self.run(batch)
        return [out[i] for i in range(len(out))]

    def run_splitting(self, batch: torch.Tensor) -> list[torch.Tensor | BaseException]:
        """Per-item outputs; on CUDA out-of-memory halve the batch and retry each half.

        A single item that still fails gets its exception in its place.
        """
        try:
            return list(self.run_items(batch))
        except torch.cuda.OutOfMemoryError as error:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                return [error]
            half = len(batch) // 2
            log.warning(
                "CUDA out of memory at batch %d; splitting into %d + %d", len(batch), half, len(batch) - half
            )
            return self.run_splitting(batch[:half]) + self.run_splitting(batch[half:])

    def warm_up(self, example: torch.Tensor, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run once per batch size so kernels, autotuning and allocations happen before traffic;
        with ``trace``, first swap the module for its trace where it agrees at these sizes."""

        def of(size: int) -> torch.Tensor:
            return self.prepare(example.unsqueeze(0).expand(size, *example.shape).contiguous())

        batches = [of(size) for size in batch_sizes]
        if self._cpu_plan is not None and self.cpu_graph is None:
            self._swap_for_cpu_graph(example, self._cpu_plan)
        # traced on 3, a size no check uses: a graph that kept its batch size fails a check
        if (
            self._trace
            and self.cpu_graph is None
            and not self.traced
            and self._swap_for_trace(of(3), batches)
        ):
            return  # the checks ran every warm-up batch through the trace already
        for batch in batches:
            self.run(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def engine_name(self) -> str:
        """What runs batches: ``openvino-int8``, ``openvino-fp32``, ``torchscript`` or ``torch``."""
        if self.cpu_graph is not None:
            return f"openvino-{self.cpu_graph.precision}"
        return "torchscript" if self.traced else "torch"

    def _swap_for_cpu_graph(self, example: torch.Tensor, plan: CpuPlan) -> bool:
        """Serve the module's static stem compiled by OpenVINO where a precision of ``plan``
        passes its checks; whether one did."""
        split = self._split
        if split is None or not openvino_available():
            log.info(
                "%s serves on torch: %s",
                type(self.module).__name__,
                "no static graph" if split is None else "OpenVINO is not installed",
            )
            return False
        stem, finish = split
        _silence_torchscript()  # OpenVINO converts from a trace
        checks = plan.checks
        if checks is None:
            checks = torch.randn((4, *example.shape), generator=torch.Generator().manual_seed(0))
        precisions = tuple(p for p in plan.precisions if p != "int8" or plan.checks is not None)
        threads = torch.get_num_threads()
        key = (plan.key, threads, precisions, plan.tolerance) if plan.key else None
        with _COMPILED_LOCK:  # held while compiling: a second engine of the same weights waits for it
            if key is not None and key in _COMPILED:
                _COMPILED.move_to_end(key)
                graph = _COMPILED[key]
            else:
                graph = cpu_graph(
                    stem, checks.float(), threads, precisions, plan.tolerance, type(self.module).__name__
                )
                if key is not None:
                    _COMPILED[key] = graph
                    while len(_COMPILED) > COMPILED_KEPT:
                        _COMPILED.popitem(last=False)
        if graph is None:
            return False
        self.cpu_graph = self._stem = graph
        self.channels_last = False  # the graph takes NCHW: a channels-last batch would be copied back
        self.module = graph if stem is self.module else (lambda batch: finish(graph(batch)))
        return True

    def _swap_for_trace(self, example: torch.Tensor, checks: Sequence[torch.Tensor]) -> bool:
        """Serve the module traced on ``example`` if it gives the eager outputs on it and on
        every batch of ``checks``; whether it does."""
        eager = self.module
        _silence_torchscript()
        try:
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(eager, example, check_trace=False))  # type: ignore[arg-type]
                for batch in (example, *checks):
                    expected, got = eager(batch), traced(batch)
                    if not (isinstance(got, torch.Tensor) and got.shape == expected.shape):
                        raise ValueError(f"the trace gave another output shape at batch {len(batch)}")
                    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True):
                        raise ValueError(f"the trace gave other outputs at batch {len(batch)}")
        except Exception as error:  # any model may refuse tracing; eager serving still works
            log.warning("serving %s eagerly: it could not be traced (%s)", type(eager).__name__, error)
            return False
        self.module = traced
        self.traced = True
        return True
