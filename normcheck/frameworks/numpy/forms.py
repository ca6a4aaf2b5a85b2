"""``--style cs231n``: NumPy functions in the convention of CS231n assignment 2 (cs231n/layers.py).

A forward ``forward(x, gamma, beta, [G,] param) -> (out, cache)`` and a backward
``backward(dout, cache) -> (dx, dgamma, dbeta)``, where ``param`` is a dict of options:

- bn: ``batchnorm_forward(x, gamma, beta, bn_param)`` on (N, D), or ``spatial_batchnorm_forward``
  (a name containing "spatial") on (N, C, H, W); gamma (D,) or (C,). bn_param holds mode
  ('train' or 'test'), eps, momentum (the weight of the old value) and the running statistics,
  which the function writes back into it.
- ln: ``layernorm_forward(x, gamma, beta, ln_param)`` on (N, D) over D; gamma (D,).
- gn: ``spatial_groupnorm_forward(x, gamma, beta, G, gn_param)`` on (N, C, H, W); gamma (1, C, 1, 1).

There is no instance or RMS norm. The cache is opaque: it goes from the forward to the backward.
The same convention for adaLN, the fused residual add + layer norm and Weight Standardization
(adaln, add_ln, ws, ws_gn) is normcheck.frameworks.numpy.variants'.

These functions are checked in float64 and float32 unless ``--dtype`` names others (the form's
``dtypes`` in the registry): NumPy has no bfloat16, and it computes float16 in float16, every
step rounded, where frameworks compute half types in float32; half rows would judge NumPy's
arithmetic, not the formula. ``--dtype float16`` still runs them, for code meant to run in it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from normcheck.frameworks.base import Implementation, RunOutput
from normcheck.frameworks.numpy.calls import array, function_name, numpy_dtype, unpack
from normcheck.frameworks.numpy.facts import CS231N
from normcheck.frameworks.numpy.variants import VARIANT_OPS, build_variant
from normcheck.names import CONTIGUOUS
from normcheck.ops import OPS, fmt_shape
from normcheck.ops._op import broadcast_channels
from normcheck.problem import Problem

PARAM_DICTS = {"bn": "bn_param", "ln": "ln_param", "gn": "gn_param"}
GRADS = ("grad_input", "grad_weight", "grad_bias")


def build(
    form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object | None
) -> Implementation | None:
    if op not in PARAM_DICTS and op not in VARIANT_OPS:
        return None
    # normcheck.user.detect_form gives a style callables only; the backward is the user's --backward
    if not callable(obj):
        raise TypeError(f"the CS231n forward must be a function, not a {type(obj).__name__}")
    if backward is not None and not callable(backward):
        raise TypeError(f"the CS231n backward must be a function, not a {type(backward).__name__}")
    if op in VARIANT_OPS:
        return build_variant(op, obj, backward, name, omit_defaults)
    return Cs231nImplementation(op, obj, backward, name, omit_defaults)


class Cs231nImplementation(Implementation):
    """A forward/backward pair; every call gets copies of the inputs in the case's dtype.

    ``affine``, ``param_dict`` and ``call_forward`` are the steps of one forward call, which the
    NumPy bench module times on their own."""

    framework = "numpy"

    def __init__(
        self,
        op: str,
        forward: Callable[..., object],
        backward: Callable[..., object] | None,
        name: str,
        omit_defaults: bool,
    ) -> None:
        self.op, self.name = op, name
        self.forward, self.backward = forward, backward
        self.omit_defaults = omit_defaults
        self.convention = CS231N[op]
        self.forward_name = function_name(forward, name)
        self.backward_name = function_name(backward, "the backward function")
        named_spatial = "spatial" in f"{self.forward_name} {name}".lower()
        self.rank = 4 if op == "gn" or (op == "bn" and named_spatial) else 2

    # -- what the convention can express --------------------------------------
    def unsupported(self, problem: Problem, layout: str) -> str | None:
        f, shape = self.forward_name, fmt_shape(problem.shape)
        if len(problem.shape) != self.rank:
            expected = "(N, C, H, W)" if self.rank == 4 else "(N, D)"
            hint = ""
            if self.op == "bn" and len(problem.shape) in (2, 4):
                other = "a function named spatial_*" if self.rank == 2 else "one without 'spatial' in its name"
                hint = f"; {'(N, C, H, W)' if self.rank == 2 else '(N, D)'} batch norm takes {other}"
            return f"{f} takes {expected} input in the CS231n convention, not {shape}{hint}"
        if self.op == "ln" and problem.params.normalized_ndim != 1:
            k = problem.params.normalized_ndim
            return f"{f} normalizes each row of (N, D) over D; it cannot normalize the last {k} dims of {shape}"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        if self.backward is None:
            return dict.fromkeys(GRADS, "no backward function was given")
        if problem.params.running_stats and problem.params.mode == "eval":
            return dict.fromkeys(
                GRADS, "the CS231n backward is defined for training mode only (a test-mode forward returns no cache)"
            )
        return {}

    # -- running a case ---------------------------------------------------------
    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        if layout != CONTIGUOUS:
            raise ValueError(f"the CS231n convention is channels-first only, not {layout}")
        dtype = numpy_dtype(problem.dtype)
        gamma, beta = self.affine(problem, dtype)
        out = RunOutput()
        x: np.ndarray = problem.x.astype(dtype)
        params = problem.params
        if params.running_stats:
            running_mean, running_var = problem.initial_running()
            running: tuple[np.ndarray, np.ndarray] = (running_mean.astype(dtype), running_var.astype(dtype))
            for batch in problem.steps:
                _, running = self._batchnorm(problem, batch.astype(dtype), gamma, beta, "train", running)
            mode = "train" if params.mode == "train" else "test"
            (y, cache), running = self._batchnorm(problem, x, gamma, beta, mode, running)
            for check, value in zip(("running_mean", "running_var"), running, strict=True):
                out.add(check, value, value.dtype.name)
        elif self.op == "bn":
            (y, cache), _ = self._batchnorm(problem, x, gamma, beta, "train", None)
        else:
            y, cache = self.call_forward(problem, x, gamma, beta, self.param_dict(problem))
        out.add("forward", y, y.dtype.name)
        if not self.missing_checks(problem):
            self._add_grads(out, problem, dtype, cache)
        return out

    def affine(self, problem: Problem, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        """gamma and beta in ``dtype`` and the shape the convention passes (ones and zeros without affine)."""
        shape = OPS[self.op].param_shape(problem.shape, problem.params)
        gamma = problem.weight if problem.weight is not None else np.ones(shape)
        beta = problem.bias if problem.bias is not None else np.zeros(shape)
        passed = self._passed_param_shape(problem)
        return gamma.reshape(passed).astype(dtype), beta.reshape(passed).astype(dtype)

    def _passed_param_shape(self, problem: Problem) -> tuple[int, ...]:
        if self.op == "gn":
            return broadcast_channels(len(problem.shape), problem.shape[1])
        return OPS[self.op].param_shape(problem.shape, problem.params)

    def param_dict(self, problem: Problem, mode: str | None = None) -> dict:
        """The param dict the forward takes: ``mode`` (batch norm: 'train' or 'test') and, unless the
        defaults are meant to apply, eps (and batch norm's momentum, the weight of the old value)."""
        param: dict = {} if mode is None else {"mode": mode}
        if not self.omit_defaults:
            param["eps"] = problem.eps
            if self.op == "bn":
                param["momentum"] = self.convention.to_framework_momentum(problem.momentum)
        return param

    def call_forward(self, problem: Problem, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, param: dict):
        """(out, cache) of one call of the forward, ``forward(x, gamma, beta, [G,] param)``; the forward
        may write into ``param`` (batch norm's running statistics)."""
        if self.op == "gn":
            result = self.forward(x, gamma, beta, problem.params.groups, param)
        else:
            result = self.forward(x, gamma, beta, param)
        out, cache = unpack(result, 2, self.forward_name, "(out, cache)")
        return array(out, self.forward_name, "out"), cache

    def _batchnorm(self, problem, x, gamma, beta, mode, running):
        """One batch-norm call with copies of the running statistics in bn_param; the values it
        wrote back."""
        param = self.param_dict(problem, mode)
        if running is not None:
            param["running_mean"], param["running_var"] = (np.array(r, copy=True) for r in running)
        result = self.call_forward(problem, x, gamma, beta, param)
        if running is None:
            return result, None
        written = []
        for key in ("running_mean", "running_var"):
            if param.get(key) is None:
                raise ValueError(f"{self.forward_name} left no {key!r} in bn_param")
            written.append(np.array(param[key], copy=True))
        return result, tuple(written)

    def _add_grads(self, out: RunOutput, problem: Problem, dtype: type, cache: object) -> None:
        if self.backward is None:  # missing_checks leaves the gradients out then
            raise ValueError("no backward function was given")
        who = self.backward_name
        dx, dgamma, dbeta = unpack(self.backward(problem.dy.astype(dtype), cache), 3, who, "(dx, dgamma, dbeta)")
        dx = array(dx, who, "dx")
        out.add("grad_input", dx, dx.dtype.name)
        if problem.weight is None:
            return  # no affine: the case has no grad_weight/grad_bias (ones and zeros stood in)
        for check, label, value in (("grad_weight", "dgamma", dgamma), ("grad_bias", "dbeta", dbeta)):
            grad = self._param_grad(problem, array(value, who, label), label)
            out.add(check, grad, grad.dtype.name)

    def _param_grad(self, problem: Problem, grad: np.ndarray, label: str) -> np.ndarray:
        """``grad`` in the canonical parameter shape; either shape is accepted."""
        canonical = OPS[self.op].param_shape(problem.shape, problem.params)
        if grad.size != int(np.prod(canonical)):
            passed = self._passed_param_shape(problem)
            shapes = " or ".join(dict.fromkeys(str(tuple(s)) for s in (passed, canonical)))
            raise ValueError(f"{self.backward_name} returned {label} of shape {grad.shape}, expected {shapes}")
        return grad.reshape(canonical)
