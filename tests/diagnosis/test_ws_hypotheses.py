"""Weight Standardization's diagnosis (normcheck.diagnosis.weight_standardization), without any
framework: an implementation simulated in NumPy, correct or with one mistake, judged as verify
judges it. A correct one passes every default case; each mistake fails and is named."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from normcheck.diagnosis import diagnose
from normcheck.dtypes import quantize
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OPS
from normcheck.ops.weight_standardization import PAPER, REFERENCE, Standardization
from normcheck.problem import Problem
from normcheck.reference_ws import ws_reference
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.judge import Truth, judge
from normcheck.verify.plan import Options
from normcheck.verify.records import FAIL, Case, CheckResult

OPTS = Options(ops=("ws",), dtypes=("float32",))


def _rows(problem: Problem, values: dict[str, np.ndarray]) -> list[CheckResult]:
    truth = Truth.of(problem)
    out = RunOutput()
    for check, v in values.items():
        out.add(check, quantize(v, problem.dtype), problem.dtype)
    case = Case(problem.op, "user", "sim", problem.shape, problem.params, problem.dtype, problem.kind)
    rows = judge(case, problem, out, truth.expected, truth.witness_errs, OPTS, {})
    found = diagnose(problem, truth.expected, out, rows)
    return [replace(r, diagnosis=found.get(r.check)) if r.status == FAIL else r for r in rows]


def _simulated(problem: Problem, how: Standardization, by_tap: bool = True) -> dict[str, np.ndarray]:
    """An implementation of ``how`` in the case's compute precision, summing in the other order
    than the witness's first, its intermediates stored in the input dtype."""
    compute = np.float64 if problem.dtype == "float64" else np.float32
    return ws_reference(problem, compute, how=how, store=problem.dtype, by_tap=by_tap)


def _problem(op: str, dtype: str, kind: str, case: int = 0, eps: float = 1e-4, variant: str | None = None) -> Problem:
    shape, params = OPS[op].default_cases()[case]
    return make_problem(op, shape, replace(params, variant=variant), dtype, kind, eps=eps)


@pytest.mark.parametrize("op", ["ws", "ws_gn"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_a_correct_implementation_passes_every_default_case(op, dtype):
    for shape, params in OPS[op].default_cases():
        for kind in KINDS:
            p = make_problem(op, shape, params, dtype, kind, eps=1e-4)
            rows = _rows(p, _simulated(p, REFERENCE))
            assert all(r.status == "pass" for r in rows if r.status != "skip"), (shape, params, kind, rows)


MISTAKES = [
    ("ws_unbiased_variance", Standardization(unbiased=True), "normal"),
    ("ws_eps_place", Standardization(eps_outside=True), "tiny_scale"),
    ("ws_eps_missing", Standardization(eps=0.0), "tiny_scale"),
    ("ws_eps_value", Standardization(eps=1e-10), "tiny_scale"),
    ("ws_axes", Standardization(axes=(0, 2, 3)), "normal"),
    ("ws_axes", Standardization(axes=(0, 1, 2, 3)), "normal"),
    ("ws_not_standardized", Standardization(off=True), "normal"),
    ("ws_mean_not_subtracted", Standardization(center=False), "normal"),
    ("ws_grad_cut_stats", Standardization(cut="both"), "normal"),
    ("ws_grad_cut_variance", Standardization(cut="variance"), "normal"),
    ("ws_paper_convention", Standardization(unbiased=True, eps_outside=True), "normal"),
]


# the Bessel factor is invisible after group norm (test_a_uniform_rescaling_is_invisible_after_group_norm)
CASES = [(op, *m) for op in ("ws", "ws_gn") for m in MISTAKES if (op, m[0]) != ("ws_gn", "ws_unbiased_variance")]


@pytest.mark.parametrize(
    ("op", "hypothesis", "how", "kind"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_mistake_fails_and_is_named(op, hypothesis, how, kind):
    p = _problem(op, "float32", kind)
    rows = _rows(p, _simulated(p, how))
    failing = [r for r in rows if r.status == FAIL]
    assert failing, "the mistake must show"
    named = {r.diagnosis.hypothesis for r in failing if r.diagnosis is not None}
    assert named == {hypothesis}, [r.diagnosis for r in failing]
    if how.cut is not None:
        assert {r.check for r in failing} == {"grad_weight"}  # the forward is right


def test_the_paper_variant_holds_code_to_the_papers_convention_and_names_the_reference_one():
    p = _problem("ws", "float32", "normal", variant=PAPER)
    assert all(r.status == "pass" for r in _rows(p, _simulated(p, Standardization(unbiased=True, eps_outside=True))))
    rows = _rows(p, _simulated(p, REFERENCE))
    named = {r.diagnosis.hypothesis for r in rows if r.status == FAIL}
    assert named == {"ws_reference_convention"}


def test_the_papers_hard_coded_eps_is_named_as_the_papers_convention():
    p = _problem("ws", "float32", "tiny_scale", eps=1e-6)
    paper_code = replace(p, eps=1e-5)  # the paper's Conv2d adds 1e-5 whatever it is given
    rows = _rows(p, _simulated(paper_code, Standardization(unbiased=True, eps_outside=True)))
    failing = [r for r in rows if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing} == {"ws_paper_convention"}
    assert "1e-05" in failing[0].diagnosis.cause


def test_statistics_rounded_to_half_are_named_as_a_numeric_cause():
    p = _problem("ws", "float16", "large_mean", case=1)
    rows = _rows(p, _simulated(p, Standardization(rounding="float16"), by_tap=False))
    failing = [r for r in rows if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis.hypothesis == "ws_stats_in_input_dtype" and r.diagnosis.family == "numeric"


def test_the_variance_overflowing_float16_is_named():
    p = _problem("ws", "float16", "half_range", case=1)
    rows = _rows(p, _simulated(p, Standardization(rounding="float16", elementwise=True), by_tap=False))
    failing = [r for r in rows if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis.hypothesis == "ws_half_arithmetic"
        assert "overflows float16" in r.diagnosis.cause


def test_an_unmodelled_mistake_is_unknown_not_misnamed():
    p = _problem("ws", "float32", "normal")
    values = _simulated(p, REFERENCE)
    values = {**values, "grad_weight": values["grad_weight"][::-1].copy()}  # output channels reversed
    failing = [r for r in _rows(p, values) if r.status == FAIL]
    assert [r.check for r in failing] == ["grad_weight"]
    assert failing[0].diagnosis.hypothesis is None


def test_a_uniform_rescaling_is_invisible_after_group_norm():
    """The Bessel factor scales every output channel's Ŵ alike; group norm then divides it out
    (but for its own eps): GN+WS with the unbiased variance is, to float32, the same function, so
    it passes there, and WS alone shows it."""
    p = _problem("ws_gn", "float32", "normal")
    assert all(r.status == "pass" for r in _rows(p, _simulated(p, Standardization(unbiased=True))))
    alone = _problem("ws", "float32", "normal")
    assert any(r.status == FAIL for r in _rows(alone, _simulated(alone, Standardization(unbiased=True))))
