"""JAX: the flax.linen modules and the user's JAX functions and Flax modules, op by op ("eager")
or under jax.jit, on the CPU or a GPU.

Every implementation gives its forward as apply(params, stats, x, training) -> (y, stats).
forward: one apply: y and, for batch norm in training, the updated batch_stats (returned, so
    that no part of the computation is dead code under jit).
backward: jax.vjp runs the forward once while building, keeping its residuals in the pullback;
    a call applies the pullback to dy, giving dx and the gradients of the params. Eager, the
    pullback's transposed linear ops run one by one; under jax.jit, one compiled function of
    (pullback, dy): the pullback is a pytree whose leaves are the residuals, so the jitted
    function holds the transposed ops alone and the forward is not run again.
Under jax.jit the forward is traced (and, for the backward, compiled and run) while building;
those seconds are the target's setup_compile_s. User code that jax.jit cannot trace is a skip
there (its eager row times it).
A call's result is waited for with jax.block_until_ready: JAX dispatches asynchronously, on the
CPU too.

The user's cases no JAX layer has built in are timed through their own forward, as verify calls it:
a fused add + norm as apply(params, x, residual) -> (output, residual_out), its backward the vjp
of both outputs (upstream dy and dresidual) with respect to x, the residual and the params; adaLN
as forward(x, shift, scale) -> y, its backward the gradients of x, shift and scale; Weight
Standardization (ws, ws_gn) as forward(x, leaves) -> y (the user's convolution, then ws_gn's group
norm; a Flax module on channels-last x and its (kh, kw, C, O) kernel), its backward the gradients of
x, the raw weight, the bias and the group norm's affine, traced at float32 matmul precision as
verify runs it; an FP8-quantized output as fn(x, normalized_shape, weight[, bias], eps[, scale]) ->
(q, scale) or a Flax module's apply(variables, x[, scale]), forward only (up to what the code
returns: verify's conversion is not timed).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

from normcheck.bench.records import FORWARD
from normcheck.bench.target import Target
from normcheck.bench.threads import available_cpus
from normcheck.frameworks.base import Implementation, Unsupported
from normcheck.frameworks.jax.adapter import (
    JAX_DTYPES,
    FlaxImplementation,
    framework,
    jax_device,
    precision,
    put,
    variables,
)
from normcheck.frameworks.jax.forms import (
    TRACING_ERRORS,
    FunctionImplementation,
    FusedFunction,
    FusedModule,
    ModulationFunction,
    ModulationModule,
    ModuleImplementation,
    UserImplementation,
    WSFunction,
    WSModule,
    fused_outputs,
    static_scale,
    ws_inputs,
)
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.problem import Problem

JIT = "jax.jit"
MODES = {"eager": ("eager",), "compiled": (JIT,)}
OOM, SKIP = "oom", "skip"
NO_GRADIENT = "an FP8-quantized output has no gradient: its forward is timed"
# XLA_FLAGS that leave XLA's CPU client one thread (see normcheck.bench.threads), without their "--"
ONE_THREAD_FLAGS = {"xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"}


def implementations(op: str) -> list[Implementation]:
    """The adapter's implementations of ``op``."""
    return framework().implementations(op)


def device_problem(device: str) -> str | None:
    return framework().device_problem(device)


def set_threads(n: int) -> int:
    """JAX has no thread setting at run time: XLA's CPU client reads XLA_FLAGS when it starts,
    and otherwise sizes its thread pool from the CPUs the process may run on."""
    flags = {flag.removeprefix("--") for flag in os.environ.get("XLA_FLAGS", "").split()}
    if flags >= ONE_THREAD_FLAGS:
        return 1
    return len(available_cpus())


def layout(impl: Implementation, shape: tuple[int, ...]) -> Layout:
    """Channels last where offered (Flax's own layout), else the canonical one."""
    return CHANNELS_LAST if CHANNELS_LAST in impl.layouts(shape) else CONTIGUOUS


