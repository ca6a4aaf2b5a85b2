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
from normcheck.frameworks.torch.adapter import TorchImplementation, framework, tensor
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
    bound = impl.bind(problem, device)
    training = problem.params.mode == "train" or not problem.params.running_stats

    def forward(x: torch.Tensor) -> torch.Tensor:
        return bound.forward(x, training)

    fn: Callable[[torch.Tensor], torch.Tensor] = forward
    if variant == "torch.compile":
        torch._dynamo.reset()  # every case compiles afresh, so its compile time is its own
        fn = torch.compile(forward, dynamic=False)
    x = tensor(problem.x, problem.dtype, device, lay)
    cuda = device.startswith("cuda")
    common: dict[str, Any] = {
        "mode": variant,
        "compiled": variant != "eager",
        "layout": lay,
        "cuda_stream": cuda,
        "sync": (lambda out: torch.cuda.synchronize(device)) if cuda else (lambda out: None),
        "memory": memory_probe(device) if cuda else None,
    }
    if pass_ == FORWARD:

        def call() -> torch.Tensor:
            with torch.no_grad():
                return fn(x)

        return Target(call, keep=[x, bound], **common)

    x.requires_grad_(True)
    leaves = [t for t in (x, bound.weight, bound.bias) if t is not None]
    dy = tensor(problem.dy, problem.dtype, device, lay)
    start = time.perf_counter()
    y = fn(x)  # the graph every timed backward runs through (retained)
    if cuda:
        torch.cuda.synchronize(device)
    setup = time.perf_counter() - start

    def backward() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(y, leaves, dy, retain_graph=True)

    return Target(backward, keep=[x, y, dy, bound], setup_compile_s=setup if variant != "eager" else 0.0, **common)


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
