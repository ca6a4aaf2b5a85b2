"""The library of known mistakes: each predicts what an implementation making it would output.

A hypothesis may make several predictions (eps: each other framework's default). Predictions
cover the checks the mistake changes; every other check keeps the reference's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from normcheck.diagnosis.kernel_limits import Limited, partial_row, row_index_wraps
from normcheck.diagnosis.model import (
    AFFINE_ORDER,
    AFFINE_SWAPPED,
    Variant,
    fitted_variance,
    fitted_variance_from_gradient,
    outputs,
)
from normcheck.diagnosis.precision import MEAN, ORDERS, RSTD, VAR, Policy, simulate
from normcheck.dtypes import EPS, HALF, compute_dtype, quantize
from normcheck.frameworks import CONVENTIONS
from normcheck.ops import OPS, Normalization
from normcheck.ops.adaptive_layer_norm import ADALN, TOKEN, modulated, stray_affine
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.ops.rms_norm import GEMMA
from normcheck.problem import Problem
from normcheck.reference import reference

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
    fix: str = ""  # what makes the implementation right
    # judged by magnitude alone: the mistake is a lower precision's rounding noise, which another
    # order of operations reproduces only in size (the tenfold cut does not apply)
    by_magnitude: bool = False


FORMULA, NUMERIC = "formula", "numeric"
# mistakes only code running over several processes can make: tried on --world-size runs only
DISTRIBUTED_ONLY = ("per_rank_statistics",)


@dataclass(frozen=True)
class Hypothesis:
    """A known mistake. ``family``: FORMULA (the math is wrong: it shows in every dtype) or
    NUMERIC (the math is right, the arithmetic loses it: precision, cancellation)."""

    id: str
    title: str
    predict: Callable[[Context], list[Prediction]] = field(repr=False)
    family: str = FORMULA
    # True: predicts on the case as it is (a mistake of an op variant or a fused op); False: on
    # the plain op the case reduces to (normcheck.diagnosis.variants), its predictions carried back
    on_case: bool = False


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
    the evidence is the variance the implementation used, read back from its forward output (or,
    for constant groups, whose output is the bias whatever the variance, from its gradient): it
    reproduces the outputs, and it errs by as much as E[x^2] - E[x]^2 in a low precision can and
    far more than a two-pass variance can. The running variance is judged by that magnitude."""
    if not _norm(ctx).center:
        return []
    if not ctx.training:  # evaluation normalizes with the running statistics the steps left
        return _one_pass_running(ctx)
    # the outputs (read-back variance) and the running variance (magnitude) are separate evidence:
    # a batch can leave the outputs within tolerance and the running variance far off, or both off
    found = _one_pass_outputs(ctx) + _one_pass_running(ctx)
    if found and "grad_input" in ctx.got:  # its backward, simulated: autograd of E[x²] - E[x]²
        dtype = "float64" if ctx.problem.dtype == "float64" else "float32"
        title = _ONE_PASS_TITLE.format(dtype) + ", differentiated as written"
        found += _simulated(ctx, title, Policy(compute=compute_dtype(ctx.problem.dtype), one_pass=True), _ONE_PASS_FIX)
    return found


