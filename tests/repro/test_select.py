"""Which rows get a reproducer, and the files written for them: one per implementation, op,
check and cause, the row furthest beyond its tolerance; its inputs regenerated exactly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from normcheck.conventions import settings
from normcheck.engine.tasks import Plan, PlannedUnit
from normcheck.frameworks.base import FrameworkFacts, KnownIssue
from normcheck.frameworks.torch.facts import TORCH
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.repro.index import INDEX
from normcheck.repro.select import distinct_failures, excess, file_stem
from normcheck.repro.write import directory_problem, write_reproducers
from normcheck.verify.plan import Options
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, Case, CheckResult, Comparison, Diagnosis, Tolerance
from normcheck.verify.request import Request

ISSUE = KnownIssue("a documented defect", ops=("gn",), kinds=("large_mean",))
FACTS = FrameworkFacts("torch", TORCH, (KnownIssue("another", ops=("bn",)), ISSUE))
PARAMS = OpParams(groups=2)


def case(shape=(2, 4, 3, 3), kind="normal", impl="F.group_norm") -> Case:
    return Case("gn", "torch", impl, shape, PARAMS, "float32", kind)


def row(c: Case, check="forward", status=FAIL, err=1.0, atol=0.1, hypothesis=None, against=None) -> CheckResult:
    diagnosis = Diagnosis(hypothesis, "variance divides by N-1", "evidence") if hypothesis else None
    return CheckResult(
        c,
        check,
        status,
        Comparison(err, err, 3, 10, (0, 0, 0, 0)),
        Tolerance(1.3e-6, atol, 1e-5, atol / 8, "dtype"),
        "3/10 elements beyond tolerance",
        against,
        diagnosis,
    )


def plan(*cases: Case) -> Plan:
    units = []
    for i, c in enumerate(cases):
        s = settings(TORCH["gn"], c.dtype)
        units.append(PlannedUnit((0, i, 0), "torch", 0, 0, "gn", c.shape, PARAMS, "float32", c.kind, s, (c,)))
    return Plan(Request(), "id", Options(ops=("gn",), dtypes=("float32",), seed=3), [FACTS], units)


def test_one_failure_per_implementation_op_check_and_cause_represented_by_the_worst_row():
    a, b, c = case(), case((4, 4, 2, 2)), case(impl="nn.GroupNorm")
    rows = [
        row(a, err=1.0),
        row(b, err=3.0, atol=1.0),  # larger error, but less far beyond its tolerance
        row(a, check="grad_input"),
        row(c),
        row(b, hypothesis="unbiased_variance"),
        row(a, status=PASS),
        CheckResult(a, "run", ERROR, message="boom"),
    ]
    failures = distinct_failures([(plan(a, b, c), rows)])
    assert [(f.row.case.impl, f.row.check, f.slug, f.rows) for f in failures] == [
        ("F.group_norm", "forward", "cause_unknown", 2),
        ("F.group_norm", "grad_input", "cause_unknown", 1),
        ("nn.GroupNorm", "forward", "cause_unknown", 1),
        ("F.group_norm", "forward", "unbiased_variance", 1),
    ]
    assert failures[0].row is rows[0] and failures[0].cause == "cause unknown"
    assert failures[3].cause == "variance divides by N-1"


def test_a_known_row_is_named_by_its_documented_defect():
    c = case(kind="large_mean")
    [failure] = distinct_failures([(plan(c), [row(c, status=KNOWN)])])
    assert (failure.cause, failure.slug) == ("a documented defect", "known_defect_2")


def test_nan_outputs_are_furthest_beyond():
    assert excess(row(case(), err=float("nan"))) == float("inf") > excess(row(case(), err=1e9))


def test_file_names_are_readable_and_safe():
    c = Case(
        "gn", "tensorflow", "tf.nn.moments+batch_normalization (float32 compute)", (2, 4), PARAMS, "float16", "normal"
    )
    assert file_stem(c, "forward", "cause_unknown") == (
        "tensorflow_tf.nn.moments_batch_normalization_float32_compute_gn_forward_cause_unknown"
    )
    assert file_stem(case(impl="../../etc/passwd"), "forward", "x") == "torch_.._.._etc_passwd_gn_forward_x"


def test_the_files_hold_the_regenerated_inputs_the_reference_and_the_tolerance(tmp_path):
    a = case()
    p = plan(a)
    records = write_reproducers([(p, [row(a)])], tmp_path / "out", "normcheck verify --op gn")
    [record] = records
    assert record.script == "torch_F.group_norm_gn_forward_cause_unknown.py"
    data = np.load(tmp_path / "out" / record.script.replace(".py", ".npz"))
    problem = p.units[0].problem(seed=3)
    np.testing.assert_array_equal(data["x"], problem.x)
    np.testing.assert_array_equal(data["weight"], problem.weight)
    np.testing.assert_array_equal(data["expected"], reference(problem)["forward"])
    assert (float(data["rtol"]), float(data["atol"]), float(data["witness_err"])) == (1.3e-6, 0.1, 0.1 / 8)
    assert "steps" not in data and "running_mean" not in data
    index = (tmp_path / "out" / INDEX).read_text()
    assert "`normcheck verify --op gn`" in index and f"[{record.script}]({record.script})" in index


def test_a_row_compared_with_another_framework_gets_no_script_but_a_reason(tmp_path):
    a = case()
    [record] = write_reproducers([(plan(a), [row(a, against="jax:flax.linen.GroupNorm")])], tmp_path, "cmd")
    assert record.script is None and "compared directly with jax:flax.linen.GroupNorm" in record.reason
    index = (tmp_path / INDEX).read_text()
    assert "## Failures without a reproducer" in index and record.reason in index
    assert list(tmp_path.glob("*.py")) == []


def test_two_distinct_failures_never_share_a_file(tmp_path):
    # the same function name in two files, checked by two checks of a config
    user = FrameworkFacts("user", TORCH, form="torch_function")
    c = Case("gn", "user", "group_norm", (2, 4, 3, 3), PARAMS, "float32", "normal")
    runs = []
    for file in ("a.py", "b.py"):
        p = plan(c)
        runs.append((replace(p, request=Request(impl=f"{file}:group_norm"), frameworks=[user]), [row(c)]))
    records = write_reproducers(runs, tmp_path / "out", "cmd", project=tmp_path)
    assert [r.script for r in records] == [
        "user_group_norm_gn_forward_cause_unknown.py",
        "user_group_norm_gn_forward_cause_unknown_2.py",
    ]
    texts = [(tmp_path / "out" / r.script).read_text() for r in records]
    assert "IMPL = load_file('../a.py', 'group_norm')" in texts[0]
    assert "IMPL = load_file('../b.py', 'group_norm')" in texts[1]


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    assert directory_problem(file) == "exists and is not a folder"
    assert directory_problem(file / "sub" / "dir") == f"{file} is not a folder"
    assert directory_problem(tmp_path / "new" / "dir") is None
    assert directory_problem(tmp_path) is None
