"""PyTorch: torch.nn.functional, torch.nn layers and the user's torch functions and modules,
eager or under torch.compile; on CUDA timed with CUDA events on the current stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from normcheck.bench.records import FORWARD
from normcheck.bench.target import MemoryProbe, Target
from normcheck.frameworks.base import Implementation, Unsupported
from normcheck.frameworks.torch.adapter import Bound, TorchImplementation, framework, tensor
from normcheck.names import CONTIGUOUS, Layout
from normcheck.problem import Problem

MODES = {"eager": ("eager",), "compiled": ("torch.compile",)}
OOM, SKIP = "oom", "skip"


def implementations(op: str) -> list[Implementation]:
    """The adapter's implementations of ``op``."""
    return framework().implementations(op)


def device_problem(device: str) -> str | None:
    return framework().device_problem(device)


def set_threads(n: int) -> int:
    torch.set_num_threads(n)
    return torch.get_num_threads()


def layout(impl: Implementation, shape: tuple[int, ...]) -> Layout:
    return CONTIGUOUS


def classify(e: BaseException) -> str | None:
    """OOM for an out-of-memory error, SKIP for a missing kernel, None for anything else."""
    if isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e)):
        return OOM
    if isinstance(e, RuntimeError) and "not implemented for" in str(e):
        return SKIP
    return None


def build(impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
    if not isinstance(impl, TorchImplementation):
        raise Unsupported(f"{impl.name} is not a PyTorch implementation")
    lay = layout(impl, problem.shape)
    reason = impl.unsupported(problem, lay)
    if reason:
        raise Unsupported(reason)
    if problem.params.quant is not None and pass_ != FORWARD:
        raise Unsupported("an FP8-quantized output has no gradient: its forward is timed")
    bound = impl.bind(problem, device)
    cuda = device.startswith("cuda")
    common: dict[str, Any] = {
        "mode": variant,
        "compiled": variant != "eager",
        "layout": lay,
        "cuda_stream": cuda,
        "sync": (lambda out: torch.cuda.synchronize(device)) if cuda else (lambda out: None),
        "memory": memory_probe(device) if cuda else None,
    }
    inputs = [tensor(problem.x, problem.dtype, device, lay)]
    if bound.fused is not None:  # the residual beside x; the output and the updated residual out
        inputs.append(tensor(problem.fused_inputs()[0], problem.dtype, device, lay))
    fn = _callable(bound, problem, inputs)
    if variant == "torch.compile":
        torch._dynamo.reset()  # every case compiles afresh, so its compile time is its own
        fn = torch.compile(fn, dynamic=False)
    if pass_ == FORWARD:

        def call() -> Any:
            with torch.no_grad():
                return fn(*inputs)

        return Target(call, keep=[*inputs, bound], **common)

    for t in inputs:
        t.requires_grad_(True)
    leaves = [t for t in (*inputs, bound.weight, bound.bias, *bound.extra.values()) if t is not None]
    start = time.perf_counter()
    outputs = fn(*inputs)  # the graph every timed backward runs through (retained)
    if cuda:
        torch.cuda.synchronize(device)
    setup = time.perf_counter() - start
    ys = list(outputs) if isinstance(outputs, tuple | list) else [outputs]
    upstream = [problem.dy] + ([problem.fused_inputs()[1]] if bound.fused is not None else [])
    grads = [tensor(g, problem.dtype, device, lay) for g in upstream]
    pairs = [(y, g) for y, g in zip(ys, grads, strict=True) if y.requires_grad]  # a residual kept as it is

    def backward() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad([y for y, _ in pairs], leaves, [g for _, g in pairs], retain_graph=True)

    keep = [*inputs, *ys, *grads, bound]
    return Target(backward, keep=keep, setup_compile_s=setup if variant != "eager" else 0.0, **common)


def _callable(bound: Bound, problem: Problem, inputs: list[torch.Tensor]) -> Callable[..., Any]:
    """The case's call on its inputs: x alone, x and the residual (a fused add + norm), or x to
    (q, scale) (an FP8-quantized output, its raw result: the conversion verify makes is not timed)."""
    if bound.fused is not None:
        return bound.fused
    if bound.quantized_call is not None:
        return bound.quantized_call
    training = problem.params.mode == "train" or not problem.params.running_stats

    def forward(x: torch.Tensor) -> torch.Tensor:
        return bound.forward(x, training)

    return forward


def memory_probe(device: str) -> MemoryProbe:
    level = [0]

    def reset() -> None:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        level[0] = torch.cuda.memory_allocated(device)

    def peak_above() -> int:
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - level[0])

    return MemoryProbe(reset, peak_above)