def classify(e: BaseException) -> str | None:
    """OOM for XLA's RESOURCE_EXHAUSTED (or the host's MemoryError), SKIP for XLA's
    UNIMPLEMENTED (no kernel for the dtype on the device), None for anything else."""
    if isinstance(e, MemoryError):
        return OOM
    if not isinstance(e, jax.errors.JaxRuntimeError):
        return None
    text = str(e)
    if text.startswith("RESOURCE_EXHAUSTED") or "out of memory" in text.lower():
        return OOM
    if text.startswith("UNIMPLEMENTED"):
        return SKIP
    return None


def build(impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
    if not isinstance(impl, FlaxImplementation | UserImplementation):
        raise Unsupported(f"{impl.name} is not a JAX implementation")
    lay = layout(impl, problem.shape)
    reason = impl.unsupported(problem, lay)
    if reason:
        raise Unsupported(reason)
    with precision(problem.dtype):
        target = _build(impl, problem, pass_, variant, jax_device(device), lay)
    target.call = _in_precision(target.call, problem.dtype)
    return target


def _build(
    impl: FlaxImplementation | UserImplementation,
    problem: Problem,
    pass_: str,
    variant: str,
    device: jax.Device,
    lay: str,
) -> Target:
    jit = variant == JIT
    common: dict[str, Any] = {
        "mode": variant,
        "compiled": jit,
        "layout": lay,
        "sync": _sync,
        # JAX reports a GPU's peak_bytes_in_use (device.memory_stats()) since the process started
        # and offers no way to reset it, so one call's peak cannot be read: no probe.
        "memory": None,
    }
    special = _special(impl, problem, pass_, device, lay)
    if special is not None:
        return _timed(impl, pass_, jit, common, *special)
    fwd = impl.apply_fn(problem, lay)
    params, stats = variables(problem, fwd.stats_dtype, device)
    dtype = JAX_DTYPES[problem.dtype]
    x = put(problem.x, dtype, device, lay)

    def forward(params_: Any, stats_: Any, x_: jax.Array) -> tuple[jax.Array, Any]:
        return fwd.apply(params_, stats_, x_, fwd.training)

    fn = jax.jit(forward) if jit else forward
    if pass_ == FORWARD:
        setup = 0.0
        if jit:  # traced here, so that untraceable code is a skip; the first call reuses the trace
            start = time.perf_counter()
            with _traceable(impl):
                jax.eval_shape(fn, params, stats, x)
            setup = time.perf_counter() - start
        return Target(lambda: fn(params, stats, x), keep=[params, stats, x], setup_compile_s=setup, **common)

    dy = put(problem.dy, dtype, device, lay)
    start = time.perf_counter()
    with _traceable(impl) if jit else contextlib.nullcontext():
        y, pullback, updated = jax.vjp(lambda x_, p_: fn(p_, stats, x_), x, params, has_aux=True)
        jax.block_until_ready((y, pullback, updated))
    setup = time.perf_counter() - start
    if jit:
        apply_pullback = jax.jit(lambda pullback_, dy_: pullback_(dy_))  # a new one: this case compiles afresh
        call = lambda: apply_pullback(pullback, dy)
    else:
        call = lambda: pullback(dy)
    return Target(
        call, keep=[pullback, dy, x, params, stats, y, updated], setup_compile_s=setup if jit else 0.0, **common
    )


# forward(*inputs) -> outputs; the inputs; how many of the first are differentiated; the upstream
# gradients of the outputs, one each (the backward's)
Special = tuple[Callable[..., Any], tuple, int, tuple]


def _special(
    impl: FlaxImplementation | UserImplementation, problem: Problem, pass_: str, device: jax.Device, lay: str
) -> Special | None:
    """The forward of a case with no plain forward (a fused add + norm, adaLN, Weight
    Standardization, an FP8-quantized output) and its arrays on ``device``; None for every other case."""
    dtype = JAX_DTYPES[problem.dtype]
    if isinstance(impl, FusedFunction | FusedModule):
        outputs = fused_outputs(impl.fused_apply(problem, lay), impl.label)
        params, _ = variables(problem, None, device)
        residual, dresidual = problem.fused_inputs()
        x, r, dy, dr = (put(a, dtype, device, lay) for a in (problem.x, residual, problem.dy, dresidual))
        return (lambda x_, r_, p_: outputs(p_, x_, r_)), (x, r, params), 3, (dy, dr)
    if isinstance(impl, ModulationFunction | ModulationModule):
        if problem.weight is None or problem.bias is None:
            raise ValueError("an adaptive layer norm case has a shift and a scale")
        forward, host = impl.modulation_forward(problem)
        arrays = (problem.x, problem.bias, problem.weight, problem.dy)
        x, shift, scale, dy = (put(a, dtype, device, lay) for a in arrays)
        return forward, (x, shift, scale, *jax.device_put(host, device)), 3, (dy,)
    if isinstance(impl, WSFunction | WSModule):
        x, leaves, dy = ws_inputs(problem, device, lay)
        return impl.ws_forward(problem), (x, leaves), 2, (dy,)
    if isinstance(impl, FunctionImplementation | ModuleImplementation) and problem.params.quant is not None:
        if pass_ != FORWARD:
            raise Unsupported(NO_GRADIENT)
        params, _ = variables(problem, None, device)
        x = put(problem.x, dtype, device, lay)
        return impl.quantized_apply(problem), (params, x, static_scale(problem, device)), 0, ()
    return None


def _timed(
    impl: Implementation,
    pass_: str,
    jit: bool,
    common: dict[str, Any],
    forward: Callable[..., Any],
    inputs: tuple,
    differentiated: int,
    upstream: tuple,
) -> Target:
    """forward(*inputs) timed, or its vjp with respect to the first ``differentiated`` inputs
    applied to ``upstream`` (each cast to its output's dtype, as verify does), as ``_build`` times
    the plain forward and backward."""
    fn = jax.jit(forward) if jit else forward
    if pass_ == FORWARD:
        setup = 0.0
        if jit:  # traced here, so that untraceable code is a skip; the first call reuses the trace
            start = time.perf_counter()
            with _traceable(impl):
                jax.eval_shape(fn, *inputs)
            setup = time.perf_counter() - start
        return Target(lambda: fn(*inputs), keep=list(inputs), setup_compile_s=setup, **common)

    diff, const = inputs[:differentiated], inputs[differentiated:]
    start = time.perf_counter()
    with _traceable(impl) if jit else contextlib.nullcontext():
        outs, pullback = jax.vjp(lambda *d: fn(*d, *const), *diff)
        jax.block_until_ready((outs, pullback))
    setup = time.perf_counter() - start
    grads = tuple(g.astype(o.dtype) for o, g in zip(outs, upstream, strict=True))
    if jit:
        apply_pullback = jax.jit(lambda pullback_, g_: pullback_(g_))  # a new one: this case compiles afresh
        call = lambda: apply_pullback(pullback, grads)
    else:
        call = lambda: pullback(grads)
    keep = [pullback, grads, outs, *inputs]
    return Target(call, keep=keep, setup_compile_s=setup if jit else 0.0, **common)


def _sync(out: Any) -> None:
    jax.block_until_ready(out)


def _in_precision(call: Callable[[], Any], dtype: str) -> Callable[[], Any]:
    """The call, enabling x64 itself for float64: JAX reads the setting (per thread) whenever it
    traces or dispatches, and jit caches per setting. Other dtypes need no setting, so their
    calls go unwrapped (an XLA UNIMPLEMENTED raised in them is classified a skip all the same)."""
    if dtype != "float64":
        return call

    def in_x64() -> Any:
        with precision(dtype):
            return call()

    return in_x64


@contextlib.contextmanager
def _traceable(impl: Implementation) -> Iterator[None]:
    """User code that needs concrete values (verify runs it op by op) cannot be jitted: a skip."""
    try:
        yield
    except TRACING_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unsupported(
            f"{impl.name} cannot be traced by jax.jit ({type(e).__name__}: {first}); its eager row times it op by op"
        ) from e
