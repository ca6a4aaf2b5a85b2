"""--against's comparison of two frameworks' outputs, on hand-built outputs."""

from __future__ import annotations

import numpy as np

from normcheck.frameworks.base import Framework, KnownIssue, RunOutput
from normcheck.frameworks.tensorflow.facts import TENSORFLOW
from normcheck.ops import OpParams
from normcheck.verify.crosscheck import Baseline, compare_frameworks, pair_tolerance
from normcheck.verify.records import FAIL, KNOWN, PASS, RUN, SKIP, Case
from normcheck.verify.tolerance import tolerance_for

PARAMS = OpParams(mode="train", running_stats=True)
SHAPE = (4, 2)


class Keras(Framework):
    name = "tensorflow"
    conventions = TENSORFLOW

    def __init__(self, issues=()):
        self.known_issues = issues

    def implementations(self, op):
        return []


class Problem:  # the two fields compare_frameworks reads
    op = "bn"
    unbiased_running_var = True


def outputs(scale=1.0, **extra):
    out = RunOutput()
    for check in ("forward", "running_mean", "running_var"):
        out.add(check, np.linspace(1, 2, 8).reshape(SHAPE) * (scale if check == "forward" else 1.0), "float32")
    for check, v in extra.items():
        out.add(check, v, "float32")
    return out


def rows(mine, baseline, dtype="float32"):
    case = Case("bn", "torch", "F.batch_norm", SHAPE, PARAMS, dtype, "normal")
    expected = {c: v for c, v in outputs().values.items()}
    errs = dict.fromkeys(expected, 0.0)
    return {r.check: r for r in compare_frameworks(case, Problem(), mine, baseline, expected, errs)}


def baseline(out, issues=(), missing=None):
    bcase = Case("bn", "tensorflow", "keras.layers.BatchNormalization", SHAPE, PARAMS, "float32", "normal")
    return Baseline(Keras(issues), bcase, out, missing or {})


def test_pair_tolerance_doubles_both_terms():
    tol = tolerance_for("float32", 1e-4)
    pair = pair_tolerance(tol)
    assert pair.rtol == 2 * tol.rtol and pair.atol == 2 * tol.atol


def test_equal_outputs_pass_and_name_the_baseline():
    got = rows(outputs(), baseline(outputs()))
    assert got["forward"].status == PASS
    assert got["forward"].against == "tensorflow:keras.layers.BatchNormalization"


def test_a_difference_fails_with_both_values_and_the_reference():
    got = rows(outputs(scale=1.01), baseline(outputs()))
    assert got["forward"].status == FAIL
    assert "against" in got["forward"].message and "(reference" in got["forward"].message
    assert got["running_mean"].status == PASS


def test_running_variance_of_another_convention_is_a_skip_with_the_rule():
    got = rows(outputs(), baseline(outputs()))
    assert got["running_var"].status == SKIP
    assert "unbiased" in got["running_var"].message and "n / (n - 1)" in got["running_var"].message


def test_a_difference_explained_by_the_baselines_known_defect_is_known():
    issue = KnownIssue("a documented defect", ops=("bn",), checks=("forward",))
    got = rows(outputs(scale=1.01), baseline(outputs(), issues=(issue,)))
    assert got["forward"].status == KNOWN and "known defect of the baseline" in got["forward"].message


def test_checks_the_baseline_lacks_are_skipped_with_its_reason():
    got = rows(outputs(), baseline(outputs(), missing={"forward": "inference only"}))
    assert got["forward"].status == SKIP and got["forward"].message == "inference only"


def test_a_baseline_that_could_not_run_is_one_skip_row():
    got = rows(outputs(), "tensorflow failed: boom")
    assert list(got) == [RUN] and got[RUN].status == SKIP and got[RUN].message == "tensorflow failed: boom"


def test_eval_outputs_are_not_compared_across_running_variance_conventions():
    case = Case("bn", "torch", "F.batch_norm", SHAPE, OpParams(mode="eval", running_stats=True), "float32", "normal")
    expected = outputs().values
    got = {
        r.check: r
        for r in compare_frameworks(
            case, Problem(), outputs(scale=1.01), baseline(outputs()), expected, dict.fromkeys(expected, 0.0)
        )
    }
    assert got["forward"].status == SKIP and "evaluation normalizes with the running variance" in got["forward"].message
    assert got["running_mean"].status == PASS


def test_run_baseline_reports_a_failing_baseline_as_a_reason():
    from normcheck.frameworks.base import Implementation
    from normcheck.verify.inputs import make_problem
    from normcheck.verify.plan import Options
    from normcheck.verify.run import run_baseline

    class Raising(Implementation):
        framework, op, name = "tensorflow", "bn", "boom"

        def run(self, problem, layout, device):
            raise ValueError("shapes do not line up")

    class Fw(Keras):
        def implementations(self, op):
            return [Raising()]

    problem = make_problem("bn", SHAPE, PARAMS, "float32", "normal", eps=1e-3)
    got = run_baseline(Fw(), problem, "cpu", Options(ops=("bn",), dtypes=("float32",)))
    assert got == "tensorflow:boom: ValueError: shapes do not line up"
    assert run_baseline(Keras(), problem, "cpu", Options(ops=("bn",), dtypes=("float32",))) == (
        "tensorflow has no implementation of bn"
    )
