"""User code in PyTorch: a function with the signature of the torch.nn.functional op, or an
nn.Module subclass with the constructor of the torch.nn layer.

Both run through the built-in adapter's TorchImplementation (steps, forward, backward with
autograd, channels-last layouts); only the way the user's code is called differs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from normcheck.frameworks.base import Implementation, RunOutput
from normcheck.frameworks.torch import quantized, ws
from normcheck.frameworks.torch.adapter import (
    TORCH_DTYPES,
    Binder,
    Bound,
    TorchImplementation,
    leaf,
    running_stats,
    tensor,
    weight_dtype,
)
from normcheck.frameworks.torch.facts import TORCH
from normcheck.ops import FUSED_BASE, OPS
from normcheck.ops.adaptive_layer_norm import ADALN, stray_affine
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import WS_OPS
from normcheck.problem import Problem
from normcheck.user.binding import takes
from normcheck.user.modulation import MODULATION_ROLES, bind_modulation

# User code is called for the op variants and fused ops too: it computes the variant itself
# (Gemma's 1 + weight, no bias) and is given the case's weight, bias and residual as they are;
# modules also for batch norm's momentum=None (a function has no batch counter).
USER_EXTENSIONS = frozenset({GEMMA, NOBIAS, FUSED_ADD, QUANTIZED})
# Ranks a layer class takes when its name ends like torch.nn's BatchNorm1d/2d/3d.
RANK_SUFFIXES = {"1d": (2, 3), "2d": (4,), "3d": (5,)}
# Each option: (value for the case, the framework's default); omitted when they agree and
# the call style leaves defaults out.
OptionValues = dict[str, tuple[object, object]]


def build(
    form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object | None = None
) -> Implementation | None:
    """The implementation of ``op`` by ``obj`` in ``form`` (torch_function or torch_module)."""
    # normcheck.user.detect_form gives the function form callables, the module form classes
    if op in WS_OPS and form in ("torch_function", "torch_module"):  # a convolution (frameworks.torch.ws)
        return ws.build(form, op, obj, name, omit_defaults)
    if form == "torch_function":
        if not callable(obj):
            raise TypeError(f"the torch_function form takes a function, not a {type(obj).__name__}")
        if op == ADALN:
            return ModulationFunction(op, name, obj, omit_defaults)
        # a function may write its result into its input (vLLM's kernels): the stress profile calls it in place too
        return TorchImplementation(op, name, function_binder(obj, omit_defaults), USER_EXTENSIONS, in_place=True)
    if form == "torch_module":
        if not isinstance(obj, type):
            raise TypeError(f"the torch_module form takes an nn.Module subclass, not a {type(obj).__name__}")
        return ModuleImplementation(op, name, obj, omit_defaults)
    raise ValueError(f"the torch forms have no form {form!r}")


def _default_eps(p: Problem) -> float:
    return TORCH[FUSED_BASE.get(p.op, p.op)].default_eps(p.dtype)


def _default_momentum(p: Problem) -> float:
    return TORCH[FUSED_BASE.get(p.op, p.op)].default_new_weight


def _keywords(options: OptionValues, omit_defaults: bool) -> dict[str, object]:
    return {k: v for k, (v, default) in options.items() if not (omit_defaults and v == default)}


def _normalized_shape(p: Problem) -> tuple[int, ...]:
    """Layer/RMS norm's normalized_shape: the sizes of the normalized axes (trailing or not)."""
    return tuple(OPS[p.op].param_shape(p.shape, p.params))


# -- functions --------------------------------------------------------------------------


def function_call(
    p: Problem,
    x: torch.Tensor,
    train: bool,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
    rm: torch.Tensor | None,
    rv: torch.Tensor | None,
    omit_defaults: bool,
) -> tuple[list[object], dict[str, object]]:
    """Positional and keyword arguments of the torch.nn.functional op for this case: the tensors
    positionally (trailing None ones dropped when defaults are left out), the options by keyword."""
    eps: OptionValues = {"eps": (p.eps, _default_eps(p))}
    momentum: OptionValues = {"momentum": (p.momentum, _default_momentum(p))}
    if p.op == "bn":
        args, n_required = [x, rm, rv, w, b], 3
        options = {"training": (train, False), **momentum, **eps}
    elif p.op == "in":
        args, n_required = [x, rm, rv, w, b], 1
        options = {"use_input_stats": (train, True), **momentum, **eps}
    elif p.op == "gn":
        args, n_required, options = [x, p.params.groups, w, b], 2, eps
    elif p.op == "ln":
        args, n_required, options = [x, _normalized_shape(p), w, b], 2, eps
    else:
        args, n_required, options = [x, _normalized_shape(p), w], 2, eps
    if omit_defaults:
        while len(args) > n_required and args[-1] is None:
            args.pop()
    return args, _keywords(options, omit_defaults)