def _one_pass_outputs(ctx: Context) -> list[Prediction]:
    p, norm = ctx.problem, _norm(ctx)
    if "forward" not in ctx.got:
        return []
    used = fitted_variance(p, ctx.got["forward"])
    if used is None:
        return []
    judged: tuple[str, ...] = ("forward",)
    if "grad_input" in ctx.got and not np.isfinite(used).all():  # constant groups: from the gradient
        used = np.where(np.isfinite(used), used, fitted_variance_from_gradient(p, ctx.got["grad_input"]))
        judged = ("forward", "grad_input")
    X = np.asarray(p.x, dtype=np.float64).reshape(norm.view)
    mean = X.mean(axis=norm.axes, keepdims=True)
    true_var = ((X - mean) ** 2).mean(axis=norm.axes, keepdims=True)
    mean_sq = (X * X).mean(axis=norm.axes, keepdims=True)
    err = np.abs(used - true_var)
    if not np.isfinite(err).any():
        return []
    forward = np.asarray(ctx.got["forward"], dtype=np.float64).reshape(norm.view)
    collapsed = np.isnan(forward).all(axis=norm.axes, keepdims=True)  # NaN: var + eps came out < 0
    for dtype in _one_pass_dtypes(p.dtype):
        one_pass_bound = 4.0 * norm.count * EPS[dtype] * mean_sq
        two_pass_bound = 4.0 * norm.count * EPS[dtype] * true_var + 1e-300
        negative = collapsed & (one_pass_bound > true_var + p.eps)  # within a one-pass error
        if negative.any():
            used, err = np.where(negative, -2.0 * p.eps, used), np.where(negative, one_pass_bound, err)
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(err), err / two_pass_bound, -np.inf)
        worst = int(np.argmax(ratio))  # the group where the evidence is strongest
        if ratio.flat[worst] > 10 and err.flat[worst] <= one_pass_bound.flat[worst]:
            note = (
                f"the variance it used errs by up to {err.flat[worst]:.2g}; one-pass E[x^2]-E[x]^2 in {dtype} "
                f"can err by {one_pass_bound.flat[worst]:.2g} here, two-pass by {two_pass_bound.flat[worst]:.2g}"
            )
            variant = Variant(var=np.where(np.isfinite(used), used, true_var))
            values = ctx.model(variant)
            preds = [Prediction(_ONE_PASS_TITLE.format(dtype), values, judged, note, fix=_ONE_PASS_FIX)]
            if "grad_input" in ctx.got and "grad_input" not in judged:  # a backward through that variance
                both = (*judged, "grad_input")
                values = _clamped_gradient(ctx, variant, values, used, true_var)
                preds.append(Prediction(_ONE_PASS_TITLE.format(dtype), values, both, note, fix=_ONE_PASS_FIX))
            if p.dtype == "float64" and dtype == "float32":  # ONNX's stash_type: all of it in float32
                single = outputs(p, variant, ctx.running, np.float32)
                title = _ONE_PASS_TITLE.format(dtype) + ", the normalization in float32 too"
                as_float32 = replace(p, dtype="float32")  # held to float32's rounding, in size
                preds.append(
                    Prediction(title, single, judged, note, problem=as_float32, fix=_ONE_PASS_FIX, by_magnitude=True)
                )
            return preds
    return []


def _clamped_gradient(
    ctx: Context, variant: Variant, values: dict[str, np.ndarray], used: np.ndarray, true_var: np.ndarray
) -> dict[str, np.ndarray]:
    """``values`` with the input gradient of the groups whose one-pass variance came out negative
    and was clamped to 0 (max(0, E[x^2] - E[x]^2), as Flax writes it): there the clamp passes no
    gradient back, so none flows through the variance (only through the mean)."""
    p = ctx.problem
    clamped = (np.abs(used) <= 1e-3 * p.eps) & (true_var > 10 * p.eps)
    if not clamped.any() or "grad_input" not in values:
        return values
    view = _norm(ctx).view
    cut = ctx.model(replace(variant, cut="variance"))["grad_input"]
    grad = np.where(clamped, cut.reshape(view), values["grad_input"].reshape(view))
    return {**values, "grad_input": grad.reshape(values["grad_input"].shape)}


_ONE_PASS_TITLE = "one-pass variance E[x^2] - E[x]^2 in {}"
_ONE_PASS_FIX = "compute the variance in two passes, mean((x - mean)^2), or with Welford's algorithm"


def _one_pass_dtypes(dtype: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(("float32", dtype if dtype == "float64" else "float32")))


def _one_pass_running(ctx: Context) -> list[Prediction]:
    """The running variance against the magnitude criterion: it errs by more than ten times what
    two-pass batch variances can, and no more than one-pass ones can (their error bounds, at the
    weight the momentum gives the worst batch)."""
    p = ctx.problem
    if not p.params.running_stats or "running_var" not in ctx.got:
        return []
    norm = _norm(ctx)
    batches = (*p.steps, p.x)
    err = np.abs(ctx.got["running_var"] - ctx.expected["running_var"])
    if not np.isfinite(err).all() or not err.any():
        return []
    n = norm.count
    bessel = n / (n - 1) if p.unbiased_running_var and n > 1 else 1.0
    for dtype in _one_pass_dtypes(p.dtype):
        one_pass = two_pass = np.zeros_like(err)
        for batch in batches:
            X = np.asarray(batch, dtype=np.float64).reshape(norm.view)
            mean = X.mean(axis=norm.axes, keepdims=True)
            # per channel: instance norm's running statistics average its per-sample ones
            var = np.ravel(((X - mean) ** 2).mean(axis=norm.axes)).reshape(-1, err.size).max(axis=0)
            mean_sq = np.ravel((X * X).mean(axis=norm.axes)).reshape(-1, err.size).max(axis=0)
            one_pass = np.maximum(one_pass, 4.0 * n * EPS[dtype] * mean_sq * bessel)
            two_pass = np.maximum(two_pass, 4.0 * n * EPS[dtype] * var * bessel)
        if np.all(err <= one_pass) and np.any(err > 10 * two_pass):
            worst = int(np.argmax(err))
            note = (
                f"the running variance errs by up to {err[worst]:.2g}; batch variances computed as "
                f"E[x^2]-E[x]^2 in {dtype} can err by {one_pass[worst]:.2g} there, two-pass ones by "
                f"{two_pass[worst]:.2g}"
            )
            values = {"running_var": ctx.got["running_var"]}
            judged: tuple[str, ...] = ("running_var",)
            if not ctx.training:  # and the outputs that follow from that running variance
                used = (ctx.expected["running_mean"], ctx.got["running_var"])
                values = {**outputs(p, Variant(), used), **values}
                judged = tuple(c for c in values if c in ctx.got)
            return [Prediction(_ONE_PASS_TITLE.format(dtype), values, judged, note, fix=_ONE_PASS_FIX)]
    return []


