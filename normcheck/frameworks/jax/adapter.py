"""JAX: the flax.linen normalization modules, CPU and GPU, gradients through jax.vjp."""

from __future__ import annotations

import os

# JAX would otherwise reserve most of a GPU's memory on first use, starving every other
# framework checked in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from normcheck.conventions import Convention
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.frameworks.jax.facts import HAS_FAST_VARIANCE, JAX, KNOWN_ISSUES, MODULE_NAMES, SAFE_SETTING
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops._op import required
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.problem import Problem

JAX_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class Config:
    """Everything a compiled forward-backward depends on besides the arrays' values."""

    op: str
    dtype: str
    ndim: int
    channel_axis: int  # where the module is told the channels are: 1, or -1 (channels last)
    normalized_ndim: int | None
    groups: int | None
    affine: bool
    eps: float
    momentum: float | None  # Flax's meaning: the weight of the old value
    training: bool  # batch statistics (else the running ones); batch norm only
    fast_variance: bool
    axes: tuple[int, ...] | None = None  # layer norm over these axes (OpParams.axes); None: trailing
    no_bias: bool = False  # layer norm's "nobias" variant: nn.LayerNorm(use_bias=False)


def build(cfg: Config) -> nn.Module:
    """The Flax module for ``cfg``, with parameters and computation in the case dtype."""
    common = {
        "epsilon": cfg.eps,
        "dtype": JAX_DTYPES[cfg.dtype],
        "param_dtype": JAX_DTYPES[cfg.dtype],
        "use_fast_variance": cfg.fast_variance,
        "use_scale": cfg.affine,
    }
    if cfg.op == "rms":
        trailing = tuple(range(cfg.ndim - required(cfg.normalized_ndim, "normalized_ndim"), cfg.ndim))
        return nn.RMSNorm(reduction_axes=trailing, feature_axes=trailing, **common)
    common["use_bias"] = cfg.affine and not cfg.no_bias
    if cfg.op == "bn":
        return nn.BatchNorm(axis=cfg.channel_axis, momentum=cfg.momentum, **common)
    if cfg.op == "in":
        return nn.InstanceNorm(feature_axes=cfg.channel_axis, **common)
    if cfg.op == "gn":
        return nn.GroupNorm(num_groups=cfg.groups, **common)
    if cfg.axes is not None:  # Flax's LayerNorm takes any axes
        return nn.LayerNorm(reduction_axes=cfg.axes, feature_axes=cfg.axes, **common)
    trailing = tuple(range(cfg.ndim - required(cfg.normalized_ndim, "normalized_ndim"), cfg.ndim))
    return nn.LayerNorm(reduction_axes=trailing, feature_axes=trailing, **common)


Arrays = dict[str, Any]
CaseFn = Callable[[Arrays, Arrays, tuple, jax.Array, jax.Array], tuple]
# params ("scale", "bias"), running statistics ("mean", "var"), x, training -> y, updated statistics
ApplyFn = Callable[[Arrays, Arrays, jax.Array, bool], tuple[jax.Array, Arrays]]


class Forward(NamedTuple):
    """A case's forward alone, as a function of arrays (see ``run_case`` for their names): what
    ``case_function`` runs forward and backward, and what a benchmark times."""

    apply: ApplyFn
    training: bool  # problem.x runs on batch statistics (batch norm in evaluation mode does not)
    stats_dtype: Any  # the dtype the running statistics are given in (None without them)


@dataclass(frozen=True)
class Compiled:
    """One configuration's jitted case, shared by every input kind."""

    run: CaseFn  # params, stats, training batches, x, dy -> y, stats, dx, dparams
    stats_dtype: Any  # the dtype the running statistics are given in (Flax's own: what its init creates)


def case_function(apply: ApplyFn, training: bool) -> CaseFn:
    """The whole case as one function: the training steps, then ``x`` forward (in training mode or
    not) and its vjp with respect to ``x`` and the parameters."""

    def run(params: Arrays, stats: Arrays, steps: tuple, x: jax.Array, dy: jax.Array) -> tuple:
        for batch in steps:
            stats = apply(params, stats, batch, True)[1]
        y, pullback, stats = jax.vjp(lambda x_, p_: apply(p_, stats, x_, training), x, params, has_aux=True)
        dx, dparams = pullback(dy)
        return y, stats, dx, dparams

    return run


