"""The known mistakes of Weight Standardization (``ws``, ``ws_gn``): each re-runs the case's
reference (normcheck.reference_ws) with the weight standardized the mistaken way, through the
convolution and, for ``ws_gn``, the group norm after it.

They are tried on ws cases instead of the plain ops' library (whose mistakes are those of a
normalization of x; here x is convolved, and the weight is what is normalized). Formula
mistakes: the paper's original convention where the reference's is checked (and back), the
variance Bessel-corrected, eps outside the square root, missing or of another value, the
statistics over the wrong axes, no standardization, the mean not subtracted, no gradient through
the statistics. Numeric ones, for half inputs: the statistics rounded to the input dtype (PyTorch's
CPU ``batch_norm`` kernel, so timm's StdConv2d), and the whole standardization in the input dtype
(``torch.var_mean`` on a half weight, BiT's StdConv2d), where the variance may overflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from normcheck.diagnosis.hypotheses import NUMERIC, Context, Hypothesis, Prediction
from normcheck.dtypes import HALF, compute_dtype, quantize
from normcheck.ops.weight_standardization import (
    PAPER,
    PAPER_CONVENTION,
    REFERENCE,
    WS_OPS,
    Standardization,
    convention,
)
from normcheck.problem import Problem
from normcheck.reference_ws import conv_weight, ws_reference

# eps values WS code uses: timm's StdConv2d (1e-6), BiT's (1e-10), the paper's (1e-5, also
# nn.GroupNorm's), 1e-8 (common in hand-written code), normcheck's explicit 1e-4, and 1e-3
KNOWN_EPS = {1e-6: "timm's StdConv2d", 1e-10: "BiT's StdConv2d", 1e-5: "the WS paper's code", 1e-8: "", 1e-3: ""}
PAPER_EPS = 1e-5  # hard-coded in the paper's Conv2d: std + 1e-5


def applies(problem: Problem) -> bool:
    return problem.op in WS_OPS


def _predict(
    ctx: Context, title: str, how: Standardization, fix: str, drop: tuple[str, ...] = (), eps: float | None = None
) -> list[Prediction]:
    """The case re-run under ``how`` (in float64; as witness in the compute dtype, its intermediates
    stored in the input dtype: how far a careful implementation of the mistake may land)."""
    p = ctx.problem if eps is None else replace(ctx.problem, eps=eps)
    with np.errstate(all="ignore"):
        values = ws_reference(p, how=how)
        witness = ws_reference(p, compute_dtype(p.dtype), how=how, store=p.dtype)
    keep = [k for k in values if k not in drop]
    return [
        Prediction(
            title,
            {k: values[k] for k in keep},
            witness={k: quantize(witness[k], p.dtype) for k in keep},
            fix=fix,
        )
    ]


def _variant(ctx: Context) -> str | None:
    return ctx.problem.params.variant


_REFERENCE_FIX = (
    "standardize with the population variance and eps inside the square root, (W - mean) / sqrt(var + eps), "
    "as timm's and BiT's StdConv2d do"
)


def _paper_convention(ctx: Context) -> list[Prediction]:
    """The paper's code checked against the reference convention: its case eps, and its own 1e-5."""
    if _variant(ctx) == PAPER:
        return []
    title = (
        "the WS paper's original convention: (W - mean) / (std + eps) with the Bessel-corrected std "
        "(torch.std's default); check it with --variant paper if that is intended"
    )
    preds = _predict(ctx, title, PAPER_CONVENTION, _REFERENCE_FIX)
    if not np.isclose(ctx.problem.eps, PAPER_EPS, rtol=1e-6, atol=0):
        title_eps = title.replace("std + eps", f"std + {PAPER_EPS:g}")
        preds += _predict(ctx, title_eps, PAPER_CONVENTION, _REFERENCE_FIX, eps=PAPER_EPS)
    return preds


def _reference_convention(ctx: Context) -> list[Prediction]:
    if _variant(ctx) != PAPER:
        return []
    title = (
        "the timm/BiT convention, (W - mean) / sqrt(var + eps) with the population variance, where "
        "--variant paper checks the paper's (W - mean) / (unbiased std + eps)"
    )
    fix = "drop --variant paper: the code follows the timm/BiT convention"
    return _predict(ctx, title, REFERENCE, fix)


