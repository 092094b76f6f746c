"""OpenVINO on the CPU: a model's static graph compiled for this processor, int8 where it keeps
the model's outputs.

Converted from the torch module itself (no ONNX file), compiled at the process's torch thread
count with fp32 inference asked for explicitly (OpenVINO would otherwise pick bf16 on CPUs that
have it, a precision no check chose). ``int8`` is post-training quantization by NNCF,
calibrated on the registry card's check images; convolutions only (see ``_quantized``). Whatever the precision, a graph serves only
where its outputs on the check inputs stay within a tolerance of the torch module's: the
largest absolute difference, as a share of the torch outputs' range. A refused precision is
logged with that gap and the next one is tried; ``cpu_graph`` returns None when none passes,
and the caller serves torch.

On the 2-core machine the project is built on (one torch thread, batch 16), the default
classifier (EfficientNet-Lite0 and a linear head) ran 24 images/s traced in torch, 94 in
OpenVINO fp32 and 294 in OpenVINO int8; ``bench/vision_models.py`` measures the pipelines.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

CpuPrecision = Literal["int8", "fp32"]
FP32_TOLERANCE = 1e-3
"""The gap an fp32 graph may show: rounding from another order of operations, no more."""


def openvino_available() -> bool:
    """Whether OpenVINO is installed here (found, not imported: NNCF alone takes seconds to
    import, paid only where a model is quantized)."""
    return importlib.util.find_spec("openvino") is not None


class CompiledGraph:
    """A static graph compiled by OpenVINO: a batch tensor in, a float32 CPU tensor out.

    The call holds no GIL while OpenVINO computes. Each calling thread has its own infer
    request, and the output is copied out of its buffer, which the request's next call
    overwrites."""

    def __init__(self, compiled: Any, precision: CpuPrecision, gap: float) -> None:
        self._compiled = compiled
        self._requests = threading.local()
        self.precision = precision
        self.gap = gap
        """The largest output difference from torch on the check inputs, as a share of range."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        outputs = request.infer([batch.detach().contiguous().numpy()])
        return torch.from_numpy(np.array(outputs[0], dtype=np.float32, copy=True))


def compile_graph(
    module: nn.Module,
    example: torch.Tensor,
    threads: int,
    precision: CpuPrecision = "fp32",
    calibration: torch.Tensor | None = None,
) -> Any:
    """``module`` compiled by OpenVINO for any batch size of ``example``'s item shape; ``int8``
    is calibrated on ``calibration`` (needed then)."""
    import openvino as ov

    shape = [-1, *example.shape[1:]]
    with torch.no_grad():
        graph = ov.convert_model(module.eval(), example_input=example[:2].contiguous(), input=[shape])
    if precision == "int8":
        graph = _quantized(graph, calibration)
    config = {
        "INFERENCE_NUM_THREADS": max(1, threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    return ov.Core().compile_model(graph, "CPU", config)


def _quantized(graph: Any, calibration: torch.Tensor | None) -> Any:
    """``graph`` with int8 weights and activations, ranges set on ``calibration``."""
    if importlib.util.find_spec("nncf") is None:
        raise ValueError("int8 needs NNCF, which is not installed")
    import nncf

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 needs calibration images (the card's check images)")
    items = [item.unsqueeze(0).contiguous().numpy() for item in calibration]
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its progress bars are not the service's log
    return nncf.quantize(
        graph,
        nncf.Dataset(items),
        subset_size=len(items),
        fast_bias_correction=True,
        preset=nncf.QuantizationPreset.MIXED,
        # products stay fp32: a linear head costs nothing, and a nearest-neighbour distance is
        # the small difference of two large terms, which int8 would drown
        ignored_scope=nncf.IgnoredScope(types=["MatMul"]),
    )


def output_gap(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """The largest absolute difference between two outputs, as a share of ``reference``'s range
    (1.0 where their shapes differ)."""
    if candidate.shape != reference.shape:
        return 1.0
    reference, candidate = reference.float(), candidate.float()
    spread = float(reference.max() - reference.min()) or 1.0
    return float((candidate - reference).abs().max()) / spread


def cpu_graph(
    module: nn.Module,
    checks: torch.Tensor,
    threads: int,
    precisions: Sequence[CpuPrecision],
    tolerance: float,
    describe: str = "",
) -> CompiledGraph | None:
    """``module`` compiled at the first of ``precisions`` whose outputs on ``checks`` stay within
    its tolerance (``tolerance`` for int8, ``FP32_TOLERANCE`` for fp32) of torch's; None when
    none does (each refusal is logged with its gap)."""
    name = describe or type(module).__name__
    with torch.inference_mode():
        expected = module(checks)
    for precision in precisions:
        allowed = tolerance if precision == "int8" else FP32_TOLERANCE
        try:
            compiled = compile_graph(
                module, checks, threads, precision, checks if precision == "int8" else None
            )
            gap = output_gap(expected, CompiledGraph(compiled, precision, 0.0)(checks))
        except Exception as error:  # any model may refuse conversion; torch still serves it
            log.warning("OpenVINO %s refused for %s: %s", precision, name, error)
            continue
        if gap <= allowed:
            log.info(
                "%s serves on OpenVINO %s (gap %.2g of the output range on %d check inputs)",
                name,
                precision,
                gap,
                len(checks),
            )
            return CompiledGraph(compiled, precision, gap)
        log.warning(
            "OpenVINO %s refused for %s: outputs differ from torch's by %.3g of their range on %d check inputs "
            "(tolerance %.3g)",
            precision,
            name,
            gap,
            len(checks),
            allowed,
        )
    return None