@functools.lru_cache(maxsize=32)  # verify runs a configuration's input kinds one after another
def compiled(cfg: Config) -> Compiled:
    """The whole case (training steps, forward, vjp) as one jitted function.

    Tracing and compiling once per configuration pays: the five input kinds reuse it, and op-by-op
    dispatch of a Flax module and its vjp costs more than one compilation (measured in the report).
    """
    fwd = forward(cfg)
    return Compiled(jax.jit(case_function(fwd.apply, fwd.training)), fwd.stats_dtype)


def forward(cfg: Config) -> Forward:
    """The Flax module of ``cfg`` as an apply function (call it under ``precision(cfg.dtype)``)."""
    module = build(cfg)
    return Forward(module_apply(module, cfg.op), cfg.training, _stats_dtype(module, cfg))


def module_apply(module: nn.Module, op: str) -> ApplyFn:
    """apply(params, stats, x, training) -> (y, stats): a Flax module's forward, batch norm's
    running statistics threaded through (and updated in training)."""

    def apply(params: Arrays, stats: Arrays, x: jax.Array, training: bool) -> tuple[jax.Array, Arrays]:
        if op != "bn":
            return module.apply({"params": params}, x), stats
        variables = {"params": params, "batch_stats": stats}
        if not training:
            return module.apply(variables, x, use_running_average=True), stats
        y, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        return y, updated["batch_stats"]

    return apply


def _stats_dtype(module: nn.Module, cfg: Config) -> Any:
    """The dtype Flax's own init gives batch_stats (float32 whatever param_dtype, by default)."""
    if cfg.op != "bn":
        return None
    x = jax.ShapeDtypeStruct((2,) * cfg.ndim, JAX_DTYPES[cfg.dtype])
    shapes = jax.eval_shape(lambda x_: module.init(jax.random.key(0), x_, use_running_average=True), x)
    return shapes["batch_stats"]["mean"].dtype


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """float64 exists in JAX only with x64 enabled: enable it for that case alone. A backend
    that lacks an op for the dtype (XLA's UNIMPLEMENTED) makes the case Unsupported."""
    try:
        with jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext():
            yield
    except jax.errors.JaxRuntimeError as e:
        if str(e).startswith("UNIMPLEMENTED"):
            raise Unsupported(str(e).splitlines()[0]) from e
        raise


def jax_device(device: str) -> jax.Device:
    if device == "cpu":
        return jax.devices("cpu")[0]
    index = int(device.partition(":")[2] or 0)
    return jax.devices("gpu")[index]


def check_layout(impl: Implementation, shape: tuple[int, ...], layout: str) -> None:
    if layout not in impl.layouts(shape):
        raise ValueError(f"{impl.name} cannot run {layout} for shape {shape}")


class FlaxImplementation(Implementation):
    framework = "jax"

    def __init__(self, op: str, convention: Convention, fast_variance: bool = True) -> None:
        self.op, self.convention, self.fast_variance = op, convention, fast_variance
        self.name = MODULE_NAMES[op] + ("" if fast_variance else f"({SAFE_SETTING})")

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        """Flax's own layout is channels last; batch and instance norm can be told the channels
        are at axis 1, group norm cannot (its feature axis is always the last). Layer and RMS
        norm normalize the trailing axes whatever they hold, so only the canonical layout."""
        if self.op in ("ln", "rms") or len(shape) == 2:  # in 2-D both layouts are one
            return (CONTIGUOUS,)
        if self.op == "gn":
            return (CHANNELS_LAST,)
        return (CONTIGUOUS, CHANNELS_LAST)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if self.op == "in" and problem.params.running_stats:
            return "flax.linen.InstanceNorm keeps no running statistics"
        return None

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return run_case(compiled(self.config(problem, layout)), problem, layout, jax_device(device))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        """The case's forward on arrays in ``layout``, not compiled (under ``precision(problem.dtype)``)."""
        check_layout(self, problem.shape, layout)
        return forward(self.config(problem, layout))

    def config(self, problem: Problem, layout: str) -> Config:
        params = problem.params
        momentum = None
        if params.running_stats:
            momentum = self.convention.to_framework_momentum(problem.momentum)
        return Config(
            op=self.op,
            dtype=problem.dtype,
            ndim=len(problem.shape),
            channel_axis=-1 if layout == CHANNELS_LAST else 1,
            normalized_ndim=params.normalized_ndim,
            groups=params.groups,
            affine=params.affine,
            eps=problem.eps,
            momentum=momentum,
            training=params.mode == "train" or not params.running_stats,
            fast_variance=self.fast_variance,
            axes=params.axes,
            no_bias=params.variant == NOBIAS,
        )