def _unbiased(ctx: Context) -> list[Prediction]:
    if _variant(ctx) == PAPER:
        title = "the population std (tf.keras.backend.std, the paper's TensorFlow code) where the unbiased one is due"
        fix = "divide by the Bessel-corrected std, as the paper's PyTorch code (w.std()) does"
        return _predict(ctx, title, replace(PAPER_CONVENTION, unbiased=False), fix)
    title = "the weight's variance divides by n-1 (Bessel-corrected) instead of n"
    fix = "use the population variance: torch.var_mean(w, dim=(1, 2, 3), unbiased=False) or F.batch_norm"
    return _predict(ctx, title, replace(REFERENCE, unbiased=True), fix)


def _eps_place(ctx: Context) -> list[Prediction]:
    if _variant(ctx) == PAPER:
        title = "eps inside the square root, 1/sqrt(var + eps), where the paper adds it to the std"
        fix = "add eps to the std: (W - mean) / (std + eps)"
        return _predict(ctx, title, replace(PAPER_CONVENTION, eps_outside=False), fix)
    title = "eps added outside the square root: (W - mean) / (sqrt(var) + eps)"
    fix = "add eps to the variance: 1/sqrt(var + eps)"
    preds = _predict(ctx, title, replace(REFERENCE, eps_outside=True), fix)
    return preds + [_sqrt_at_zero(pred, ctx.problem) for pred in preds if _constant_rows(ctx.problem).any()]


def _constant_rows(p: Problem) -> np.ndarray:
    """Per output channel, whether the weight is constant (zero variance), shaped (O, 1, 1, 1)."""
    w = np.asarray(conv_weight(p), dtype=np.float64)
    return w.max(axis=(1, 2, 3), keepdims=True) == w.min(axis=(1, 2, 3), keepdims=True)


