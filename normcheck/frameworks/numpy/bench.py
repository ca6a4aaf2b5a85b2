"""NumPy: the reference formulas (normcheck.ops) computed in the case's dtype, and the user's
CS231n forward/backward pair (bn, ln, gn, and adaln, add_ln, ws, ws_gn); CPU only, one thread,
op by op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normcheck.bench.records import FORWARD
from normcheck.bench.target import Target
from normcheck.frameworks.base import Implementation, RunOutput, Unsupported
from normcheck.frameworks.numpy.calls import numpy_dtype, unpack
from normcheck.frameworks.numpy.forms import Cs231nImplementation
from normcheck.frameworks.numpy.variants import NO_BACKWARD, PairImplementation
from normcheck.names import CONTIGUOUS, OP_NAMES, Layout
from normcheck.ops import OPS
from normcheck.ops._op import broadcast_channels
from normcheck.problem import Problem
from normcheck.reference import reference

MODES = {"eager": ("eager",), "compiled": ("eager",)}
OOM = "oom"


class ReferenceImplementation(Implementation):
    """normcheck's own formulas for ``op``, every step in the case's dtype."""

    framework = "numpy"
    name = "numpy reference"

    def __init__(self, op: str) -> None:
        self.op = op

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        dtype = numpy_dtype(problem.dtype)
        out = RunOutput()
        for check, value in reference(problem, dtype=dtype).items():
            out.add(check, value, problem.dtype)
        return out


def implementations(op: str) -> list[Implementation]:
    """NumPy has no adapter: bench times the reference formulas of the five plain ops in the
    case's dtype (the fused, adaptive and Weight Standardization ops are the reference's to
    check, not to time; the user's CS231n-style pairs of them are timed)."""
    return [ReferenceImplementation(op)] if op in OP_NAMES else []


def device_problem(device: str) -> str | None:
    return None if device == "cpu" else "numpy runs on the CPU only"


def set_threads(n: int) -> int:
    """NumPy's elementwise operations and reductions run on one thread whatever ``n`` is."""
    return 1


def layout(impl: Implementation, shape: tuple[int, ...]) -> Layout:
    return CONTIGUOUS


def classify(e: BaseException) -> str | None:
    return OOM if isinstance(e, MemoryError) else None