def run_case(case: Compiled, problem: Problem, layout: str, device: jax.Device) -> RunOutput:
    """Run ``problem`` through ``case.run`` (see ``case_function``) on ``device``: arrays in ``layout``,
    weight and bias as params "scale" and "bias", running statistics "mean" and "var" in
    ``case.stats_dtype``; the outputs back in the canonical layout."""
    dtype = JAX_DTYPES[problem.dtype]
    params, stats = variables(problem, case.stats_dtype if problem.params.running_stats else None, device)
    steps = tuple(put(b, dtype, device, layout) for b in problem.steps)
    y, stats, dx, dparams = case.run(
        params, stats, steps, put(problem.x, dtype, device, layout), put(problem.dy, dtype, device, layout)
    )
    out = RunOutput()
    add(out, "forward", y, layout)
    add(out, "grad_input", dx, layout)
    for check, name in (("grad_weight", "scale"), ("grad_bias", "bias")):
        if name in params:
            add(out, check, dparams[name])
    if problem.params.running_stats:
        add(out, "running_mean", stats["mean"])
        add(out, "running_var", stats["var"])
    return out


def put(a: np.ndarray, dtype: Any, device: jax.Device, layout: str = CONTIGUOUS) -> jax.Array:
    """``a`` in ``layout`` and ``dtype`` on ``device``, converted on the host (an eager jnp
    conversion would compile a kernel per shape)."""
    return jax.device_put(to_layout(a, layout).astype(dtype), device)


def variables(problem: Problem, stats_dtype: Any, device: jax.Device) -> tuple[Arrays, Arrays]:
    """The params ("scale", "bias": the weight and bias) and running statistics ("mean", "var",
    in ``stats_dtype``) of ``problem`` on ``device``; whichever the case has."""
    dtype = JAX_DTYPES[problem.dtype]
    affine = (("scale", problem.weight), ("bias", problem.bias))
    params = {name: put(value, dtype, device) for name, value in affine if value is not None}
    stats = {}
    if problem.params.running_stats:
        mean, var = problem.initial_running()
        stats = {"mean": put(mean, stats_dtype, device), "var": put(var, stats_dtype, device)}
    return params, stats


def to_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """A copy of ``a`` (canonical, channels at axis 1) in ``layout``."""
    return np.moveaxis(a, 1, -1).copy() if layout == CHANNELS_LAST else np.array(a)


def add(out: RunOutput, check: str, a: jax.Array, layout: str = CONTIGUOUS) -> None:
    """``a`` fetched to the host, back in the canonical layout."""
    host = np.asarray(jax.device_get(a))
    if layout == CHANNELS_LAST:
        host = np.moveaxis(host, -1, 1)
    out.add(check, host.astype(np.float64), str(host.dtype))


class JaxFramework(Framework):
    name = "jax"
    conventions = JAX
    known_issues = KNOWN_ISSUES

    def implementations(self, op: str) -> list[Implementation]:
        if op not in self.conventions:  # no fused add + norm, no adaLN built in
            return []
        impls: list[Implementation] = [FlaxImplementation(op, self.convention(op))]
        if op in HAS_FAST_VARIANCE:
            impls.append(FlaxImplementation(op, self.convention(op), fast_variance=False))
        if op == "ln":  # nn.LayerNorm(reduction_axes=..., feature_axes=..., use_bias=False): any axes, no bias
            for impl in impls:
                impl.extensions = frozenset({AXES, NOBIAS})
        return impls

    def device_problem(self, device: str) -> str | None:
        if device == "cpu":
            return None
        if not device.startswith("cuda"):
            return f"unknown device {device!r}"
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            return "jax sees no GPU"
        index = int(device.partition(":")[2] or 0)
        return None if index < len(gpus) else f"jax sees {len(gpus)} GPU(s), no {device}"


def framework() -> Framework:
    return JaxFramework()