def _sqrt_at_zero(pred: Prediction, p: Problem) -> Prediction:
    """``pred`` with the weight gradient of each constant row NaN: ``torch.sqrt(var)`` has an
    infinite derivative at 0, times the variance's zero derivative there (``torch.std`` instead
    takes 0, the case the prediction already holds)."""

    def nan_rows(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "grad_weight" not in values:
            return values
        grad = np.where(_constant_rows(p), np.nan, values["grad_weight"])
        return {**values, "grad_weight": grad}

    note = "the constant rows' weight gradient NaN: sqrt's derivative at 0 is infinite"
    return replace(pred, values=nan_rows(pred.values), witness=nan_rows(pred.witness or {}), note=note)


def _eps_missing(ctx: Context) -> list[Prediction]:
    how = convention(_variant(ctx))
    return _predict(ctx, "eps missing in the weight's standardization", replace(how, eps=0.0), "add eps")


def _eps_value(ctx: Context) -> list[Prediction]:
    p, how = ctx.problem, convention(_variant(ctx))
    preds: list[Prediction] = []
    for eps, whose in KNOWN_EPS.items():
        if np.isclose(eps, p.eps, rtol=1e-6, atol=0):
            continue
        title = f"the weight's eps is {eps:g}" + (f" ({whose})" if whose else "") + f" instead of {p.eps:g}"
        preds += _predict(ctx, title, replace(how, eps=eps), "use the eps the layer is given")
    return preds


# the weight's axes: (O, I, kh, kw)
_AXES = {
    (0, 2, 3): "per input channel, over (out, kh, kw)",
    (0, 1, 2, 3): "over the whole weight tensor",
    (2, 3): "per output and input channel, over the kernel window (kh, kw) only",
    (1,): "per output channel and kernel position, over the input channels only",
}


def _axes(ctx: Context) -> list[Prediction]:
    how = convention(_variant(ctx))
    shape = np.shape(conv_weight(ctx.problem))
    preds: list[Prediction] = []
    for axes, words in _AXES.items():
        if int(np.prod([shape[a] for a in axes])) < 2:
            continue  # one value per statistic: nothing to standardize, not a mistake anyone ships
        title = f"the weight standardized over the wrong axes: {words}, not per output channel over (in, kh, kw)"
        fix = "take the mean and variance per output channel, over dims (1, 2, 3) of the (O, I, kh, kw) weight"
        preds += _predict(ctx, title, replace(how, axes=axes), fix)
    return preds


def _not_standardized(ctx: Context) -> list[Prediction]:
    title = "the weight is not standardized: a plain convolution with the raw weight"
    return _predict(ctx, title, replace(REFERENCE, off=True), "standardize the weight before the convolution")


def _mean_kept(ctx: Context) -> list[Prediction]:
    how = convention(_variant(ctx))
    title = "the weight's mean is not subtracted: W / sqrt(mean(W^2) + eps)"
    return _predict(ctx, title, replace(how, center=False), "subtract the per-output-channel mean first")


def _cut(what: str) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        how = convention(_variant(ctx))
        stats = "mean and variance" if what == "both" else what
        title = (
            f"no gradient flows through the weight's {stats} (detached, e.g. computed under torch.no_grad "
            "or from weight.data): the raw weight's gradient misses the standardization's terms"
        )
        fix = "let autograd see the statistics: compute them from the weight itself, not weight.data or .detach()"
        return _predict(ctx, title, replace(how, cut=what), fix, drop=("forward",))

    return predict


def _half(ctx: Context) -> bool:
    return ctx.problem.dtype in HALF


def _simulated(ctx: Context, title: str, how: Standardization, fix: str) -> list[Prediction]:
    """A rounding the reference leaves out, simulated in float32 with the case's intermediates
    stored in the input dtype, in two summation orders (the other order is its witness)."""
    p = ctx.problem
    with np.errstate(all="ignore"):
        runs = [ws_reference(p, np.float32, how=how, store=p.dtype, by_tap=tap) for tap in (False, True)]
    values, witness = ({k: quantize(v, p.dtype) for k, v in run.items()} for run in runs)
    return [Prediction(title, values, witness=witness, fix=fix)]


def _stats_rounded(ctx: Context) -> list[Prediction]:
    if not _half(ctx):
        return []
    dtype = ctx.problem.dtype
    how = replace(convention(_variant(ctx)), rounding=dtype)
    title = (
        f"the weight's mean and 1/std rounded to {dtype} before standardizing (and saved so for the backward), "
        f"as PyTorch's CPU batch_norm kernel does for {dtype} input"
    )
    fix = "compute the standardization in float32 (weight.float()) and cast the standardized weight back"
    return _simulated(ctx, title, how, fix)


def _half_arithmetic(ctx: Context) -> list[Prediction]:
    if not _half(ctx) or _variant(ctx) == PAPER:
        return []
    dtype = ctx.problem.dtype
    how = replace(REFERENCE, rounding=dtype, elementwise=True)
    with np.errstate(all="ignore"):
        w = np.asarray(conv_weight(ctx.problem), dtype=np.float64)
        var = np.var(w.reshape(w.shape[0], -1), axis=1)
    overflow = bool(np.any(quantize(var, dtype) == np.inf))
    title = (
        f"the standardization computed in {dtype}: torch.var_mean's statistics returned in {dtype} and "
        f"(w - m) / sqrt(v + eps) evaluated in it" + (f" (the variance overflows {dtype})" if overflow else "")
    )
    fix = "compute the weight's statistics and the standardization in float32 (weight.float()), then cast back"
    return _simulated(ctx, title, how, fix)


WS_HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis(
        "ws_paper_convention", "WS: the paper's convention (unbiased std + eps)", _paper_convention, on_case=True
    ),
    Hypothesis(
        "ws_reference_convention",
        "WS: timm/BiT's convention under --variant paper",
        _reference_convention,
        on_case=True,
    ),
    Hypothesis("ws_unbiased_variance", "WS: the weight's variance Bessel-corrected (or not)", _unbiased, on_case=True),
    Hypothesis("ws_eps_place", "WS: eps on the wrong side of the square root", _eps_place, on_case=True),
    Hypothesis("ws_eps_missing", "WS: eps missing", _eps_missing, on_case=True),
    Hypothesis("ws_eps_value", "WS: eps has the wrong value", _eps_value, on_case=True),
    Hypothesis("ws_axes", "WS: statistics over the wrong axes of the weight", _axes, on_case=True),
    Hypothesis("ws_not_standardized", "WS: the weight not standardized", _not_standardized, on_case=True),
    Hypothesis("ws_mean_not_subtracted", "WS: the weight's mean not subtracted", _mean_kept, on_case=True),
    Hypothesis("ws_grad_cut_mean", "WS: no gradient through the weight's mean", _cut("mean"), on_case=True),
    Hypothesis("ws_grad_cut_variance", "WS: no gradient through the weight's variance", _cut("variance"), on_case=True),
    Hypothesis("ws_grad_cut_stats", "WS: no gradient through the weight's statistics", _cut("both"), on_case=True),
    Hypothesis(
        "ws_stats_in_input_dtype",
        "WS: the weight's statistics rounded to the input dtype",
        _stats_rounded,
        NUMERIC,
        on_case=True,
    ),
    Hypothesis(
        "ws_half_arithmetic",
        "WS: the standardization computed in the half dtype",
        _half_arithmetic,
        NUMERIC,
        on_case=True,
    ),
)

__all__ = ["WS_HYPOTHESES", "applies"]