def fused_call(
    p: Problem, x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None
) -> list[object]:
    """The arguments of a fused add + norm function, all positional, eps always given (fused
    kernels have no common default): ``add_rms(x, residual, weight, eps)`` as vLLM's
    fused_add_rms_norm, ``add_ln(x, residual, weight, bias, eps)``; either returns
    ``(output, residual_out)``, residual_out = x + residual in the input dtype. A fused kernel
    always takes a weight: a case without one (affine off) passes ones, which collect no gradient."""
    if w is None:
        w = torch.ones(_normalized_shape(p), dtype=x.dtype, device=x.device)
    if p.op == "add_rms":
        return [x, residual, w, p.eps]
    return [x, residual, w, b, p.eps]


def function_binder(fn: Callable, omit_defaults: bool = False) -> Binder:
    """Binds ``fn``, called as the torch.nn.functional op, to each case. Running statistics are
    the problem's initial values, which ``fn`` must update in place as F does. A fused add +
    norm is called as ``fused_call`` says."""

    def bind(p: Problem, device: str) -> Bound:
        w, b = leaf(p.weight, p, device, weight_dtype(p)), leaf(p.bias, p, device)
        if p.op in FUSED_BASE:
            return Bound(_no_plain_forward, w, b, fused=lambda x, r: fn(*fused_call(p, x, r, w, b)))
        if p.params.quant is not None:  # FP8 output (normcheck.frameworks.torch.quantized)
            call = quantized.function_call(fn, p, device, w, b)
            return Bound(_no_plain_forward, w, b, quantized=quantized.reader(call, p), quantized_call=call)
        rm, rv = running_stats(p, device)

        def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
            args, kwargs = function_call(p, x, train, w, b, rm, rv, omit_defaults)
            return fn(*args, **kwargs)

        return Bound(forward, w, b, rm, rv)

    return bind


def _no_plain_forward(x: torch.Tensor, train: bool) -> torch.Tensor:
    raise TypeError("a fused add + norm is called with a residual")


# -- modules ----------------------------------------------------------------------------


def constructor_call(p: Problem, omit_defaults: bool) -> tuple[list[object], dict[str, object]]:
    """Positional and keyword arguments of the torch.nn layer's constructor for this case."""
    params = p.params
    channels = p.shape[1] if len(p.shape) > 1 else None
    eps: OptionValues = {"eps": (p.eps, _default_eps(p))}
    momentum: OptionValues = {"momentum": (p.momentum, _default_momentum(p))}
    args: list[object]
    options: OptionValues
    if p.op == "gn":
        args, options = [params.groups, channels], {**eps, "affine": (params.affine, True)}
    elif p.op == "bn":
        args = [channels]
        if params.variant == CUMULATIVE:  # momentum=None: the cumulative moving average
            momentum = {"momentum": (None, _default_momentum(p))}
        options = {**eps, **momentum, "affine": (params.affine, True), "track_running_stats": (True, True)}
    elif p.op == "in":
        args = [channels]
        options = {
            **eps,
            **momentum,
            "affine": (params.affine, False),
            "track_running_stats": (params.running_stats, False),
        }
    else:  # ln, rms, and the fused add_ln, add_rms
        args, options = [_normalized_shape(p)], {**eps, "elementwise_affine": (params.affine, True)}
        if params.variant == NOBIAS:  # nn.LayerNorm(bias=False)
            options["bias"] = (False, True)
    return args, _keywords(options, omit_defaults)


def rank_problem(cls_name: str, ndim: int) -> str | None:
    """Why a class named like torch.nn's BatchNorm2d cannot take an input of rank ``ndim``."""
    suffix = cls_name[-2:].lower()
    ranks = RANK_SUFFIXES.get(suffix)
    if ranks is None or ndim in ranks:
        return None
    takes = " or ".join(f"{r}-D" for r in ranks)
    return f"{cls_name} takes {takes} input (its name ends in {cls_name[-2:]}), not {ndim}-D"


def _find(m: nn.Module, names: tuple[str, ...]) -> tuple[str, torch.Tensor] | None:
    for attr in names:
        t = getattr(m, attr, None)
        if isinstance(t, torch.Tensor):
            return attr, t
    return None


def _set_parameter(
    m: nn.Module, owner: str, names: tuple[str, ...], value: np.ndarray | None, p: Problem, device: str
) -> torch.Tensor | None:
    """The module's parameter under one of ``names``, set to the case's ``value`` (None: unused)."""
    if value is None:
        return None
    found = _find(m, names)
    if found is None:
        wanted = " or ".join(repr(n) for n in names)
        raise AttributeError(f"{owner} has no parameter {wanted} for the case's {names[0]} of shape {value.shape}")
    attr, t = found
    if t.numel() != value.size:
        raise ValueError(f"{owner}.{attr} has shape {tuple(t.shape)}; the case's {names[0]} has shape {value.shape}")
    if not t.requires_grad:
        raise ValueError(f"{owner}.{attr} does not require grad: make it an nn.Parameter")
    with torch.no_grad():
        t.copy_(tensor(value, p.dtype, device).reshape(t.shape))
    return t


def _buffer(m: nn.Module, owner: str, attr: str) -> torch.Tensor:
    t = getattr(m, attr, None)
    if not isinstance(t, torch.Tensor):
        raise AttributeError(f"{owner} has no buffer {attr!r} for the running statistics")
    return t


