"""Precision causes: the right formula computed with the wrong precision is named as such, each
hypothesis reproduced by a mistake made by hand in NumPy, and never a formula mistake on a
half-precision row that the full-precision rows do not confirm."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from normcheck.diagnosis import diagnose
from normcheck.diagnosis.consistency import reconcile
from normcheck.diagnosis.hypotheses import FORMULA, NUMERIC, Context
from normcheck.diagnosis.precision import Policy, simulate
from normcheck.dtypes import quantize
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import judge
from normcheck.verify.plan import Options
from normcheck.verify.records import FAIL, PASS, Case, CheckResult, Diagnosis
from normcheck.verify.tolerance import witness_errors

LN = ("ln", (8, 64), OpParams(normalized_ndim=1))
GN = ("gn", (2, 8, 4, 4), OpParams(groups=2))


def _problem(case, dtype="float16", kind="large_mean", **extra):
    op, shape, params = case
    return make_problem(op, shape, params, dtype, kind, eps=1e-5, momentum=0.1, **extra)


def _rows(p, got, impl="hand"):
    expected = reference(p)
    case = Case(p.op, "hand", impl, p.shape, p.params, p.dtype, p.kind)
    out = RunOutput()
    for check, value in got.items():
        out.add(check, quantize(value, p.dtype), p.dtype)
    opts = Options(ops=(p.op,), dtypes=(p.dtype,))
    return expected, out, judge(case, p, out, expected, witness_errors(p, expected), opts, {})


def _diagnosed(p, got):
    expected, out, rows = _rows(p, got)
    return rows, diagnose(p, expected, out, rows)


def _half_layer_norm(p, stats_only=False):
    """Layer norm by hand: float32 statistics rounded to the input dtype (stats_only), or every
    step rounded to the input dtype with float32 sums (NumPy's float16 arithmetic)."""
    h = np.float16
    x = p.x.astype(h)
    w, b = p.weight.astype(h), p.bias.astype(h)
    if stats_only:
        xf = x.astype(np.float32)
        mean = xf.mean(axis=-1, keepdims=True)
        var = ((xf - mean) ** 2).mean(axis=-1, keepdims=True)
        mean, var = mean.astype(h).astype(np.float32), var.astype(h).astype(np.float32)
        y = (xf - mean) / np.sqrt(var + np.float32(p.eps)) * w.astype(np.float32) + b.astype(np.float32)
        return {"forward": y.astype(h).astype(np.float64)}
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    y = d / np.sqrt(var + h(p.eps)) * w + b
    return {"forward": y.astype(np.float64)}


def test_statistics_rounded_to_the_input_dtype_are_named_with_their_fix():
    p = _problem(LN)
    got = {**reference(p), **_half_layer_norm(p, stats_only=True)}
    rows, found = _diagnosed(p, got)
    assert "forward" in [r.check for r in rows if r.status == FAIL]
    d = found["forward"]
    assert d.hypothesis == "stats_in_input_dtype" or "stats_in_input_dtype" in d.also, d.summary
    assert d.family == NUMERIC
    assert d.fix or d.ambiguous


def test_half_elementwise_arithmetic_is_a_precision_cause():
    p = _problem(LN)
    got = {**reference(p), **_half_layer_norm(p)}
    _, found = _diagnosed(p, got)
    d = found["forward"]
    assert d.hypothesis is not None and d.family == NUMERIC, d.summary


def test_each_precision_policy_reproduces_itself():
    """A simulated policy, given as an implementation's output, is named (or tied) as itself."""
    policies = {
        "stats_in_input_dtype": Policy(stats=frozenset({"mean", "var"})),
        "saved_stats_in_input_dtype": Policy(stats=frozenset({"mean", "rstd"}), saved_only=True),
        "half_accumulation": Policy(elementwise=True),
        "cast_before_weight": Policy(cast_before_weight=True),
        "double_conversion": Policy(split_gradient=True),
    }
    for hypothesis, policy in policies.items():
        p = _problem(GN, kind="normal" if hypothesis == "double_conversion" else "large_mean")
        got = {**reference(p), **simulate(p, policy)}
        _, found = _diagnosed(p, got)
        if not found:  # within tolerance: the policy is harmless on this case
            continue
        for d in found.values():
            assert hypothesis in (d.hypothesis, *d.also), (hypothesis, d.summary)


def test_float64_computed_in_float32_is_named():
    p = _problem(LN, dtype="float64", kind="normal")
    got = {**reference(p), **simulate(p, Policy(compute=np.float32))}
    _, found = _diagnosed(p, got)
    assert found and all("single_precision_compute" in (d.hypothesis, *d.also) for d in found.values()), found


def test_momentum_rounded_to_float32_is_named():
    case = ("bn", (16, 3), OpParams(running_stats=True))
    p = _problem(case, dtype="float64", kind="large_mean")
    got = reference(replace(p, momentum=1.0 - float(np.float32(0.9))))  # ONNX's momentum 0.9 in float32
    _, found = _diagnosed(p, got)
    assert found and {d.hypothesis for d in found.values()} == {"momentum_single_precision"}, found


def test_a_channels_last_gradient_read_as_contiguous_is_named():
    p = _problem(("in", (1, 4, 5, 5), OpParams()), dtype="float64", kind="normal")
    misread = replace(p, dy=np.ascontiguousarray(np.moveaxis(p.dy, 1, -1)).reshape(p.shape))
    got = {**reference(p), **{k: v for k, v in reference(misread).items() if k != "forward"}}
    _, found = _diagnosed(p, got)
    assert found and {d.hypothesis for d in found.values()} == {"gradient_layout_ignored"}


def test_a_hypothesis_must_cut_the_error_tenfold():
    """Noise on top of a precision mistake: the mistake brings the error down, but not tenfold,
    so it is not named."""
    p = _problem(LN)
    got = {**reference(p), **_half_layer_norm(p, stats_only=True)}
    rng = np.random.default_rng(0)
    before = np.abs(got["forward"] - reference(p)["forward"]).max()
    got["forward"] = got["forward"] + rng.uniform(-0.5, 0.5, got["forward"].shape) * before
    _, found = _diagnosed(p, got)
    assert all(d.hypothesis is None for d in found.values()), [d.summary for d in found.values()]


# -- consistency across dtypes -------------------------------------------------------------------


def _row(dtype, diagnosis, status=FAIL, impl="mine"):
    case = Case("gn", "torch", impl, (2, 8, 4), OpParams(groups=2), dtype, "normal")
    return CheckResult(case, "forward", status, diagnosis=diagnosis)


FORMULA_D = Diagnosis("unbiased_variance", "variance divides by N-1", "e", family=FORMULA)
NUMERIC_D = Diagnosis("stats_in_input_dtype", "statistics rounded", "e2", family=NUMERIC)


def test_a_formula_cause_on_a_half_row_needs_the_full_precision_rows():
    half = _row("float16", replace(FORMULA_D, fallback=NUMERIC_D))
    passing = _row("float32", None, status=PASS)
    out = reconcile([half, passing])[0]
    assert out.diagnosis.hypothesis == "stats_in_input_dtype"
    assert "formula mistake shows in full precision" in out.diagnosis.evidence
    assert out.diagnosis.fallback is None


def test_a_formula_cause_confirmed_in_float32_stays():
    half = _row("float16", replace(FORMULA_D, fallback=NUMERIC_D))
    full = _row("float32", FORMULA_D)
    out = reconcile([half, full])
    assert [r.diagnosis.hypothesis for r in out] == ["unbiased_variance", "unbiased_variance"]


def test_without_a_numeric_explanation_the_half_row_is_unknown():
    (out,) = reconcile([_row("float16", FORMULA_D)])
    assert out.diagnosis.hypothesis is None
    assert "add --dtype float32" in out.diagnosis.evidence


def test_with_no_full_precision_row_the_numeric_cause_is_ambiguous_with_the_formula_one():
    """Nothing ran that could refute the formula mistake: naming the precision cause alone
    would claim more than the rows show."""
    (out,) = reconcile([_row("float16", replace(FORMULA_D, fallback=NUMERIC_D))])
    d = out.diagnosis
    assert d.ambiguous and d.hypothesis == NUMERIC_D.hypothesis and FORMULA_D.hypothesis in d.also
    assert d.cause == f"ambiguous: {NUMERIC_D.cause} or {FORMULA_D.cause}"
    assert not d.fix and "add --dtype float32" in d.evidence


def test_other_implementations_do_not_confirm():
    half = _row("float16", FORMULA_D)
    other = _row("float32", FORMULA_D, impl="theirs")
    assert reconcile([half, other])[0].diagnosis.hypothesis is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_correct_formulas_in_half_precision_are_never_given_a_formula_cause(dtype):
    """The textbook layer norm in the input dtype, on every input kind: its failing rows name a
    precision cause, or none."""
    for kind in ("normal", "large_mean", "tiny_scale", "half_range", "constant"):
        p = _problem(LN, dtype=dtype, kind=kind)
        policy = Policy(elementwise=True)
        got = {**reference(p), **simulate(p, policy, order=1)}
        rows, found = _diagnosed(p, got)
        results = reconcile([replace(r, diagnosis=found.get(r.check)) for r in rows])
        for r in results:
            if r.diagnosis is not None:
                assert r.diagnosis.family != FORMULA, (kind, r.diagnosis.summary)


def test_context_predictions_for_float32_cases_are_empty():
    p = _problem(LN, dtype="float32", kind="normal")
    ctx = Context(p, reference(p), reference(p))
    from normcheck.diagnosis.hypotheses import HYPOTHESES

    by_id = {h.id: h for h in HYPOTHESES}
    for name in ("stats_in_input_dtype", "saved_stats_in_input_dtype", "cast_before_weight", "half_accumulation"):
        assert by_id[name].predict(ctx) == []
