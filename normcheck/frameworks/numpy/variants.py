"""``--style cs231n`` on the ops the assignment has no function for: adaLN, the fused residual add
+ layer norm, and Weight Standardization, written in the assignment's shape of convention (a
param dict of options, an opaque cache from the forward to the backward, a backward returning
the gradients in the order of the forward's arguments):

- adaln: ``adaln_forward(x, shift, scale, ln_param) -> (out, cache)`` on (N, L, D), shift and
  scale (N, D), one row per sample (DiT's y = x̂ * (1 + scale) + shift, x̂ the layer norm over D
  without affine); ``adaln_backward(dout, cache) -> (dx, dshift, dscale)``, dshift and dscale
  (N, D) (or (N, 1, D)). ln_param holds eps (DiT's 1e-6 where left out).
- add_ln: ``add_layernorm_forward(x, residual, gamma, beta, ln_param) -> (out, residual_out,
  cache)`` on (N, D), residual_out = x + residual in x's dtype, out its layer norm over D;
  ``add_layernorm_backward(dout, dresidual_out, cache) -> (dx, dresidual, dgamma, dbeta)``
  with dout and dresidual_out the upstream gradients of both outputs. ln_param holds eps (1e-5).
- ws, ws_gn: CS231n's convolution, ``ws_conv_forward(x, w, b, conv_param) -> (out, cache)``
  with x (N, C, H, W), w the raw weight (F, C, HH, WW), b (F,) (zeros where the case has no
  bias), conv_param {'stride': 1, 'pad': p, 'eps': e}; the weight standardized per output
  filter before the convolution; ``ws_conv_backward(dout, cache) -> (dx, dw, db)``, dw the raw
  weight's gradient. For ws_gn the output goes through normcheck's own group norm (eps 1e-5,
  in float32 for float16 input) with the case's affine, and the backward is given the group
  norm's input gradient: the user's convolution checked inside GN+WS.

There is no RMS norm (nor fused add + RMS norm): the CS231n convention declares none
(normcheck.frameworks.numpy.facts). In the defaults call style the param dict has no eps (and
the case no affine: gamma ones, beta zeros, b zeros, not checked); adaLN's shift and scale are
inputs, always given.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normcheck.frameworks.base import Implementation, RunOutput
from normcheck.frameworks.numpy.calls import array, function_name, numpy_dtype, unpack
from normcheck.names import CONTIGUOUS
from normcheck.ops import OPS, OpParams, fmt_shape
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.group_norm import OP as GROUP_NORM
from normcheck.ops.weight_standardization import (
    GN_EPS,
    PAPER,
    WEIGHT_STANDARDIZATION,
    WS,
    WS_GN,
    conv_of,
    output_shape,
)
from normcheck.problem import Problem

ADD_LN = "add_ln"
VARIANT_OPS = (ADALN, ADD_LN, WS, WS_GN)
NO_BACKWARD = "no backward function was given"
# check -> the value checked
Outputs = dict[str, np.ndarray]


@dataclass
class Bound:
    """One case's calls of the user's pair, on copies of its inputs in the case's dtype:
    ``forward()`` -> (the checked outputs, the cache); ``backward(cache)`` -> the checked
    gradients. ``keep`` holds what the calls read (bench keeps it alive)."""

    forward: Callable[[], tuple[Outputs, Any]]
    backward: Callable[[Any], Outputs]
    keep: list[Any] = field(default_factory=list)


def copies(dtype: type, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Copies of ``arrays`` in ``dtype``: what one case's calls are given."""
    return tuple(np.asarray(a).astype(dtype) for a in arrays)


def build_variant(op: str, forward: Callable, backward: Callable | None, name: str, omit: bool) -> Implementation:
    if op == ADALN:
        return AdaLNPair(op, forward, backward, name, omit)
    if op == ADD_LN:
        return FusedAddPair(op, forward, backward, name, omit)
    return WSPair(op, forward, backward, name, omit)