def build(impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
    if device != "cpu":
        raise Unsupported("NumPy runs on the CPU only")
    dtype = numpy_dtype(problem.dtype)
    if isinstance(impl, ReferenceImplementation):
        call, keep = reference_call(problem, pass_, dtype)
    elif isinstance(impl, Cs231nImplementation):
        call, keep = cs231n_call(impl, problem, pass_, dtype)
    elif isinstance(impl, PairImplementation):
        call, keep = pair_call(impl, problem, pass_, dtype)
    else:
        raise Unsupported(f"{impl.name} is not a NumPy implementation")
    return Target(call, mode=variant, compiled=False, layout=CONTIGUOUS, keep=keep)


# -- the reference formulas ---------------------------------------------------------------


def reference_call(problem: Problem, pass_: str, dtype: type) -> tuple[Callable[[], Any], list[Any]]:
    """Forward: the op's normalization (in training, batch norm also updates its running
    statistics, which the next call starts from, as a layer's buffers). Backward: the closed-form
    gradients from the cache of one forward done here."""
    op, params = OPS[problem.op], problem.params
    norm = op.normalization(problem.shape, params)
    x: np.ndarray = problem.x.astype(dtype)
    weight: np.ndarray | None
    bias: np.ndarray | None
    weight, bias = (None if a is None else a.astype(dtype) for a in (problem.weight, problem.bias))
    stats = None
    running: list[tuple[np.ndarray, np.ndarray]] = []
    if params.running_stats:
        running_mean, running_var = problem.initial_running()
        rm: np.ndarray = running_mean.astype(dtype)
        rv: np.ndarray = running_var.astype(dtype)
        if params.mode == "eval":
            b = broadcast_channels(len(problem.shape), problem.shape[1])
            stats = (rm.reshape(b), rv.reshape(b))
        else:
            running.append((rm, rv))

    def forward() -> tuple[np.ndarray, Any]:
        y, cache = norm.forward(x, problem.eps, weight, bias, stats=stats, dtype=dtype)
        if running:
            running[0] = op.update_running(
                x, params, *running[0], problem.momentum, dtype, unbiased=problem.unbiased_running_var
            )
        return y, cache

    if pass_ == FORWARD:
        return forward, [x, weight, bias, running]
    _, cache = norm.forward(x, problem.eps, weight, bias, stats=stats, dtype=dtype)
    dy: np.ndarray = problem.dy.astype(dtype)
    return (lambda: norm.backward(dy, cache, dtype=dtype)), [x, dy, cache]


# -- the CS231n pair ----------------------------------------------------------------------


def cs231n_call(
    impl: Cs231nImplementation, problem: Problem, pass_: str, dtype: type
) -> tuple[Callable[[], Any], list[Any]]:
    """Forward: ``forward(x, gamma, beta, [G,] param)`` with one param dict kept across calls, so
    batch norm's running statistics carry over as in the assignment's solver. Backward:
    ``backward(dout, cache)`` with the cache of one forward done here."""
    reason = impl.unsupported(problem, CONTIGUOUS)
    if reason:
        raise Unsupported(reason)
    if pass_ != FORWARD:
        missing = impl.missing_checks(problem)
        if missing:
            raise Unsupported(next(iter(missing.values())))
    gamma, beta = impl.affine(problem, dtype)
    x: np.ndarray = problem.x.astype(dtype)
    param = cs231n_param(impl, problem, dtype)

    def forward() -> tuple[np.ndarray, Any]:
        return impl.call_forward(problem, x, gamma, beta, param)

    if pass_ == FORWARD:
        return forward, [x, gamma, beta, param]
    backward_fn = impl.backward
    if backward_fn is None:  # missing_checks, above, refuses the backward pass then
        raise Unsupported("no backward function was given")
    _, cache = forward()
    dout: np.ndarray = problem.dy.astype(dtype)
    who = impl.backward_name

    def backward() -> tuple:
        return unpack(backward_fn(dout, cache), 3, who, "(dx, dgamma, dbeta)")

    return backward, [x, gamma, beta, param, cache, dout]


def pair_call(
    impl: PairImplementation, problem: Problem, pass_: str, dtype: type
) -> tuple[Callable[[], Any], list[Any]]:
    """The CS231n-style pair of adaLN, the fused add + layer norm or Weight Standardization
    (normcheck.frameworks.numpy.variants), as verify calls it: forward, the user's forward (for
    ws_gn with normcheck's group norm after it); backward, the user's backward with the cache of
    one forward done here (for ws_gn after the group norm's backward)."""
    reason = impl.unsupported(problem, CONTIGUOUS)
    if reason:
        raise Unsupported(reason)
    if pass_ != FORWARD and impl.backward is None:
        raise Unsupported(NO_BACKWARD)
    bound = impl.bind(problem, dtype)
    if pass_ == FORWARD:
        return bound.forward, [bound]
    _, cache = bound.forward()
    return (lambda: bound.backward(cache)), [bound, cache]


def cs231n_param(impl: Cs231nImplementation, problem: Problem, dtype: type) -> dict:
    """The param dict: bn_param with mode ('train' or 'test') and copies of the running
    statistics for batch norm, eps (and momentum) unless the defaults are meant to apply."""
    if impl.op != "bn":
        return impl.param_dict(problem)
    params = problem.params
    param = impl.param_dict(problem, "test" if params.running_stats and params.mode == "eval" else "train")
    if params.running_stats:
        running_mean, running_var = problem.initial_running()
        param["running_mean"] = running_mean.astype(dtype)
        param["running_var"] = running_var.astype(dtype)
    return param
