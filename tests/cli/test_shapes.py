"""verify --shape at the edges: empty tensors are checked, and a shape that only some variants
can take runs those and reports the others as skip rows; one that none can take is refused."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from normcheck.cli import app
from normcheck.errors import UsageError
from normcheck.ops import OpParams
from normcheck.parsing import parse_shape
from normcheck.verify.plan import Options, invalid_cases


@pytest.fixture
def runner():
    return CliRunner()


def verify_json(runner, *args: str) -> tuple[int, list[dict]]:
    result = runner.invoke(app, ["verify", *args, "--dtype", "float64", "--format", "json"], catch_exceptions=False)
    rows = json.loads(result.stdout)["results"] if result.stdout.strip() else []
    return result.exit_code, rows


@pytest.mark.parametrize(("text", "shape"), [("0,8", (0, 8)), ("2,0,3", (2, 0, 3)), ("0", (0,)), ("2x0x4", (2, 0, 4))])
def test_zero_sized_dims_are_sizes(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["2,-1,3", "-4", "2,,3", "2,a"])
def test_negative_or_malformed_sizes_are_refused(text):
    with pytest.raises(UsageError, match=f"malformed shape '{text}'"):
        parse_shape(text)


def test_a_timing_refuses_empty_shapes():
    with pytest.raises(UsageError, match="every size must be a positive integer"):
        parse_shape("2,0,3", allow_empty=False)


@pytest.mark.parametrize(
    ("op", "shape"),
    [("ln", "0,8"), ("ln", "8,0"), ("rms", "0,8"), ("bn", "0,3"), ("bn", "2,3,0"), ("in", "2,3,0"), ("gn", "2,0,3")],
)
def test_an_empty_shape_is_checked_end_to_end(runner, numpy_framework, op, shape):
    code, rows = verify_json(runner, "--op", op, "--shape", shape)
    assert code == 0
    assert rows and {r["status"] for r in rows} == {"pass"}
    assert {r["shape"] for r in rows} == {shape.replace(",", "x")}


@pytest.mark.parametrize(
    ("op", "shape", "skipped", "needle"),
    [
        ("bn", "1,3", {"train"}, "batch norm in training needs more than one value per channel"),
        ("in", "2,3,1", {"-", "train"}, "instance norm with the input's statistics needs more than one spatial value"),
    ],
)
def test_a_partial_shape_runs_its_valid_variants_and_skips_the_others(
    runner, numpy_framework, op, shape, skipped, needle
):
    code, rows = verify_json(runner, "--op", op, "--shape", shape)
    assert code == 0
    by_variant = Counter((r["params"], r["status"]) for r in rows)
    assert by_variant[("eval", "pass")] > 0  # evaluation with running statistics is checked
    skips = [r for r in rows if r["status"] == "skip"]
    assert {r["params"] for r in skips} == skipped
    assert {r["check"] for r in skips} == {"run"}  # one row per planned case
    assert all(needle in r["message"] and r["message"].endswith("torch raises") for r in skips)
    assert len(skips) == 5 * len(skipped)  # every input kind of every skipped variant


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "in", "--shape", "2,3"], "instance norm needs a 3..5-D input"),
        (["--op", "bn", "--shape", "2,3,4,4,4,4"], "batch norm needs a 2..5-D input"),
        (["--op", "gn", "--shape", "2,6,4", "--groups", "4"], "C=6 is not divisible by G=4"),
        (["--op", "gn", "--shape", "2,6,4", "--groups", "2,4"], "C=6 is not divisible by G=4"),
    ],
)
def test_a_shape_no_variant_can_take_is_one_line_and_exit_2(runner, numpy_framework, args, needle):
    result = runner.invoke(app, ["verify", *args], catch_exceptions=False)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _opts(op: str, *shapes: tuple[int, ...]) -> Options:
    return Options(ops=(op,), dtypes=("float64",), shapes=shapes)


def test_invalid_cases_names_only_shapes_without_a_valid_variant():
    assert invalid_cases(_opts("bn", (1, 3), (1, 3, 1))) == []
    assert invalid_cases(_opts("in", (2, 3, 1))) == []
    assert invalid_cases(_opts("in", (2, 3, 1), (2, 3))) == ["instance norm needs a 3..5-D input, got shape 2x3"]


def test_a_shape_one_op_of_several_can_take_runs_that_op_and_skips_the_others(runner, numpy_framework):
    """--op in,ln --shape 2,9: layer norm is checked, instance norm (3..5-D) is skip rows."""
    assert invalid_cases(Options(ops=("in", "ln"), dtypes=("float64",), shapes=((2, 9),))) == []
    code, rows = verify_json(runner, "--op", "in,ln", "--shape", "2,9")
    assert code == 0
    assert {r["status"] for r in rows if r["op"] == "ln"} == {"pass"}
    skips = [r for r in rows if r["op"] == "in"]
    assert skips and all(r["status"] == "skip" and "3..5-D" in r["message"] for r in skips)


def test_a_partial_shape_plans_skip_units_for_its_invalid_variants(numpy_framework):
    from normcheck import frameworks
    from normcheck.verify.plan import plan

    units = plan(_opts("bn", (1, 3)), [frameworks.load("numpy")])
    skips = {u.params: u.skip for u in units}
    assert skips[OpParams(mode="eval", running_stats=True)] is None
    assert "more than one value per channel" in str(skips[OpParams(mode="train", running_stats=True)])


def test_checking_in_this_process_reports_the_skip_units_too(numpy_framework):
    from normcheck import frameworks
    from normcheck.verify.local import run
    from normcheck.verify.plan import plan

    opts = _opts("in", (2, 3, 1))
    units = plan(opts, [frameworks.load("numpy")])
    done: list[int] = []
    rows = list(run(units, opts, progress=done.append))
    assert sum(done) == sum(len(u.runs) for u in units)
    skips = [r for r in rows if r.status == "skip"]
    assert {r.case.params for r in skips} == {OpParams(), OpParams(mode="train", running_stats=True)}
    assert {r.status for r in rows if r.case.params.mode == "eval"} == {"pass"}