class PairImplementation(Implementation):
    """A forward/backward pair of one of the ops above; ``bind`` gives one case's calls (what
    ``run`` checks and the NumPy bench module times)."""

    framework = "numpy"
    grads: tuple[str, ...] = ()  # the checks the backward produces (where the case has them)
    returns = ""  # what the backward returns, for messages

    def __init__(
        self, op: str, forward: Callable[..., Any], backward: Callable[..., Any] | None, name: str, omit: bool
    ) -> None:
        self.op, self.name = op, name
        self.forward, self.backward = forward, backward
        self.omit_defaults = omit
        self.forward_name = function_name(forward, name)
        self.backward_name = function_name(backward, "the backward function")

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        return dict.fromkeys(self.grads, NO_BACKWARD) if self.backward is None else {}

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        if layout != CONTIGUOUS:
            raise ValueError(f"the CS231n convention is channels-first only, not {layout}")
        bound = self.bind(problem, numpy_dtype(problem.dtype))
        values, cache = bound.forward()
        if self.backward is not None:
            values = {**values, **bound.backward(cache)}
        out = RunOutput()
        for check, value in values.items():
            out.add(check, value, value.dtype.name)
        return out

    @abstractmethod
    def bind(self, problem: Problem, dtype: type) -> Bound:
        """The case's calls in ``dtype``."""

    def eps_param(self, problem: Problem, **always: Any) -> dict[str, Any]:
        """The param dict: ``always`` and, unless the defaults are meant to apply, eps."""
        return {**always} if self.omit_defaults else {**always, "eps": problem.eps}

    def call_backward(self, *args: Any) -> tuple:
        if self.backward is None:  # missing_checks leaves the gradients out then
            raise ValueError(NO_BACKWARD)
        return unpack(self.backward(*args), self.returns.count(",") + 1, self.backward_name, self.returns)

    def row_shaped(self, value: object, label: str, shapes: tuple[tuple[int, ...], ...]) -> np.ndarray:
        """A parameter's gradient in the first of ``shapes`` (the canonical one); any of them is accepted."""
        grad = array(value, self.backward_name, label)
        if grad.shape not in shapes:
            expected = " or ".join(str(s) for s in dict.fromkeys(shapes))
            raise ValueError(f"{self.backward_name} returned {label} of shape {grad.shape}, expected {expected}")
        return grad.reshape(shapes[0])


# -- adaLN ---------------------------------------------------------------------------------


class AdaLNPair(PairImplementation):
    """``adaln_forward(x, shift, scale, ln_param)``, ``adaln_backward(dout, cache) -> (dx, dshift,
    dscale)``: scale is the case's weight and shift its bias, so their gradients are grad_weight and
    grad_bias (reports name them grad_scale and grad_shift), as the other forms give them."""

    grads = ("grad_input", "grad_weight", "grad_bias")
    returns = "(dx, dshift, dscale)"

    def bind(self, problem: Problem, dtype: type) -> Bound:
        if problem.weight is None or problem.bias is None:
            raise ValueError("an adaptive layer norm case has a shift and a scale")
        n, _, d = problem.shape
        x, shift, scale, dout = copies(dtype, problem.x, problem.bias, problem.weight, problem.dy)
        param = self.eps_param(problem)
        shapes = ((n, d), (n, 1, d))

        def forward() -> tuple[Outputs, Any]:
            out, cache = unpack(self.forward(x, shift, scale, param), 2, self.forward_name, "(out, cache)")
            return {"forward": array(out, self.forward_name, "out")}, cache

        def backward(cache: Any) -> Outputs:
            dx, dshift, dscale = self.call_backward(dout, cache)
            return {
                "grad_input": array(dx, self.backward_name, "dx"),
                "grad_weight": self.row_shaped(dscale, "dscale", shapes),
                "grad_bias": self.row_shaped(dshift, "dshift", shapes),
            }

        return Bound(forward, backward, [x, shift, scale, dout, param])


# -- fused residual add + layer norm ---------------------------------------------------------


class FusedAddPair(PairImplementation):
    """``add_layernorm_forward(x, residual, gamma, beta, ln_param) -> (out, residual_out, cache)``,
    ``add_layernorm_backward(dout, dresidual_out, cache) -> (dx, dresidual, dgamma, dbeta)`` on
    (N, D), as CS231n's layernorm_forward; gamma ones and beta zeros where the case has no affine
    (their gradients then not checked)."""

    extensions = frozenset({FUSED_ADD})
    grads = ("grad_input", "grad_residual", "grad_weight", "grad_bias")
    returns = "(dx, dresidual, dgamma, dbeta)"

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        f, shape = self.forward_name, fmt_shape(problem.shape)
        if len(problem.shape) != 2:
            return (
                f"{f} takes (N, D) input in the CS231n convention, as layernorm_forward, not {shape} "
                "(a transformer's (N, L, D) stream is given as (N*L, D))"
            )
        if problem.params.normalized_ndim != 1:
            k = problem.params.normalized_ndim
            return f"{f} normalizes each row of (N, D) over D; it cannot normalize the last {k} dims of {shape}"
        return None

    def bind(self, problem: Problem, dtype: type) -> Bound:
        pshape = OPS[self.op].param_shape(problem.shape, problem.params)
        residual, dresidual = problem.fused_inputs()
        gamma = problem.weight if problem.weight is not None else np.ones(pshape)
        beta = problem.bias if problem.bias is not None else np.zeros(pshape)
        x, r, g, b, dout, dh = copies(dtype, problem.x, residual, gamma, beta, problem.dy, dresidual)
        param = self.eps_param(problem)
        with_weight, with_bias = problem.weight is not None, problem.bias is not None

        def forward() -> tuple[Outputs, Any]:
            result = self.forward(x, r, g, b, param)
            out, h, cache = unpack(result, 3, self.forward_name, "(out, residual_out, cache)")
            return {
                "forward": array(out, self.forward_name, "out"),
                "residual_out": array(h, self.forward_name, "residual_out"),
            }, cache

        def backward(cache: Any) -> Outputs:
            dx, dr, dgamma, dbeta = self.call_backward(dout, dh, cache)
            grads = {
                "grad_input": array(dx, self.backward_name, "dx"),
                "grad_residual": array(dr, self.backward_name, "dresidual"),
            }
            if with_weight:
                grads["grad_weight"] = self.row_shaped(dgamma, "dgamma", (pshape,))
            if with_bias:
                grads["grad_bias"] = self.row_shaped(dbeta, "dbeta", (pshape,))
            return grads

        return Bound(forward, backward, [x, r, g, b, dout, dh, param])


