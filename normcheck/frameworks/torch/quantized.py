"""PyTorch user code with FP8-quantized output (``--quantize``): how it is called on a quantized
case, and how what it returns becomes the case's outputs.

A function is called with the torch.nn.functional op's arguments, all positional, eps always
given (fused kernels share no default), and for a static scale the scale last:

    rms: fn(input, normalized_shape, weight, eps[, scale])
    ln:  fn(input, normalized_shape, weight, bias, eps[, scale])

an nn.Module subclass is constructed as the torch.nn layer and called as ``forward(x)``, or
``forward(x, scale)`` for a static scale. Either returns ``(q, scale)``: q a
``torch.float8_e4m3fn`` or ``torch.float8_e5m2`` tensor of x's shape (or a float tensor whose
values are FP8 values), scale float32 of shape () for the tensor or one value per row, e.g.
(rows, 1) as vLLM's rms_norm_dynamic_per_token_quant; with a static scale q alone may be
returned. The static scale is a float32 tensor of shape ().
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.quantized_result import ArrayKind, normalized_shape, quantized_arguments, quantized_outputs
from normcheck.frameworks.torch.adapter import add
from normcheck.problem import Problem

RETURNS = "(q, scale): q the FP8 tensor, scale its float32 scale (q alone with a static scale)"


def static_scale(p: Problem, device: str) -> torch.Tensor | None:
    """The case's static scale as a float32 tensor of shape (), or None for a dynamic one."""
    if p.quant_scale is None:
        return None
    return torch.tensor(float(np.asarray(p.quant_scale)), dtype=torch.float32, device=device)


def _describe(t: torch.Tensor) -> str:
    return f"a {str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"


ARRAYS = ArrayKind(lambda v: isinstance(v, torch.Tensor), _describe, add, RETURNS)


def outputs(result: object, p: Problem) -> RunOutput:
    """The case's outputs from what the code returned (normcheck.frameworks.quantized_result)."""
    return quantized_outputs(result, p.quant_scale is not None, ARRAYS)


def function_call(
    fn: Callable, p: Problem, device: str, w: torch.Tensor | None, b: torch.Tensor | None
) -> Callable[[torch.Tensor], object]:
    """x -> what ``fn`` returns, called on the case as the module docstring says (``outputs`` reads it)."""
    scale = static_scale(p, device)
    shape = normalized_shape(p)
    return lambda x: fn(*quantized_arguments(p.op, x, shape, w, b, p.eps, scale))


def module_call(m: torch.nn.Module, p: Problem, device: str) -> Callable[[torch.Tensor], object]:
    """x -> what the module returns, in evaluation mode, called as ``m(x)`` or ``m(x, scale)``."""
    scale = static_scale(p, device)
    m.eval()
    return lambda x: m(x) if scale is None else m(x, scale)


def reader(call: Callable[[torch.Tensor], object], p: Problem) -> Callable[[torch.Tensor], RunOutput]:
    """x -> the case's outputs of a quantized call (Bound.quantized; Bound.quantized_call is ``call``)."""
    return lambda x: outputs(call(x), p)