class ModuleImplementation(TorchImplementation):
    """An nn.Module subclass, constructed for every case like the torch.nn layer."""

    def __init__(self, op: str, name: str, cls: type, omit_defaults: bool) -> None:
        self.cls, self.omit_defaults = cls, omit_defaults
        self.owner = getattr(cls, "__name__", str(cls))
        # a module is told the normalized sizes, and does its own permute for other axes (LayerNorm2d)
        super().__init__(op, name, self._bind_module, USER_EXTENSIONS | {CUMULATIVE, AXES})

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.op == ADALN and not self.omit_defaults and takes(self.cls, MODULATION_ROLES["eps"]) is None:
            return f"{self.owner}(...) takes no eps: its own eps is checked in the defaults call style only"
        return rank_problem(self.owner, len(problem.shape))

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        out = super().run(problem, layout, device)
        # a weight kept as (1, C, 1, 1) has its gradient in that shape: compare it as (C,)
        for check, value in (("grad_weight", problem.weight), ("grad_bias", problem.bias)):
            if value is not None and check in out.values and out.values[check].size == value.size:
                out.values[check] = out.values[check].reshape(value.shape)
        return out

    def _bind_module(self, p: Problem, device: str) -> Bound:
        if p.op == ADALN:
            return self._bind_modulation(p, device)
        args, kwargs = constructor_call(p, self.omit_defaults)
        m = self.cls(*args, **kwargs)
        if not isinstance(m, nn.Module):
            raise TypeError(f"{self.owner}(...) returned a {type(m).__name__}, not an nn.Module")
        m = m.to(device=device, dtype=TORCH_DTYPES[weight_dtype(p)])  # float32 under a float32-weight policy
        weight = _set_parameter(m, self.owner, ("weight", "gamma"), p.weight, p, device)
        bias = _set_parameter(m, self.owner, ("bias", "beta"), p.bias, p, device)
        running = p.params.running_stats

        def statistics() -> None:
            # read after every call: code that assigns new tensors to its buffers replaces them
            if running:
                bound.running_mean = _buffer(m, self.owner, "running_mean")
                bound.running_var = _buffer(m, self.owner, "running_var")

        def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
            y = m.train(train)(x)
            statistics()
            return y

        def fused(x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return m.train(True)(x, residual)  # vLLM's RMSNorm.forward(x, residual) -> (out, residual)

        bound = Bound(forward, weight, bias, fused=fused if p.op in FUSED_BASE else None)
        if p.params.quant is not None:  # FP8 output: m(x) -> (q, scale)
            bound.quantized_call = quantized.module_call(m, p, device)
            bound.quantized = quantized.reader(bound.quantized_call, p)
        statistics()
        return bound

    def _bind_modulation(self, p: Problem, device: str) -> Bound:
        """adaLN as a module: ``cls(D, eps=...)`` (eps left out in the defaults call style), called as
        ``forward(x, shift, scale)``. Its own (D,) weight and bias, which adaLN's norm has none of,
        get ``stray_affine``'s values, so a layer norm's affine left in shows."""
        width = p.shape[-1]
        eps_name = takes(self.cls, MODULATION_ROLES["eps"])
        kwargs = {} if self.omit_defaults or eps_name is None else {eps_name: p.eps}
        m = self.cls(width, **kwargs)
        if not isinstance(m, nn.Module):
            raise TypeError(f"{self.owner}(...) returned a {type(m).__name__}, not an nn.Module")
        m = m.to(device=device, dtype=TORCH_DTYPES[p.dtype])
        stray = dict(zip(("weight", "bias"), stray_affine(width, p.dtype), strict=True))
        with torch.no_grad():
            for pname, param in m.named_parameters():
                kind = pname.rpartition(".")[2]
                if kind in stray and tuple(param.shape) == (width,):
                    param.copy_(tensor(stray[kind], p.dtype, device))
        call = bind_modulation(m.forward, self.owner + ".forward")
        scale, shift = leaf(p.weight, p, device), leaf(p.bias, p, device)
        return Bound(lambda x, train: call.call(m.train(True), x, shift, scale, None), scale, shift)


class ModulationFunction(TorchImplementation):
    """adaLN as a function, ``fn(x, shift, scale, eps)`` bound by its names (normcheck.user.modulation),
    always given eps where it takes one (the defaults call style: DiT's 1e-6), as fused kernels are."""

    def __init__(self, op: str, name: str, fn: Callable, omit_defaults: bool) -> None:
        self.fn, self.omit_defaults = fn, omit_defaults
        self.label = getattr(fn, "__name__", name)
        self.call = bind_modulation(fn, self.label)  # BindingError here: a usage error at load, not a row per case
        super().__init__(op, name, self._bind, USER_EXTENSIONS)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if not self.omit_defaults and not self.call.takes_eps:
            return f"{self.label} takes no eps parameter: its own eps is checked in the defaults call style only"
        return None

    def _bind(self, p: Problem, device: str) -> Bound:
        scale, shift = leaf(p.weight, p, device), leaf(p.bias, p, device)
        return Bound(lambda x, train: self.call.call(self.fn, x, shift, scale, p.eps), scale, shift)