# -- Weight Standardization ------------------------------------------------------------------


@dataclass(frozen=True)
class GroupNormAfter:
    """ws_gn's group norm on the convolution's output: normcheck's formulas (the reference's
    Normalization) in ``compute`` (float32 for float16, as PyTorch's CPU kernel), with the
    case's affine in the case's dtype."""

    groups: int
    dtype: type
    weight: np.ndarray | None
    bias: np.ndarray | None

    @property
    def compute(self) -> type:
        return np.float32 if self.dtype is np.float16 else self.dtype

    def forward(self, y: np.ndarray) -> tuple[np.ndarray, Any]:
        norm = GROUP_NORM.normalization(y.shape, OpParams(groups=self.groups))
        out, cache = norm.forward(y, GN_EPS, self.weight, self.bias, dtype=self.compute)
        return out.astype(self.dtype), (norm, cache)

    def backward(self, dout: np.ndarray, saved: Any) -> tuple[np.ndarray, Outputs]:
        """The convolution output's gradient in the case's dtype, and the affine's gradients."""
        norm, cache = saved
        grads = norm.backward(dout, cache, dtype=self.compute)
        affine = {}
        if grads.dweight is not None:
            affine["grad_gn_weight"] = grads.dweight.astype(self.dtype)
        if grads.dbias is not None:
            affine["grad_gn_bias"] = grads.dbias.astype(self.dtype)
        return grads.dx.astype(self.dtype), affine


class WSPair(PairImplementation):
    """``ws_conv_forward(x, w, b, conv_param) -> (out, cache)``, ``ws_conv_backward(dout, cache) ->
    (dx, dw, db)`` in CS231n's convolution convention; for ws_gn followed by normcheck's group
    norm (``GroupNormAfter``), the gradient composed through it. b is zeros where the case has
    no bias (ws_gn never has one), db then not checked."""

    # the user's code computes whatever convention it follows: the paper's variant runs it too
    extensions = frozenset({WEIGHT_STANDARDIZATION, PAPER})
    grads = ("grad_input", "grad_weight", "grad_bias", "grad_gn_weight", "grad_gn_bias")
    returns = "(dx, dw, db)"

    def bind(self, problem: Problem, dtype: type) -> Bound:
        if problem.weight is None:
            raise ValueError("a weight-standardization case has a weight")
        o, _, pad = conv_of(problem.params)
        b = problem.bias if problem.bias is not None else np.zeros(o)
        x, w, b, dout = copies(dtype, problem.x, problem.weight, b, problem.dy)
        param = self.eps_param(problem, stride=1, pad=pad)
        want = output_shape(problem.shape, problem.params)
        gn = None
        if self.op == WS_GN:
            groups = problem.params.groups
            if groups is None:
                raise ValueError("a ws_gn case has its group norm's G")
            gw: np.ndarray | None = None if problem.gn_weight is None else problem.gn_weight.astype(dtype)
            gb: np.ndarray | None = None if problem.gn_bias is None else problem.gn_bias.astype(dtype)
            gn = GroupNormAfter(groups, dtype, gw, gb)
        with_bias = problem.bias is not None

        def forward() -> tuple[Outputs, Any]:
            out, cache = unpack(self.forward(x, w, b, param), 2, self.forward_name, "(out, cache)")
            y = array(out, self.forward_name, "out")
            if gn is None:
                return {"forward": y}, cache
            if y.shape != want:
                raise ValueError(f"{self.forward_name} returned out of shape {y.shape}, expected {want}")
            z, saved = gn.forward(y)
            return {"forward": z}, (cache, saved)

        def backward(cache: Any) -> Outputs:
            affine: Outputs = {}
            upstream = dout
            if gn is not None:
                cache, saved = cache
                upstream, affine = gn.backward(dout, saved)
            dx, dw, db = self.call_backward(upstream, cache)
            grads = {
                "grad_input": array(dx, self.backward_name, "dx"),
                "grad_weight": array(dw, self.backward_name, "dw"),
            }
            if with_bias:
                grads["grad_bias"] = self.row_shaped(db, "db", ((o,),))
            return {**grads, **affine}

        return Bound(forward, backward, [x, w, b, dout, param])


__all__ = ["VARIANT_OPS", "AdaLNPair", "Bound", "FusedAddPair", "PairImplementation", "WSPair", "build_variant"]
