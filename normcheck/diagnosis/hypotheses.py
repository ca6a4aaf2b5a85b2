"""The library of known mistakes: each predicts what an implementation making it would output.

A hypothesis may make several predictions (eps: each other framework's default). Predictions
cover the checks the mistake changes; every other check keeps the reference's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from normcheck.diagnosis.model import AFFINE_ORDER, AFFINE_SWAPPED, Variant, fitted_variance, outputs
from normcheck.dtypes import EPS, compute_dtype, quantize
from normcheck.frameworks import CONVENTIONS
from normcheck.ops import OPS, Normalization
from normcheck.problem import Problem
from normcheck.reference import reference

try:  # bfloat16 arithmetic in NumPy (installed with TensorFlow and JAX)
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:  # pragma: no cover - without it, bfloat16 accumulation is not modelled
    _BFLOAT16 = None

RUNNING = ("running_mean", "running_var")


@dataclass
class Context:
    problem: Problem
    expected: dict[str, np.ndarray]  # the reference's outputs
    got: dict[str, np.ndarray]  # the implementation's outputs

    @property
    def running(self) -> tuple[np.ndarray, np.ndarray] | None:
        if "running_mean" not in self.expected:
            return None
        return self.expected["running_mean"], self.expected["running_var"]

    @property
    def training(self) -> bool:
        p = self.problem.params
        return not (p.running_stats and p.mode == "eval")

    def model(self, variant: Variant) -> dict[str, np.ndarray]:
        return outputs(self.problem, variant, self.running)

    def predict(self, title: str, variant: Variant, drop: tuple[str, ...] = ()) -> list[Prediction]:
        values = self.model(variant)
        witness = outputs(self.problem, variant, self.running, compute_dtype(self.problem.dtype))
        witness = {k: quantize(v, self.problem.dtype) for k, v in witness.items()}
        keep = [k for k in values if k not in drop]
        return [Prediction(title, {k: values[k] for k in keep}, witness={k: witness[k] for k in keep})]


@dataclass
class Prediction:
    title: str
    values: dict[str, np.ndarray]
    only: tuple[str, ...] | None = None  # judge these checks alone (the rest cannot be predicted)
    note: str = ""  # more evidence, appended to the diagnosis
    problem: Problem | None = None  # the mistaken case, when it is the reference on other inputs:
    # its conditioning sets the tolerance (a tiny running variance makes evaluation sensitive)
    witness: dict[str, np.ndarray] | None = None  # the mistaken formula in the case's compute
    # precision: how far from ``values`` a careful implementation of the mistake may land


@dataclass(frozen=True)
class Hypothesis:
    id: str
    title: str
    predict: Callable[[Context], list[Prediction]] = field(repr=False)


def _one(title: str, values: dict[str, np.ndarray] | None) -> list[Prediction]:
    return [] if values is None else [Prediction(title, values)]


def _norm(ctx: Context) -> Normalization:
    return OPS[ctx.problem.op].normalization(ctx.problem.shape, ctx.problem.params)


def _unbiased(ctx: Context) -> list[Prediction]:
    if not ctx.training or not _norm(ctx).center or _norm(ctx).count < 2:
        return []
    return ctx.predict("variance divides by N-1 (Bessel-corrected) instead of N", Variant(correction=True))


def _eps_outside(ctx: Context) -> list[Prediction]:
    return ctx.predict("eps added outside the square root: 1/(sqrt(var) + eps)", Variant(eps_outside=True))


def _eps_missing(ctx: Context) -> list[Prediction]:
    return ctx.predict("eps missing: 1/sqrt(var)", Variant(eps=0.0))


def _known_eps(dtype: str) -> dict[float, str]:
    """Every framework's default eps for the case's dtype, with the APIs that use it."""
    found: dict[float, list[str]] = {}
    for convs in CONVENTIONS.values():
        for conv in convs.values():
            found.setdefault(conv.default_eps(dtype), []).append(conv.api)
    for eps in (1e-5, 1e-6, 1e-3, 1e-12):
        found.setdefault(eps, [])
    return {eps: ", ".join(dict.fromkeys(apis)) for eps, apis in found.items()}


def _eps_value(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    preds = []
    for eps, apis in _known_eps(p.dtype).items():
        if eps <= 0 or np.isclose(eps, p.eps, rtol=1e-6, atol=0):
            continue
        whose = f" (the default of {apis})" if apis else ""
        preds += ctx.predict(f"eps is {eps:g}{whose} instead of {p.eps:g}", Variant(eps=eps))
    return preds


def _one_pass(ctx: Context) -> list[Prediction]:
    """Cancellation errors are not reproducible elementwise (they depend on summation order), so
    the evidence is the variance the implementation used, read back from its forward output:
    it reproduces the output, and it errs by as much as E[x^2] - E[x]^2 in a low precision can
    and far more than a two-pass variance can."""
    p = ctx.problem
    if not ctx.training or "forward" not in ctx.got:
        return []
    norm = _norm(ctx)
    if not norm.center:
        return []
    used = fitted_variance(p, ctx.got["forward"])
    if used is None:
        return []
    X = np.asarray(p.x, dtype=np.float64).reshape(norm.view)
    mean = X.mean(axis=norm.axes, keepdims=True)
    true_var = ((X - mean) ** 2).mean(axis=norm.axes, keepdims=True)
    mean_sq = (X * X).mean(axis=norm.axes, keepdims=True)
    err = np.abs(used - true_var)
    if not np.isfinite(err).any():
        return []
    worst = int(np.nanargmax(err))
    for dtype in dict.fromkeys(("float32" if p.dtype != "float64" else "float64", p.dtype)):
        one_pass_bound = 4.0 * norm.count * EPS[dtype] * mean_sq.flat[worst]
        two_pass_bound = 4.0 * norm.count * EPS[dtype] * true_var.flat[worst] + 1e-300
        if two_pass_bound * 10 < err.flat[worst] <= one_pass_bound:
            note = (
                f"the variance it used errs by up to {err.flat[worst]:.2g}; one-pass E[x^2]-E[x]^2 in {dtype} "
                f"can err by {one_pass_bound:.2g} here, two-pass by {two_pass_bound:.2g}"
            )
            values = ctx.model(Variant(var=used))
            return [Prediction(f"one-pass variance E[x^2] - E[x]^2 in {dtype}", values, ("forward",), note)]
    return []


def _interleaved(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    g = p.params.groups
    if p.op != "gn" or g is None or not 1 < g < p.shape[1] or not ctx.training:
        return []
    return ctx.predict("channels grouped in the wrong order: channel c in group c % G", Variant(interleaved=True))


def _axes(extra: str) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        if not ctx.training:
            return []
        norm = _norm(ctx)
        last = len(norm.view) - 1
        if extra == "batch":
            axes = tuple(sorted({0, *norm.axes}))
            title = "statistics over the batch too"
        elif extra == "channels":
            if ctx.problem.op not in ("bn", "in", "gn") or len(norm.view) < 2:
                return []
            axes = tuple(sorted({1, *norm.axes}))
            title = "statistics over the channels too"
        else:
            axes = (last,)
            title = "statistics over the last axis only"
        if axes == tuple(norm.axes) or int(np.prod([norm.view[a] for a in axes])) < 1:
            return []
        return ctx.predict(title, Variant(axes=axes))

    return predict


def _rerun(title: str, problem: Problem, drop: tuple[str, ...] = ()) -> Prediction:
    with np.errstate(all="ignore"):
        values = reference(problem)
    return Prediction(title, {k: v for k, v in values.items() if k not in drop}, problem=problem)


def _momentum(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if not p.params.running_stats or np.isclose(p.momentum, 0.5):
        return []
    m = 1.0 - p.momentum
    title = f"momentum inverted: running = {p.momentum:g}*running + {m:g}*batch"
    return [_rerun(title, replace(p, momentum=m))]


def _running_var(biased: bool) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        p = ctx.problem
        if not p.params.running_stats or p.unbiased_running_var != biased:
            return []
        title = (
            "running variance updated with the biased batch variance (PyTorch's is unbiased)"
            if biased
            else "running variance updated with the unbiased (N-1) batch variance where the convention is biased"
        )
        return [_rerun(title, replace(p, unbiased_running_var=not biased))]

    return predict


def _eval_batch_stats(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if not p.params.running_stats or p.params.mode != "eval":
        return []
    as_train = replace(p, params=replace(p.params, mode="train"))
    title = "evaluation normalizes with the batch statistics instead of the running ones"
    return [_rerun(title, as_train, drop=RUNNING), _rerun(title + " (and updates them)", as_train)]


def _affine(kind: str) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        if ctx.problem.weight is None or ctx.problem.bias is None:
            return []
        title = (
            "affine in the wrong order: (xhat + beta) * gamma"
            if kind == AFFINE_ORDER
            else ("weight and bias swapped: xhat * beta + gamma")
        )
        return ctx.predict(title, Variant(affine=kind))

    return predict


def _cut(what: str) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        if not ctx.training or (what != "variance" and not _norm(ctx).center):
            return []
        stats = "mean and variance" if what == "both" else what
        title = f"no gradient flows through the {stats} (detached or left out of the backward)"
        return ctx.predict(title, Variant(cut=what), drop=("forward",))

    return predict


def _half(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    dtype = {"float16": np.float16, "bfloat16": _BFLOAT16}.get(p.dtype)
    if dtype is None:
        return []
    with np.errstate(all="ignore"):
        values = reference(p, dtype)
    values = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    return _one(f"statistics and normalization computed in {p.dtype}, not float32", values)


def _center(on: bool) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        if _norm(ctx).center == on or (on and ctx.problem.op != "rms") or (not on and ctx.problem.op != "ln"):
            return []
        title = "the mean is subtracted (layer norm, not RMS norm)" if on else "the mean is not subtracted (RMS norm)"
        return ctx.predict(title, Variant(center=on))

    return predict


HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("unbiased_variance", "variance divides by N-1", _unbiased),
    Hypothesis("eps_outside_sqrt", "eps outside the square root", _eps_outside),
    Hypothesis("eps_missing", "eps missing", _eps_missing),
    Hypothesis("eps_value", "eps has the wrong value", _eps_value),
    Hypothesis("groups_interleaved", "channels grouped in the wrong order", _interleaved),
    Hypothesis("axes_batch_included", "statistics over the batch too", _axes("batch")),
    Hypothesis("axes_channels_included", "statistics over the channels too", _axes("channels")),
    Hypothesis("axes_last_only", "statistics over the last axis only", _axes("last")),
    Hypothesis("momentum_inverted", "momentum inverted", _momentum),
    Hypothesis("running_var_biased", "running variance biased", _running_var(True)),
    Hypothesis("running_var_unbiased", "running variance unbiased", _running_var(False)),
    Hypothesis("eval_batch_stats", "evaluation uses batch statistics", _eval_batch_stats),
    Hypothesis("affine_order", "affine in the wrong order", _affine(AFFINE_ORDER)),
    Hypothesis("weight_bias_swapped", "weight and bias swapped", _affine(AFFINE_SWAPPED)),
    Hypothesis("grad_cut_mean", "no gradient through the mean", _cut("mean")),
    Hypothesis("grad_cut_variance", "no gradient through the variance", _cut("variance")),
    Hypothesis("grad_cut_stats", "no gradient through mean and variance", _cut("both")),
    Hypothesis("mean_subtracted", "RMS norm subtracts the mean", _center(True)),
    Hypothesis("mean_not_subtracted", "layer norm without the mean", _center(False)),
    Hypothesis("half_accumulation", "half-precision accumulation", _half),
    Hypothesis("one_pass_variance", "one-pass variance", _one_pass),
)
