"""The inference engine: device, precision, memory layout and batch execution of one model.

Knows tensors only (no Kafka, no messages). ``prepare`` moves a host batch to the device
(pinned memory, non-blocking copy) so the caller can prepare batch k+1 while batch k
computes; ``run`` executes under ``torch.inference_mode`` with bf16/fp16 autocast on GPU;
``run_splitting`` halves a batch that runs out of GPU memory and retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


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

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a host batch to the device without blocking the host (pinned memory on GPU)."""
        if self.device.type == "cuda":
            if batch.device.type == "cpu":
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Outputs for a prepared batch, as float32 on the CPU."""
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    out = self.module(batch)
            else:
                out = self.module(batch)
            return out.float().cpu()

    def run_splitting(self, batch: torch.Tensor) -> list[torch.Tensor | BaseException]:
        """Per-item outputs; on CUDA out-of-memory halve the batch and retry each half.

        A single item that still fails gets its exception in its place.
        """
        try:
            out = self.run(batch)
            return list(out.unbind(0))
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
        """Run once per batch size so kernels, autotuning and allocations happen before traffic."""
        for size in batch_sizes:
            batch = example.unsqueeze(0).expand(size, *example.shape).contiguous()
            self.run(self.prepare(batch))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