def _gradient_layout(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if len(p.shape) < 3 or p.shape[1] == 1:
        return []
    misread = replace(p, dy=np.ascontiguousarray(np.moveaxis(p.dy, 1, -1)).reshape(p.shape))
    title = "the upstream gradient's channels-last memory is read as if it were contiguous (N, C, ...)"
    fix = "respect the gradient's strides (or make it contiguous first)"
    preds = [replace(_rerun(title, misread, drop=("forward", *RUNNING)), fix=fix)]
    if p.dtype in HALF:  # and the statistics rounded to the dtype, where a kernel does both
        also = f"{title}, with the statistics rounded to {p.dtype}"
        for stats in STAT_ROUNDINGS[:2]:
            mistaken = Context(misread, ctx.expected, ctx.got)
            for q in _simulated(mistaken, also, Policy(stats=stats), fix):
                grads = {k: v for k, v in q.values.items() if k != "forward"}
                witness = {k: v for k, v in (q.witness or {}).items() if k != "forward"}
                preds.append(replace(q, values=grads, witness=witness))
    return preds


def _momentum_single(ctx: Context) -> list[Prediction]:
    """The momentum as a float32 attribute, in either meaning: the new batch's weight (PyTorch's)
    or the old value's (ONNX's and Keras's, 1 - momentum)."""
    p = ctx.problem
    if not p.params.running_stats:
        return []
    preds = []
    fix = "keep the momentum in double precision"
    for stored, title in (
        (float(np.float32(p.momentum)), f"momentum {p.momentum:g} stored as a float32"),
        (
            1.0 - float(np.float32(1.0 - p.momentum)),
            f"momentum {1.0 - p.momentum:g} (the old value's weight) stored as a float32",
        ),
    ):
        if stored != p.momentum:
            preds.append(
                replace(_rerun(f"{title}: the batch's weight becomes {stored!r}", replace(p, momentum=stored)), fix=fix)
            )
    return preds


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
            if ctx.problem.params.axes is not None:  # layer norm over other axes: name them
                want = _axis_names(len(norm.view), norm.axes)
                title += f" ({_axis_names(len(norm.view), axes)}) instead of {want}"
                fix = f"normalize over {want} only (mean and variance with dim={list(norm.axes)})"
                if axes != tuple(norm.axes):
                    return [replace(q, fix=fix) for q in ctx.predict(title, Variant(axes=axes))]
        if axes == tuple(norm.axes) or int(np.prod([norm.view[a] for a in axes])) < 1:
            return []
        return ctx.predict(title, Variant(axes=axes))

    return predict


_DIM_LETTERS = {3: "NCL", 4: "NCHW", 5: "NCDHW"}


def _axis_names(ndim: int, axes: tuple[int, ...]) -> str:
    """'axes [1, 2, 3] (C, H, W)': the axes, with NCHW's letters where the rank has them."""
    letters = _DIM_LETTERS.get(ndim)
    named = f" ({', '.join(letters[a] for a in axes)})" if letters else ""
    return f"axis {axes[0]}{named}" if len(axes) == 1 else f"axes {list(axes)}{named}"


def _axes_other(ctx: Context) -> list[Prediction]:
    """Layer norm over given axes (``OpParams.axes``) computed over another set: any single axis
    but the batch, any trailing run, or every axis but the batch (GroupNorm(1, C) passed off as
    LayerNorm2d); the last axis alone and the batch added are hypotheses of their own."""
    p = ctx.problem
    if p.op != "ln" or p.params.axes is None or not ctx.training:
        return []
    norm = _norm(ctx)
    ndim, want = len(norm.view), tuple(norm.axes)
    candidates = {(a,) for a in range(1, ndim)} | {tuple(range(k, ndim)) for k in range(1, ndim)}

    def effective(axes: tuple[int, ...]) -> tuple[int, ...]:  # axes of size 1 change no statistic
        return tuple(a for a in axes if norm.view[a] > 1)

    seen = {effective(a) for a in (want, (ndim - 1,), tuple(sorted({0, *want})))}
    preds = []
    for axes in sorted(candidates, key=lambda c: (len(c), c)):
        if effective(axes) in seen:
            continue
        seen.add(effective(axes))
        title = f"statistics over {_axis_names(ndim, axes)} instead of {_axis_names(ndim, want)}"
        if axes == tuple(range(1, ndim)) and want == (1,):
            title += ": GroupNorm(1, C), which normalizes each sample over every axis, is not a LayerNorm2d"
        fix = f"normalize over {_axis_names(ndim, want)} only (mean and variance with dim={list(want)})"
        preds += [replace(q, fix=fix) for q in ctx.predict(title, Variant(axes=axes))]
    return preds


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
        if kind == AFFINE_SWAPPED and ctx.problem.op == ADALN:  # its weight is 1 + scale: adaln_shift_scale_swapped
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


def _simulated(ctx: Context, title: str, policy: Policy, fix: str) -> list[Prediction]:
    """Precision predictions: the policy in the fused-kernel and in the autograd operation
    order, each with the textbook order as its witness (how far apart orders may land)."""
    fused, textbook, autograd = (simulate(ctx.problem, policy, order, ctx.running) for order in ORDERS)
    return [Prediction(title, fused, witness=textbook, fix=fix), Prediction(title, autograd, witness=textbook, fix=fix)]


def _which(stats: frozenset[str]) -> str:
    return " and ".join(s if s != RSTD else "1/std" for s in (MEAN, VAR, RSTD) if s in stats)


STAT_ROUNDINGS = (
    frozenset({MEAN, VAR}),
    frozenset({MEAN, RSTD}),
    frozenset({MEAN}),
    frozenset({VAR}),
    frozenset({RSTD}),
)


def _stats_rounded(saved_only: bool) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        p = ctx.problem
        if p.dtype not in HALF or (saved_only and not ctx.training):
            return []
        preds = []
        for stats in STAT_ROUNDINGS:
            if not _norm(ctx).center and MEAN in stats:
                continue
            which = _which(stats)
            if saved_only:
                title = f"the backward uses the statistics saved in {p.dtype} ({which} rounded)"
                fix = "save the statistics for the backward in float32, as the forward computed them"
            else:
                title = f"statistics rounded to {p.dtype} ({which}) before normalizing"
                fix = f"keep the statistics in float32 and round only the outputs to {p.dtype}"
            preds += _simulated(ctx, title, Policy(stats=stats, saved_only=saved_only), fix)
        return preds

    return predict


def _input_dtype(ctx: Context) -> list[Prediction]:
    """No upcast: every step in the half dtype, the sums accumulated in float32 (NumPy's and
    PyTorch's CPU reductions of half tensors) or in the dtype itself."""
    p = ctx.problem
    if p.dtype not in HALF:
        return []
    fix = (
        f"cast x, weight and bias to float32, compute there and cast the outputs back to {p.dtype}, "
        "as torch.nn.GroupNorm does"
    )
    preds = []
    variants = (
        ("statistics from a float32 kernel", Policy(elementwise=True, fused_stats=True)),
        ("float32 sums", Policy(elementwise=True)),
        (f"sums accumulated in {p.dtype}", Policy(elementwise=True, accumulate=True)),
        ("tf.nn.batch_normalization's x * inv + (offset - mean * inv)", Policy(elementwise=True, folded=True)),
        (
            "tf.nn.moments in float32, tf.nn.batch_normalization's x * inv + (offset - mean * inv)",
            Policy(elementwise=True, folded=True, fused_stats=True),
        ),
        (
            "tf.nn.moments in float32, tf.nn.batch_normalization's x * inv + (offset - mean * inv), "
            f"gradient sums accumulated in {p.dtype}",
            Policy(elementwise=True, folded=True, fused_stats=True, accumulate=True),
        ),
    )
    for how, policy in variants:
        for pred in _simulated(ctx, f"computed in {p.dtype} ({how}, {p.dtype} elementwise)", policy, fix):
            preds.append(replace(pred, title=pred.title + _overflow(ctx, pred)))
    return preds


# tried where a weight or bias gradient sums more values than this: over fewer, a half accumulator
# loses less than the tolerance allows, and the default grid's cases never reach it
PARAM_SUM_TERMS = 1024


def _half_param_sums(ctx: Context) -> list[Prediction]:
    """Everything in float32 but the weight and bias gradients, accumulated row after row in the
    half input dtype (llm.c#476; PyTorch's CPU layer norm backward)."""
    p = ctx.problem
    norm = _norm(ctx)
    summed = int(np.prod([n for n, k in zip(norm.view, norm.param_view, strict=True) if k == 1], dtype=np.int64))
    if p.dtype not in HALF or p.weight is None or summed <= PARAM_SUM_TERMS:
        return []
    title = f"the weight and bias gradients accumulated in {p.dtype} over {summed} values, one rounding per addition"
    fix = "accumulate the weight and bias gradients in float32 (partial sums reduced in float32), round once"
    return _simulated(ctx, title, Policy(param_sums=True), fix)


def _overflow(ctx: Context, pred: Prediction) -> str:
    """What overflowed, when the half computation produced inf or NaN where the reference is finite."""
    bad = [
        k
        for k, v in pred.values.items()
        if k in ctx.expected and np.any(~np.isfinite(v) & np.isfinite(ctx.expected[k]))
    ]
    if not bad:
        return ""
    if bad == ["grad_input"]:
        return f": the gradient through the variance overflows {ctx.problem.dtype}"
    return f": x² or the variance overflows {ctx.problem.dtype}"


def _cast_before_weight(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.dtype not in HALF or p.weight is None:
        return []
    title = f"the normalized value is rounded to {p.dtype} before the weight multiply (an extra rounding)"
    fix = f"multiply by the weight in float32 and round to {p.dtype} once, at the end"
    return _simulated(ctx, title, Policy(cast_before_weight=True), fix)


def _double_conversion(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.dtype not in HALF or not ctx.training:
        return []
    title = (
        f"the input's gradient is summed in {p.dtype} from two parts rounded apart (the input is "
        "converted to float32 twice: for the statistics and for x - mean)"
    )
    fix = "convert the input to float32 once and use that tensor for the statistics and the normalization"
    return _simulated(ctx, title, Policy(split_gradient=True), fix)


def _float32_for_float64(ctx: Context) -> list[Prediction]:
    if ctx.problem.dtype != "float64":
        return []
    title = "float64 input computed in float32"
    fix = "compute float64 input in float64 (ONNX: stash_type=DOUBLE)"
    preds = _simulated(ctx, title, Policy(compute=np.float32), fix)
    if _norm(ctx).center:
        one_pass = f"{title}, the variance as E[x^2] - E[x]^2"
        preds += _simulated(ctx, one_pass, Policy(compute=np.float32, one_pass=True), fix)
        affine = f"{one_pass}, the affine transform in float64 (ONNX GroupNormalization's stash_type)"
        preds += _simulated(ctx, affine, Policy(compute=np.float32, one_pass=True, affine_in_input_dtype=True), fix)
    # held to what a correct float32 implementation of the case errs by, whatever its order
    as_float32 = replace(ctx.problem, dtype="float32")
    note = (
        "float32 rounding is reproduced in size, not element by element: "
        "the error is within what float32 arithmetic makes here"
    )
    return [replace(pred, witness=None, problem=as_float32, by_magnitude=True, note=note) for pred in preds]


def _center(on: bool) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        if _norm(ctx).center == on or (on and ctx.problem.op != "rms") or (not on and ctx.problem.op != "ln"):
            return []
        title = "the mean is subtracted (layer norm, not RMS norm)" if on else "the mean is not subtracted (RMS norm)"
        return ctx.predict(title, Variant(center=on))

    return predict


def _variance_for_rms(ctx: Context) -> list[Prediction]:
    if ctx.problem.op != "rms" or _norm(ctx).count < 2:
        return []
    return ctx.predict(
        "x / sqrt(Var[x] + eps): the variance about the mean instead of mean(x²), x itself not centered "
        "(Keras's LayerNormalization(rms_scaling=True))",
        Variant(uncentered_numerator=True),
    )


def _per_rank(ctx: Context) -> list[Prediction]:
    """Distributed batch norm whose ranks each normalize (and track running statistics) with
    their own slice of the global batch, dealt as ``--world-size`` deals it, never all-reduced:
    forward and input gradients of each slice, weight and bias gradients summed, rank 0's
    running statistics. One prediction per world size the batch can be split over."""
    from normcheck.verify.distributed import split_batch

    p = ctx.problem
    if p.op != "bn" or len(p.shape) < 2 or not p.x.size:
        return []
    preds = []
    for world in range(2, min(p.shape[0], 8) + 1):
        starts = np.cumsum([0, *split_batch(p.shape[0], world)])
        parts = []
        for rank in range(world):
            cut = slice(int(starts[rank]), int(starts[rank + 1]))
            shape = (cut.stop - cut.start, *p.shape[1:])
            if OPS[p.op].validate(shape, replace(p.params, mode="train")):
                break  # a slice of one value per channel: no rank could train on it
            sub = replace(p, shape=shape, x=p.x[cut], dy=p.dy[cut], steps=tuple(s[cut] for s in p.steps))
            with np.errstate(all="ignore"):
                parts.append(reference(sub))
        else:
            values = {k: np.concatenate([r[k] for r in parts]) for k in ("forward", "grad_input")}
            values.update(
                {k: np.sum([r[k] for r in parts], axis=0) for k in ("grad_weight", "grad_bias") if k in parts[0]}
            )
            values.update({k: parts[0][k] for k in RUNNING if k in parts[0]})
            title = f"per-rank statistics: each of {world} ranks normalizes with its own slice's statistics"
            fix = "all-gather every rank's count, mean and sum of squared deviations and combine them"
            preds.append(Prediction(title, values, fix=fix))
    return preds


# -- op variants and fused ops (they predict on the case itself: Hypothesis.on_case) ----------


def _with_scale(p: Problem, scale_: np.ndarray) -> Problem:
    """The Gemma case with ``scale_`` in place of 1 + weight (the weight given as scale_ - 1)."""
    return replace(p, weight=np.asarray(scale_, dtype=np.float64) - 1.0)


def _gemma_offset_missing(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.params.variant != GEMMA:
        return []
    title = "Gemma's offset missing: x̂ * weight instead of x̂ * (1 + weight)"
    fix = "multiply by (1 + weight): Gemma stores the RMS norm scale as an offset from 1"
    plain = replace(p, params=replace(p.params, variant=None))
    if p.weight is not None:
        return [replace(_rerun(title, plain), fix=fix)]
    # a layer that always has its weight (Keras's), given Gemma's stored 0: x̂ * 0
    missing = _rerun(
        title + ", the weight 0", replace(plain, weight=np.zeros(OPS[p.op].param_shape(p.shape, p.params)))
    )
    missing.values.pop("grad_weight", None)
    return [replace(missing, fix=fix)]


def _gemma_offset_doubled(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.params.variant != GEMMA:
        return []
    fix = "add the offset once: x̂ * (1 + weight), with the weight as stored (initialized to zeros)"
    if p.weight is None:  # a layer that always has its weight (Keras's), given Gemma's stored 0: 2 x̂
        shape = OPS[p.op].param_shape(p.shape, p.params)
        twice = _rerun(
            "Gemma's offset added twice: x̂ * (2 + weight), the weight 0", _with_scale(p, np.full(shape, 2.0))
        )
        twice.values.pop("grad_weight", None)
        return [replace(twice, fix=fix)]
    w = np.asarray(p.weight, dtype=np.float64)
    twice = _rerun("Gemma's offset added twice: x̂ * (2 + weight)", _with_scale(p, 2.0 + w))
    squared = _rerun("Gemma's scale applied twice: x̂ * (1 + weight)²", _with_scale(p, (1.0 + w) ** 2))
    if "grad_weight" in squared.values:  # d/dw (1 + w)² = 2 (1 + w)
        squared.values["grad_weight"] = squared.values["grad_weight"] * 2.0 * (1.0 + w)
    return [replace(twice, fix=fix), replace(squared, fix=fix)]


TORCH_DEFAULT_MOMENTUM = 0.1  # what ``momentum or 0.1`` turns None into


def _cumulative_ignored(ctx: Context) -> list[Prediction]:
    """momentum=None replaced by a fixed momentum: the case's (given beside None) or PyTorch's
    default 0.1 (``momentum or 0.1``)."""
    p = ctx.problem
    if p.params.variant != CUMULATIVE or not p.params.running_stats:
        return []
    fix = "with momentum=None weigh the k-th training batch 1/k (num_batches_tracked), as torch.nn.BatchNorm does"
    plain = replace(p.params, variant=None)
    preds = []
    for momentum in dict.fromkeys((p.momentum, TORCH_DEFAULT_MOMENTUM)):
        title = (
            f"momentum=None ignored: the running statistics use a fixed momentum {momentum:g}, "
            "not the cumulative average"
        )
        preds.append(replace(_rerun(title, replace(p, params=plain, momentum=momentum)), fix=fix))
    return preds


def _adaln(ctx: Context) -> bool:
    p = ctx.problem
    return p.op == ADALN and p.weight is not None and p.bias is not None


def _adaln_offset_missing(ctx: Context) -> list[Prediction]:
    """x̂ * scale + shift: DiT's 1 + left out (the gradient of scale keeps its form)."""
    if not _adaln(ctx):
        return []
    p = ctx.problem
    title = "adaLN's scale applied as is: x̂ * scale + shift, the 1 + missing"
    fix = "multiply by (1 + scale): adaLN's scale is an offset from 1 (adaLN-Zero initializes it to 0)"
    return [replace(_rerun(title, replace(p, weight=np.asarray(p.weight, dtype=np.float64) - 1.0)), fix=fix)]


def _adaln_swapped(ctx: Context) -> list[Prediction]:
    """x̂ * (1 + shift) + scale: the two halves of the modulation taken in the wrong order."""
    if not _adaln(ctx):
        return []
    p = ctx.problem
    swapped = replace(p, weight=p.bias, bias=p.weight)
    with np.errstate(all="ignore"):
        values = _crossed(reference(swapped))
        witness = _crossed(reference(swapped, compute_dtype(p.dtype)))
    title = "adaLN's shift and scale swapped: x̂ * (1 + shift) + scale"
    fix = "take shift and scale in DiT's order, modulate(x, shift, scale) = x * (1 + scale) + shift"
    return [Prediction(title, values, witness={k: quantize(v, p.dtype) for k, v in witness.items()}, fix=fix)]


def _crossed(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A rerun with shift in the weight's slot: its gradients come back crossed."""
    out = dict(values)
    out["grad_weight"], out["grad_bias"] = values["grad_bias"], values["grad_weight"]
    return out


def _modulated_prediction(ctx: Context, title: str, fix: str, **knobs: Any) -> list[Prediction]:
    """adaLN with ``knobs`` (normcheck.ops.adaptive_layer_norm.modulated) in float64, and in the
    case's compute precision as the witness of how far a careful implementation of it may land."""
    p = ctx.problem
    if p.weight is None or p.bias is None:
        return []
    out: list[dict[str, np.ndarray]] = []
    for dtype in (np.float64, compute_dtype(p.dtype)):
        with np.errstate(all="ignore"):
            y, grads = modulated(p.x, p.bias, p.weight, p.eps, dy=p.dy, dtype=dtype, **knobs)
        if grads is None:
            return []
        out.append({"forward": y, "grad_input": grads.dx, "grad_weight": grads.dscale, "grad_bias": grads.dshift})
    witness = {k: quantize(v, p.dtype) for k, v in out[1].items()}
    return [Prediction(title, out[0], witness=witness, fix=fix)]


def _adaln_per_token(ctx: Context) -> list[Prediction]:
    """scale (N, D) broadcast against (N, T, D) without the unsqueeze: row n modulates token n of
    every sample. It runs only where T == N (elsewhere the shapes do not broadcast and it raises)."""
    if not _adaln(ctx):
        return []
    p = ctx.problem
    n, t, _ = p.shape
    if n != t or n == 1:
        return []
    title = "adaLN's modulation broadcast per token instead of per sample: scale[None] where scale[:, None] is due"
    fix = "unsqueeze the token axis: x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)"
    return _modulated_prediction(ctx, title, fix, broadcast=TOKEN)


def _adaln_affine_left_in(ctx: Context) -> list[Prediction]:
    """(x̂ * w + b) * (1 + scale) + shift: the layer norm keeps an elementwise affine, whose weight
    and bias normcheck sets to ``stray_affine``'s values (the torch module form), as training would."""
    if not _adaln(ctx):
        return []
    p = ctx.problem
    title = "an affine layer norm's weight and bias left in before adaLN's modulation"
    fix = "build the norm without affine parameters: nn.LayerNorm(D, elementwise_affine=False, eps=1e-6), as DiT"
    return _modulated_prediction(ctx, title, fix, inner=stray_affine(p.shape[-1], p.dtype))


def _residual_not_updated(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.residual is None or p.dresidual is None or "residual_out" not in ctx.expected:
        return []
    dres = np.asarray(p.dresidual, dtype=np.float64)
    values = {
        "residual_out": np.asarray(p.residual, dtype=np.float64),
        # the old residual is returned: its upstream gradient reaches the residual alone
        "grad_input": ctx.expected["grad_input"] - dres,
        "grad_residual": ctx.expected["grad_residual"],
    }
    title = "the residual output is the old residual, not x + residual"
    fix = "return (and store) h = x + residual as the new residual"
    return [Prediction(title, values, fix=fix)]


def _residual_sum_unrounded(ctx: Context) -> list[Prediction]:
    p = ctx.problem
    if p.residual is None or p.dtype == "float64" or "residual_out" not in ctx.expected:
        return []
    values = reference(p, round_sum=False)
    witness = reference(p, compute_dtype(p.dtype), round_sum=False)
    keep = [k for k in values if k != "residual_out"]
    title = (
        f"x + residual normalized before it is rounded to {p.dtype} "
        "(the residual output is rounded, the norm's input is not)"
    )
    fix = f"round h = x + residual to {p.dtype} first and normalize that h, the value the residual stream carries"
    return [
        Prediction(
            title,
            {k: values[k] for k in keep},
            witness={k: quantize(witness[k], p.dtype) for k in keep},
            fix=fix,
        )
    ]


def _kernel_limit(mistake: Callable[[Problem], list[Limited]]) -> Callable[[Context], list[Prediction]]:
    def predict(ctx: Context) -> list[Prediction]:
        return [Prediction(f.title, f.values, witness=f.witness, fix=f.fix) for f in mistake(ctx.problem)]

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
    Hypothesis("axes_other", "layer norm over other axes than the given ones", _axes_other),
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
    Hypothesis("rms_from_variance", "RMS norm scaled by the variance about the mean", _variance_for_rms),
    # the narrower first: where both reproduce a row in size, it is named
    Hypothesis("half_param_accumulation", "weight and bias gradients summed in half", _half_param_sums, NUMERIC),
    Hypothesis("half_accumulation", "computed in the half input dtype", _input_dtype, NUMERIC),
    Hypothesis("stats_in_input_dtype", "statistics rounded to the input dtype", _stats_rounded(False), NUMERIC),
    Hypothesis(
        "saved_stats_in_input_dtype", "backward uses statistics saved in the input dtype", _stats_rounded(True), NUMERIC
    ),
    Hypothesis("cast_before_weight", "rounded before the weight multiply", _cast_before_weight, NUMERIC),
    Hypothesis("single_precision_compute", "float64 input computed in float32", _float32_for_float64, NUMERIC),
    Hypothesis("one_pass_variance", "one-pass variance", _one_pass, NUMERIC),
    Hypothesis("double_conversion", "input gradient summed from two rounded parts", _double_conversion, NUMERIC),
    Hypothesis("momentum_single_precision", "momentum rounded to float32", _momentum_single, NUMERIC),
    Hypothesis("gradient_layout_ignored", "channels-last gradient read as contiguous", _gradient_layout),
    Hypothesis("per_rank_statistics", "per-rank statistics (distributed batch norm without sync)", _per_rank),
    Hypothesis("gemma_offset_missing", "Gemma's offset missing", _gemma_offset_missing, on_case=True),
    Hypothesis("gemma_offset_doubled", "Gemma's offset doubled", _gemma_offset_doubled, on_case=True),
    Hypothesis("cumulative_momentum_ignored", "momentum=None ignored", _cumulative_ignored, on_case=True),
    Hypothesis("residual_not_updated", "residual output not updated", _residual_not_updated, on_case=True),
    Hypothesis("adaln_offset_missing", "adaLN's 1 + scale missing", _adaln_offset_missing, on_case=True),
    Hypothesis("adaln_shift_scale_swapped", "adaLN's shift and scale swapped", _adaln_swapped, on_case=True),
    Hypothesis("adaln_per_token", "adaLN modulation broadcast per token", _adaln_per_token, on_case=True),
    Hypothesis("adaln_affine_left_in", "affine layer norm left in adaLN", _adaln_affine_left_in, on_case=True),
    Hypothesis(
        "residual_sum_unrounded", "x + residual normalized unrounded", _residual_sum_unrounded, NUMERIC, on_case=True
    ),
    # kernel limits past the default grid (normcheck.diagnosis.kernel_limits): the stress profile's sizes
    Hypothesis("row_index_wraps", "row index wraps at 2^16", _kernel_limit(row_index_wraps)),
    Hypothesis("partial_row_reduction", "statistics over part of the row", _kernel_limit(partial_row)),
)
