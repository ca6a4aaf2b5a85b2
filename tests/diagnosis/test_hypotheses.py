"""Each known mistake in normcheck.diagnosis.hypotheses, one by one: it is named and described,
it applies to the cases it claims and no others, and given an implementation that makes the
mistake, its prediction reproduces that implementation's outputs and ``diagnose`` names it.

The "buggy implementations" here are written by hand in NumPy, independently of
normcheck.diagnosis.model: the mistaken forward formula is spelled out below, and its
gradients are taken by complex-step differentiation of that forward (exact to rounding), so a
hypothesis is checked against what the mistake really computes, not against its own model.
Outputs are rounded to the case's dtype, as an implementation returns them.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from normcheck.diagnosis import HYPOTHESES, diagnose
from normcheck.diagnosis.hypotheses import DISTRIBUTED_ONLY, Context
from normcheck.dtypes import quantize
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import judge, with_diagnosis
from normcheck.verify.plan import Options
from normcheck.verify.records import FAIL, PASS, Case
from normcheck.verify.tolerance import witness_errors

PRECISION_MISTAKES = (
    "stats_in_input_dtype",
    "saved_stats_in_input_dtype",
    "cast_before_weight",
    "single_precision_compute",
    "double_conversion",
    "momentum_single_precision",
    "gradient_layout_ignored",
)

BY_ID = {h.id: h for h in HYPOTHESES}

GN = ("gn", (2, 4, 3, 5), OpParams(groups=2))
LN = ("ln", (4, 6), OpParams(normalized_ndim=1))
LN2 = ("ln", (3, 4, 5), OpParams(normalized_ndim=2))
RMS = ("rms", (4, 6), OpParams(normalized_ndim=1))
IN = ("in", (2, 3, 4, 4), OpParams())
BN_TRAIN = ("bn", (4, 3, 5), OpParams(mode="train", running_stats=True))
BN_EVAL = ("bn", (4, 3, 5), OpParams(mode="eval", running_stats=True))


def _problem(case, kind="normal", dtype="float32", eps=1e-5, **extra):
    op, shape, params = case
    return make_problem(op, shape, params, dtype, kind, eps=eps, momentum=0.1, **extra)


# -- the hand-written mistaken implementation --------------------------------------------------


def _layout(p, interleaved=False):
    """(view, statistics axes, parameter view) of the case's op, written out by hand."""
    shape = p.shape
    if p.op in ("ln", "rms"):
        k = p.params.normalized_ndim
        lead = len(shape) - k
        return shape, tuple(range(lead, len(shape))), (1,) * lead + shape[lead:]
    n, c, *spatial = shape
    ones = (1,) * len(spatial)
    if p.op == "gn":
        g = p.params.groups
        if interleaved:  # channel c = j * G + g sits at [:, j, g]: the group is the third axis
            return (n, c // g, g, *spatial), (1, *range(3, 3 + len(spatial))), (1, c // g, g, *ones)
        return (n, g, c // g, *spatial), tuple(range(2, 3 + len(spatial))), (1, g, c // g, *ones)
    if p.op == "in":
        return shape, tuple(range(2, len(shape))), (1, c, *ones)
    assert p.op == "bn"
    return shape, (0, *range(2, len(shape))), (1, c, *ones)


def _forward(
    p,
    x,
    w,
    b,
    *,
    correction=False,
    eps=None,
    eps_outside=False,
    center=None,
    affine="right",
    interleaved=False,
    axes=None,
    detach=(),
    uncentered_numerator=False,
):
    """y of the op on x (real or complex), with the named mistakes made.

    ``detach``: "mean" and/or "var" are computed from the case's own x, as constants, so no
    derivative flows through them (``.detach()`` in user code)."""
    view, own_axes, pview = _layout(p, interleaved)
    axes = own_axes if axes is None else axes
    center = (p.op != "rms" or uncentered_numerator) if center is None else center
    X = x.reshape(view)
    X0 = np.asarray(p.x, dtype=np.float64).reshape(view)
    src = X0 if "mean" in detach else X
    mean = src.mean(axis=axes, keepdims=True) if center else 0.0
    if "var" in detach:
        c0 = X0 - (X0.mean(axis=axes, keepdims=True) if center else 0.0)
        var = (c0 * c0).mean(axis=axes, keepdims=True)
    else:
        var = ((X - mean) * (X - mean)).mean(axis=axes, keepdims=True)
    if correction:
        n = int(np.prod([view[a] for a in axes]))
        var = var * n / (n - 1)
    e = p.eps if eps is None else eps
    rstd = 1.0 / (np.sqrt(var) + e) if eps_outside else 1.0 / np.sqrt(var + e)
    xhat = (X if uncentered_numerator else X - mean) * rstd
    W = None if w is None else w.reshape(pview)
    B = None if b is None else b.reshape(pview)
    if affine == "order":
        y = (xhat + B) * W
    elif affine == "swapped":
        y = xhat * B + W
    else:
        y = xhat if W is None else xhat * W
        y = y if B is None else y + B
    return y.reshape(p.shape)


def _vjp(f, at, dy, h=1e-30):
    """d sum(dy * f(a)) / da at ``at``, by complex steps: no cancellation, exact to rounding."""
    grad = np.empty(at.shape)
    for i in np.ndindex(at.shape):
        z = at.astype(np.complex128)
        z[i] += 1j * h
        grad[i] = np.sum(dy * f(z)).imag / h
    return grad


def _running(p, momentum=None, unbiased=None):
    """Batch norm's running statistics after the case's training batches, by hand."""
    m = p.momentum if momentum is None else momentum
    unbiased = p.unbiased_running_var if unbiased is None else unbiased
    rm, rv = np.zeros(p.shape[1]), np.ones(p.shape[1])
    axes = (0, *range(2, len(p.shape)))
    for batch in p.steps + ((p.x,) if p.params.mode == "train" else ()):
        rm = (1 - m) * rm + m * batch.mean(axis=axes)
        rv = (1 - m) * rv + m * batch.var(axis=axes, ddof=1 if unbiased else 0)
    return {"running_mean": rm, "running_var": rv}


def _mistaken(p, **mistake):
    """Every output of an implementation of the case that makes ``mistake``, in float64."""
    x, w, b = p.x, p.weight, p.bias
    out = {
        "forward": _forward(p, x, w, b, **mistake).real,
        "grad_input": _vjp(lambda z: _forward(p, z, w, b, **mistake), x, p.dy),
    }
    if w is not None:
        out["grad_weight"] = _vjp(lambda z: _forward(p, x, z, b, **mistake), w, p.dy)
    if b is not None:
        out["grad_bias"] = _vjp(lambda z: _forward(p, x, w, z, **mistake), b, p.dy)
    if p.params.running_stats:
        out.update(_running(p))
    return out


def _textbook(p, eps, dtype=np.float64):
    """Forward and backward by the textbook closed form, in ``dtype``: where a group's variance
    is 0 and eps is too, 0 * inf makes that group NaN, as in an implementation."""
    view, axes, pview = _layout(p)
    X = p.x.astype(dtype).reshape(view)
    G = p.dy.astype(dtype).reshape(view)
    W = p.weight.astype(dtype).reshape(pview)
    B = p.bias.astype(dtype).reshape(pview)
    with np.errstate(all="ignore"):
        mean = X.mean(axis=axes, keepdims=True, dtype=dtype)
        var = ((X - mean) * (X - mean)).mean(axis=axes, keepdims=True, dtype=dtype)
        rstd = dtype(1) / np.sqrt(var + dtype(eps))
        xhat = (X - mean) * rstd
        g = G * W
        dx = rstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        summed = tuple(i for i, s in enumerate(pview) if s == 1)
        out = {
            "forward": xhat * W + B,
            "grad_input": dx,
            "grad_weight": (G * xhat).sum(axis=summed),
            "grad_bias": G.sum(axis=summed, dtype=dtype),
            "mean": mean,
        }
    shapes = {"forward": p.shape, "grad_input": p.shape, "grad_weight": p.weight.shape, "grad_bias": p.bias.shape}
    return {k: np.asarray(v, np.float64).reshape(shapes.get(k, np.shape(v))) for k, v in out.items()}


# -- judging and diagnosing, as verify does ----------------------------------------------------


def _out(p, got):
    """What the implementation returns: each output rounded to the case's dtype."""
    out = RunOutput()
    for check, value in got.items():
        out.add(check, quantize(value, p.dtype), p.dtype)
    return out


def _rows(p, got):
    expected = reference(p)
    case = Case(p.op, "hand", "buggy", p.shape, p.params, p.dtype, p.kind)
    opts = Options(ops=(p.op,), dtypes=(p.dtype,))
    out = _out(p, got)
    rows = judge(case, p, out, expected, witness_errors(p, expected), opts, {})
    return expected, out, rows


def _diagnosed(p, got):
    expected, out, rows = _rows(p, got)
    return rows, diagnose(p, expected, out, rows)


def _failing(rows):
    return [r.check for r in rows if r.status == FAIL]


def _assert_named(rows, found, hypothesis):
    failing = _failing(rows)
    assert failing, "the mistake must make at least one check fail"
    assert set(found) == set(failing)
    assert {d.hypothesis for d in found.values()} == {hypothesis}, {c: d.summary for c, d in found.items()}
    for d in found.values():
        assert d.scope == "case"
        assert d.cause and d.cause != "unknown"
        assert hypothesis not in d.also
        head = re.match(r"(\w+): max abs err \S+ -> \S+ under '(.*?)' \(allowed ", d.evidence)
        assert head, d.evidence
        assert head.group(1) in failing
        # the named cause, or the same as the first of two that fit equally
        assert d.cause in (head.group(2), f"ambiguous: {head.group(2)} or {d.cause.split(' or ')[-1]}")


def _assert_predicted(hypothesis, p, got, title_has="", rtol=1e-9, atol=1e-9, title=None):
    """A prediction of the hypothesis titled ``title`` (or whose title has ``title_has``) equals
    the hand-made mistaken outputs (in float64). Precision hypotheses predict one title in
    several operation orders; one of them must match."""
    expected = reference(p)
    with np.errstate(all="ignore"):
        predictions = BY_ID[hypothesis].predict(Context(p, expected, got))
    chosen = [pr for pr in predictions if (pr.title == title if title else title_has in pr.title)]
    assert len({pr.title for pr in chosen}) == 1, [pr.title for pr in predictions]
    failures = []
    for pred in chosen:
        assert pred.values, pred.title
        try:
            for check, value in pred.values.items():
                np.testing.assert_allclose(value, got[check], rtol=rtol, atol=atol, equal_nan=True, err_msg=check)
        except AssertionError as e:
            failures.append(str(e))
            continue
        return pred
    raise AssertionError("\n".join(failures))


# -- every hypothesis is named and described ---------------------------------------------------


def test_every_hypothesis_has_an_id_a_title_and_a_prediction():
    ids = [h.id for h in HYPOTHESES]
    assert len(ids) == len(set(ids))
    assert len({h.title for h in HYPOTHESES}) == len(HYPOTHESES)
    for h in HYPOTHESES:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)+", h.id), h.id
        assert h.title.strip() == h.title and len(h.title) > 10, h.id
        assert callable(h.predict)


# -- which cases each hypothesis applies to ----------------------------------------------------

GN1 = ("gn", (2, 4, 3), OpParams(groups=1))
GN_C = ("gn", (2, 4, 3), OpParams(groups=4))
LN_NO_AFFINE = ("ln", (4, 6), OpParams(normalized_ndim=1, affine=False))
LN_ONE = ("ln", (4, 1), OpParams(normalized_ndim=1))

APPLICABILITY_CASES = {
    "gn": GN,
    "gn_g1": GN1,
    "gn_gc": GN_C,
    "ln": LN,
    "ln2": LN2,
    "ln_no_affine": LN_NO_AFFINE,
    "ln_one": LN_ONE,
    "rms": RMS,
    "in": IN,
    "bn_train": BN_TRAIN,
    "bn_eval": BN_EVAL,
}
ALL = set(APPLICABILITY_CASES)
TRAINING = ALL - {"bn_eval"}
CENTERED_TRAINING = TRAINING - {"rms"}
AFFINE_WITH_BIAS = ALL - {"rms", "ln_no_affine"}
RUNNING = {"bn_train", "bn_eval"}

# Where each hypothesis makes a prediction, on correct float32 outputs.
APPLIES = {
    "unbiased_variance": CENTERED_TRAINING - {"ln_one"},  # needs N >= 2 values to correct
    "eps_outside_sqrt": ALL,
    "eps_missing": ALL,
    "eps_value": ALL,
    "groups_interleaved": {"gn"},  # 1 < G < C only
    "axes_batch_included": TRAINING - {"bn_train"},  # batch norm's statistics already span the batch
    "axes_channels_included": {"gn", "gn_g1", "gn_gc", "in", "bn_train"},
    "axes_last_only": {"gn", "gn_g1", "gn_gc", "ln2", "in", "bn_train"},
    "momentum_inverted": RUNNING,
    "running_var_biased": RUNNING,  # the problem's convention is PyTorch's unbiased one
    "running_var_unbiased": set(),
    "eval_batch_stats": {"bn_eval"},
    "affine_order": AFFINE_WITH_BIAS,
    "weight_bias_swapped": AFFINE_WITH_BIAS,
    "grad_cut_mean": CENTERED_TRAINING,
    "grad_cut_variance": TRAINING,
    "grad_cut_stats": CENTERED_TRAINING,
    "mean_subtracted": {"rms"},
    "mean_not_subtracted": {"ln", "ln2", "ln_no_affine", "ln_one"},
    "rms_from_variance": {"rms"},
    "half_accumulation": set(),  # float32 cases
    "stats_in_input_dtype": set(),
    "saved_stats_in_input_dtype": set(),
    "cast_before_weight": set(),
    "single_precision_compute": set(),  # float64 cases only
    "double_conversion": set(),
    "momentum_single_precision": RUNNING,  # 0.1 is not a float32
    "gradient_layout_ignored": {"gn", "gn_g1", "gn_gc", "ln2", "in", "bn_train", "bn_eval"},  # 3 dims or more
    "one_pass_variance": set(),  # correct outputs show no one-pass error
    "per_rank_statistics": RUNNING,  # batch norm whose batch splits over 2 ranks or more
    # the variants' and fused ops' own (tests/frameworks/test_llm_variants.py): no plain case
    "gemma_offset_missing": set(),
    "cumulative_momentum_ignored": set(),
    "gemma_offset_doubled": set(),
    "residual_not_updated": set(),
    "residual_sum_unrounded": set(),
    # layer norm over given axes and adaLN (tests/frameworks/test_axes_and_adaln.py): no plain case
    "axes_other": set(),
    "adaln_offset_missing": set(),
    "adaln_shift_scale_swapped": set(),
    "adaln_per_token": set(),
    "adaln_affine_left_in": set(),
    # the stress profile's sizes only (tests/diagnosis/test_kernel_limits.py): more than 2^16 rows,
    # rows of 1024 values or more, weight gradients summed over more than 1024 half values
    "row_index_wraps": set(),
    "partial_row_reduction": set(),
    "half_param_accumulation": set(),
}


def test_the_applicability_table_covers_every_hypothesis():
    assert set(APPLIES) == set(BY_ID)


def _predictions(hypothesis, p, got=None):
    expected = reference(p)
    with np.errstate(all="ignore"):
        return BY_ID[hypothesis].predict(Context(p, expected, expected if got is None else got))


@pytest.mark.parametrize("hypothesis", sorted(APPLIES))
def test_hypothesis_applies_only_where_it_claims(hypothesis):
    applies = {name for name, case in APPLICABILITY_CASES.items() if _predictions(hypothesis, _problem(case))}
    assert applies == APPLIES[hypothesis]


def test_eps_value_tries_every_other_known_default_but_the_cases_own():
    titles = [pr.title for pr in _predictions("eps_value", _problem(LN, eps=1e-5))]
    assert len(titles) == 4
    assert not any(t.startswith("eps is 1e-05 ") for t in titles)
    assert all(t.endswith(" instead of 1e-05") for t in titles)
    assert any(t.startswith("eps is 0.001 (the default of keras.layers.BatchNormalization") for t in titles)
    assert any(t.startswith("eps is 1e-06 (the default of keras.layers.RMSNormalization") for t in titles)
    assert any(t.startswith("eps is 1.19209e-07 (the default of nn.RMSNorm") for t in titles)
    assert "eps is 1e-12 instead of 1e-05" in titles  # a common value no framework defaults to
    keras = _predictions("eps_value", _problem(LN, eps=1e-3))
    assert not any(pr.title.startswith("eps is 0.001 ") for pr in keras)
    assert any(pr.title.startswith("eps is 1e-05 ") for pr in keras)


def test_running_variance_hypotheses_follow_the_problems_convention():
    keras = _problem(BN_TRAIN, unbiased_running_var=False)
    assert _predictions("running_var_unbiased", keras)
    assert not _predictions("running_var_biased", keras)


def test_momentum_one_half_cannot_be_inverted():
    p = replace(_problem(BN_TRAIN), momentum=0.5)
    assert _predictions("momentum_inverted", p) == []


def test_half_accumulation_applies_to_half_dtypes_only():
    for dtype, applies in (("float16", True), ("bfloat16", True), ("float32", False), ("float64", False)):
        assert bool(_predictions("half_accumulation", _problem(LN, dtype=dtype))) is applies, dtype


def test_predictions_of_gradient_cuts_leave_the_forward_to_the_reference():
    for hypothesis in ("grad_cut_mean", "grad_cut_variance", "grad_cut_stats"):
        (pred,) = _predictions(hypothesis, _problem(GN))
        assert "forward" not in pred.values
        assert {"grad_input", "grad_weight", "grad_bias"} <= set(pred.values)


# -- each mistake, made by hand, is reproduced and named -----------------------------------------

# (hypothesis, case, input kind, the mistake as _forward's keywords, a word of the title)
FORMULA_MISTAKES = [
    ("unbiased_variance", GN, "normal", {"correction": True}, ""),
    ("unbiased_variance", LN, "normal", {"correction": True}, ""),
    ("unbiased_variance", IN, "normal", {"correction": True}, ""),
    ("unbiased_variance", BN_TRAIN, "normal", {"correction": True}, ""),
    ("eps_outside_sqrt", GN, "tiny_scale", {"eps_outside": True}, ""),
    ("eps_outside_sqrt", LN, "tiny_scale", {"eps_outside": True}, ""),
    ("eps_value", GN, "tiny_scale", {"eps": 1e-3}, "0.001"),
    ("eps_value", LN, "tiny_scale", {"eps": 1e-6}, "1e-06"),
    ("groups_interleaved", GN, "normal", {"interleaved": True}, ""),
    ("axes_batch_included", GN, "normal", {"axes": (0, 2, 3, 4)}, ""),
    ("axes_batch_included", LN, "normal", {"axes": (0, 1)}, ""),
    ("axes_channels_included", IN, "normal", {"axes": (1, 2, 3)}, ""),
    ("axes_channels_included", GN, "normal", {"axes": (1, 2, 3, 4)}, ""),
    ("axes_last_only", LN2, "normal", {"axes": (2,)}, ""),
    ("axes_last_only", IN, "normal", {"axes": (3,)}, ""),
    ("affine_order", GN, "normal", {"affine": "order"}, ""),
    ("affine_order", LN, "normal", {"affine": "order"}, ""),
    ("weight_bias_swapped", LN, "normal", {"affine": "swapped"}, ""),
    ("weight_bias_swapped", BN_TRAIN, "normal", {"affine": "swapped"}, ""),
    ("grad_cut_mean", GN, "normal", {"detach": ("mean",)}, ""),
    ("grad_cut_variance", LN, "normal", {"detach": ("var",)}, ""),
    ("grad_cut_variance", RMS, "normal", {"detach": ("var",)}, ""),
    ("grad_cut_stats", IN, "normal", {"detach": ("mean", "var")}, ""),
    ("mean_subtracted", RMS, "normal", {"center": True}, ""),
    ("mean_not_subtracted", LN, "normal", {"center": False}, ""),
    ("rms_from_variance", RMS, "normal", {"uncentered_numerator": True}, "Var[x]"),
    ("rms_from_variance", RMS, "large_mean", {"uncentered_numerator": True}, "rms_scaling"),
]


def _case_id(entry):
    hypothesis, (op, shape, _), kind, _, _ = entry
    return f"{hypothesis}-{op}{'x'.join(map(str, shape))}-{kind}"


@pytest.mark.parametrize("entry", FORMULA_MISTAKES, ids=[_case_id(e) for e in FORMULA_MISTAKES])
def test_a_hand_made_mistake_is_predicted_and_named(entry):
    hypothesis, case, kind, mistake, title_has = entry
    p = _problem(case, kind)
    got = _mistaken(p, **mistake)
    _assert_predicted(hypothesis, p, got, title_has)
    rows, found = _diagnosed(p, got)
    _assert_named(rows, found, hypothesis)
    if title_has:
        assert all(title_has in d.cause for d in found.values())


def test_every_hypothesis_is_reproduced_by_some_hand_made_mistake():
    covered = {e[0] for e in FORMULA_MISTAKES} | {
        "eps_missing",  # the tests below
        "momentum_inverted",
        "running_var_biased",
        "running_var_unbiased",
        "eval_batch_stats",
        "half_accumulation",
        "one_pass_variance",
        *PRECISION_MISTAKES,  # tests/diagnosis/test_precision.py
        "per_rank_statistics",  # tests/frameworks/test_torch_distributed.py, in real rank processes
        # the op variants' and fused ops': tests/frameworks/test_llm_variants.py, on PyTorch fixtures
        "gemma_offset_missing",
        "gemma_offset_doubled",
        "cumulative_momentum_ignored",
        "residual_not_updated",
        "residual_sum_unrounded",
        # layer norm over given axes and adaLN: tests/frameworks/test_axes_and_adaln.py, on PyTorch fixtures
        "axes_other",
        "adaln_offset_missing",
        "adaln_shift_scale_swapped",
        "adaln_per_token",
        "adaln_affine_left_in",
        # kernel limits past the default grid: tests/diagnosis/test_kernel_limits.py
        "row_index_wraps",
        "partial_row_reduction",
        "half_param_accumulation",
    }
    assert covered == set(BY_ID)


def test_the_hand_made_implementation_without_a_mistake_is_the_reference():
    """The oracle of this file: with no mistake, the spelled-out formula and its complex-step
    gradients equal the reference, and so does the textbook closed form."""
    for case in (GN, LN, LN2, RMS, IN, BN_TRAIN):
        p = _problem(case)
        want = reference(p)
        got = _mistaken(p)
        assert set(got) == set(want)
        for check, value in got.items():
            np.testing.assert_allclose(value, want[check], rtol=1e-10, atol=1e-12, err_msg=f"{p.op} {check}")
    for case in (GN, LN):
        p = _problem(case)
        want = reference(p)
        book = _textbook(p, p.eps)
        for check, value in want.items():
            np.testing.assert_allclose(book[check], value, rtol=1e-10, atol=1e-12, err_msg=check)


def test_eps_missing_is_named_where_a_constant_group_divides_zero_by_zero():
    p = _problem(GN, "constant")
    book = _textbook(p, eps=0.0)
    got = {k: v for k, v in book.items() if k != "mean"}
    assert np.isnan(got["forward"][0, :2]).all() and np.isfinite(got["forward"][1]).all()
    assert np.isnan(got["grad_weight"][:2]).all() and np.isfinite(got["grad_weight"][2:]).all()
    _assert_predicted("eps_missing", p, got)
    rows, found = _diagnosed(p, got)
    assert set(_failing(rows)) == {"forward", "grad_input", "grad_weight"}  # grad_bias does not see eps
    _assert_named(rows, found, "eps_missing")


def test_momentum_inverted_is_named():
    p = _problem(BN_TRAIN)
    got = {**_mistaken(p), **_running(p, momentum=1 - p.momentum)}  # 0.1 * running + 0.9 * batch
    _assert_predicted("momentum_inverted", p, got)
    rows, found = _diagnosed(p, got)
    assert set(_failing(rows)) == {"running_mean", "running_var"}
    _assert_named(rows, found, "momentum_inverted")
    assert all("running = 0.1*running + 0.9*batch" in d.cause for d in found.values())


def test_running_variance_updated_with_the_biased_variance_is_named():
    p = _problem(BN_TRAIN)
    got = {**_mistaken(p), **_running(p, unbiased=False)}
    _assert_predicted("running_var_biased", p, got)
    rows, found = _diagnosed(p, got)
    assert _failing(rows) == ["running_var"]  # the mean does not depend on it
    _assert_named(rows, found, "running_var_biased")


def test_running_variance_updated_with_the_unbiased_variance_is_named_where_the_convention_is_biased():
    p = _problem(BN_TRAIN, unbiased_running_var=False)
    got = {**_mistaken(p), **_running(p, unbiased=True)}
    _assert_predicted("running_var_unbiased", p, got)
    rows, found = _diagnosed(p, got)
    assert _failing(rows) == ["running_var"]
    _assert_named(rows, found, "running_var_unbiased")


def test_evaluation_with_batch_statistics_is_named():
    p = _problem(BN_EVAL)
    as_train = replace(p, params=replace(p.params, mode="train"))
    got = {**_mistaken(as_train), **_running(p)}  # the running statistics stay as they are
    assert set(got) == set(reference(p))
    title = "evaluation normalizes with the batch statistics instead of the running ones"
    pred = _assert_predicted("eval_batch_stats", p, got, title=title)
    assert set(pred.values) == {"forward", "grad_input", "grad_weight", "grad_bias"}  # running: the reference's
    rows, found = _diagnosed(p, got)
    assert {"forward", "grad_input"} <= set(_failing(rows))
    _assert_named(rows, found, "eval_batch_stats")
    assert all(d.cause == title for d in found.values())


def test_half_accumulation_is_named_when_a_float16_sum_overflows():
    p = make_problem("ln", (4, 64), OpParams(normalized_ndim=1), "float16", "half_range", eps=1e-5)
    book = _textbook(p, p.eps, dtype=np.float16)
    assert np.isinf(book.pop("mean")).all()  # 64 values up to 6e4 sum past float16's 65504
    assert np.isnan(book["forward"]).all() and np.isfinite(book["grad_bias"]).all()
    _assert_predicted("half_accumulation", p, book, "(sums accumulated in float16", rtol=1e-3, atol=0)
    rows, found = _diagnosed(p, book)
    assert set(_failing(rows)) == {"forward", "grad_input", "grad_weight"}
    _assert_named(rows, found, "half_accumulation")
    assert all("sums accumulated in float16" in d.cause and d.fix for d in found.values())


def _one_pass_forward(p):
    """Layer norm over the last axis with var = E[x^2] - E[x]^2, summed left to right in float32."""
    x = p.x.astype(np.float32)
    n = x.shape[-1]
    s = np.zeros((x.shape[0], 1), np.float32)
    s2 = np.zeros((x.shape[0], 1), np.float32)
    for j in range(n):
        s += x[:, j : j + 1]
        s2 += x[:, j : j + 1] * x[:, j : j + 1]
    mean = s / np.float32(n)
    var = s2 / np.float32(n) - mean * mean
    y = (x - mean) / np.sqrt(var + np.float32(p.eps)) * p.weight.astype(np.float32) + p.bias.astype(np.float32)
    return y.astype(np.float64), var.astype(np.float64)


def test_one_pass_variance_is_named_from_the_variance_read_back_from_the_forward():
    p = _problem(("ln", (4, 64), OpParams(normalized_ndim=1)))
    p = replace(p, x=quantize(p.x + 100.0, "float32"))  # mean 100, std 1: E[x^2] is 1e4
    forward, var = _one_pass_forward(p)
    true_var = p.x.var(axis=1, keepdims=True)
    assert 1e-4 < np.abs(var - true_var).max() < 0.1  # wrong, yet positive
    got = {**reference(p), "forward": forward}  # the backward is correct
    rows, found = _diagnosed(p, got)
    assert _failing(rows) == ["forward"]
    _assert_named(rows, found, "one_pass_variance")
    (d,) = found.values()
    assert d.cause == "one-pass variance E[x^2] - E[x]^2 in float32"
    assert "the variance it used errs by up to" in d.evidence
    pred = _predictions("one_pass_variance", p, _out(p, got).values)[0]
    assert pred.only == ("forward",)
    np.testing.assert_allclose(pred.values["forward"], forward, rtol=0, atol=1e-3)


# -- the negative side: correct outputs, and errors no hypothesis explains -----------------------


@pytest.mark.parametrize(
    "case", [GN, LN, LN2, RMS, IN, BN_TRAIN, BN_EVAL], ids=["gn", "ln", "ln2", "rms", "in", "bn-train", "bn-eval"]
)
def test_correct_float32_outputs_pass_and_get_no_diagnosis(case):
    p = _problem(case)
    expected, out, rows = _rows(p, reference(p))
    assert [r.status for r in rows] == [PASS] * len(expected)
    assert diagnose(p, expected, out, rows) == {}
    assert with_diagnosis(rows, p, expected, out) == rows
    assert all(r.diagnosis is None for r in rows)


def test_one_pass_variance_makes_no_claim_on_correct_outputs_of_ill_conditioned_data():
    p = _problem(("ln", (4, 64), OpParams(normalized_ndim=1)), "large_mean")
    expected = reference(p)
    assert _predictions("one_pass_variance", p, _out(p, expected).values) == []


def test_random_noise_is_unknown_and_never_given_a_name():
    p = _problem(GN)
    rng = np.random.default_rng(7)
    got = {k: v + 1e-2 * rng.standard_normal(v.shape) for k, v in reference(p).items()}
    rows, found = _diagnosed(p, got)
    assert set(_failing(rows)) == {"forward", "grad_input", "grad_weight", "grad_bias"}
    for d in found.values():
        assert d.hypothesis is None
        assert d.cause == "unknown"
        assert d.summary.startswith("cause unknown (")
        assert d.evidence == (
            f"none of the {len(HYPOTHESES) - len(DISTRIBUTED_ONLY)} known mistakes normcheck tests reproduces this "
            "output within tolerance"
        )


def test_noise_on_top_of_a_known_mistake_is_not_blamed_on_it():
    p = _problem(GN)
    got = _mistaken(p, correction=True)
    got["grad_bias"] = got["grad_bias"] + np.array([0.0, 0.5, 0.0, 0.0])
    rows, found = _diagnosed(p, got)
    assert "grad_bias" in _failing(rows)
    assert found["grad_bias"].hypothesis is None
    # the other failures are still explained, each on its own
    for check in set(_failing(rows)) - {"grad_bias"}:
        assert found[check].hypothesis == "unbiased_variance"
        assert found[check].scope == "check"
        assert found[check].evidence.endswith("it explains this check only, not the case's other failures")


def test_with_diagnosis_annotates_only_the_failing_rows():
    p = _problem(GN)
    expected, out, rows = _rows(p, _mistaken(p, correction=True))
    assert {r.check: r.status for r in rows}["grad_bias"] == PASS  # sum(dy) does not see the variance
    annotated = with_diagnosis(rows, p, expected, out)
    for before, after in zip(rows, annotated, strict=True):
        if before.status == FAIL:
            assert after.diagnosis is not None and after.diagnosis.hypothesis == "unbiased_variance"
        else:
            assert after == before and after.diagnosis is None


def test_a_distributed_only_mistake_is_tried_only_when_asked_for():
    """A single-process batch norm is never told its ranks use their own statistics; a
    distributed run (all hypotheses asked for) is."""
    from normcheck.verify.distributed import split_batch

    p = _problem(("bn", (8, 3, 4), OpParams(running_stats=True)))
    bounds = np.cumsum([0, *split_batch(8, 2)])
    cuts = [slice(int(bounds[r]), int(bounds[r + 1])) for r in range(2)]
    parts = [
        reference(replace(p, shape=(c.stop - c.start, 3, 4), x=p.x[c], dy=p.dy[c], steps=tuple(t[c] for t in p.steps)))
        for c in cuts
    ]
    got = {
        "forward": np.concatenate([r["forward"] for r in parts]),
        "grad_input": np.concatenate([r["grad_input"] for r in parts]),
        "grad_weight": parts[0]["grad_weight"] + parts[1]["grad_weight"],
        "grad_bias": parts[0]["grad_bias"] + parts[1]["grad_bias"],
        "running_mean": parts[0]["running_mean"],
        "running_var": parts[0]["running_var"],
    }
    expected, out, rows = _rows(p, got)
    assert all(d.hypothesis != "per_rank_statistics" for d in diagnose(p, expected, out, rows).values())
    every = [h.id for h in HYPOTHESES]
    found = diagnose(p, expected, out, rows, hypotheses=every)
    assert {d.hypothesis for d in found.values()} == {"per_rank_statistics"}
